"""The conformance kit for plugin authors (public, like scikit-learn's
``sklearn.utils.estimator_checks``)::

    from seqlab.testing import check_plugin, parametrize_with_checks
"""

from pipeline_core.testing import (
    Check,
    CheckFailure,
    CheckResult,
    CheckSkipped,
    all_checks,
    check_plugin,
    clear_cache,
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
