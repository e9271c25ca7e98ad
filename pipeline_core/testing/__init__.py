"""The plugin conformance kit, like scikit-learn's ``check_estimator``.

A plugin author runs it three ways::

    seqlab check-plugin my-model                  # a table of every rule, pass or fail

    from pipeline_core.testing import check_plugin
    results = check_plugin(MyModel, "my-model")   # one CheckResult per rule

    from pipeline_core.testing import parametrize_with_checks

    @parametrize_with_checks(["my-model"])        # one pytest item per rule
    def test_conformance(plugin, check):
        check(plugin)

Besides names and classes, both take configured instances
(``NGramModel(5, {"smoothing": "mle"})``), ``(class, params)`` pairs and
:class:`KitCase` objects (params plus trainer overrides, e.g. ``bptt: stateful``), and an
``expected_failed_checks={check: reason}`` dict (or a callable of the KitCase) for
declared deviations: ``xfail(strict=True)`` in pytest, ``xfail`` / ``xpass`` results in
``check_plugin``.
"""

from pipeline_core.testing.checks import (
    Check,
    CheckFailure,
    CheckSkipped,
    KitCase,
    PluginSpec,
    all_checks,
    as_case,
    clear_cache,
)
from pipeline_core.testing.runner import (
    CheckResult,
    ExpectedFailedChecks,
    check_plugin,
    parametrize_with_checks,
    run_check,
)

__all__ = [
    "Check",
    "CheckFailure",
    "CheckResult",
    "CheckSkipped",
    "ExpectedFailedChecks",
    "KitCase",
    "PluginSpec",
    "all_checks",
    "as_case",
    "check_plugin",
    "clear_cache",
    "parametrize_with_checks",
    "run_check",
]
