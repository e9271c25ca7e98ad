"""The conformance kit for plugin authors (public, like scikit-learn's
``sklearn.utils.estimator_checks``)::

    from seqlab.testing import KitCase, check_plugin, parametrize_with_checks

    @parametrize_with_checks(
        [MyModel, MyModel(1, {"hidden_size": 8}), KitCase(MyModel, train={"bptt": "stateful"})],
        expected_failed_checks={"learns_periodic_sequence": "too small to learn"},
    )
    def test_conformance(plugin, check):
        check(plugin)
"""

from pipeline_core.testing import (
    Check,
    CheckFailure,
    CheckResult,
    CheckSkipped,
    ExpectedFailedChecks,
    KitCase,
    PluginSpec,
    all_checks,
    as_case,
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
