"""The plugin conformance kit, like scikit-learn's ``check_estimator``.

A plugin author runs it three ways::

    seqlab check-plugin my-model                  # a table of every rule, pass or fail

    from pipeline_core.testing import check_plugin
    results = check_plugin(MyModel, "my-model")   # one CheckResult per rule

    from pipeline_core.testing import parametrize_with_checks

    @parametrize_with_checks(["my-model"])        # one pytest item per rule
    def test_conformance(plugin, check):
        check(plugin)
"""

from pipeline_core.testing.checks import (
    Check,
    CheckFailure,
    CheckSkipped,
    all_checks,
    clear_cache,
)
from pipeline_core.testing.runner import (
    CheckResult,
    check_plugin,
    parametrize_with_checks,
    run_check,
)

__all__ = [
    "Check",
    "CheckFailure",
    "CheckResult",
    "CheckSkipped",
    "all_checks",
    "check_plugin",
    "clear_cache",
    "parametrize_with_checks",
    "run_check",
]
