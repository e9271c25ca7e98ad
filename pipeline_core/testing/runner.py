"""Running the checks: all at once for a report, or one pytest item per (plugin, check).

:func:`check_plugin` never stops at the first failure (an author wants the whole list);
:func:`parametrize_with_checks` mirrors scikit-learn's (>= 1.6): a plugin author's test
suite gets one named test per rule, ids ``<plugin>-<check>``, and pytest is imported only
there, so the kit itself does not depend on it.

Both take the plugin as a registered name, a class, a ``(name, class)`` pair, a
configured instance (``NGramModel(5, {"smoothing": "witten_bell"})``), a
``(class, params)`` pair or a :class:`~pipeline_core.testing.checks.KitCase` (which also
carries trainer overrides such as ``{"bptt": "stateful"}``), and an
``expected_failed_checks`` mapping ``{check name: reason}`` (or a callable taking the
:class:`KitCase` and returning one): those checks are expected to fail. In pytest they
become ``xfail(strict=True)``; in :func:`check_plugin` their results are ``xfail``, and
one that passes is ``xpass``, which counts as a failure (the declaration is stale).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pipeline_core.errors import PluginError
from pipeline_core.testing.checks import (
    Check,
    CheckFailure,
    CheckSkipped,
    KitCase,
    PluginSpec,
    all_checks,
    as_case,
    one_thread,
)

if TYPE_CHECKING:
    import pytest

Status = Literal["passed", "failed", "skipped", "xfail", "xpass"]
#: ``{check name: reason}``, or a callable giving it for a :class:`KitCase`.
ExpectedFailedChecks = Mapping[str, str] | Callable[[KitCase], Mapping[str, str] | None]


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check on one plugin.

    ``status``: ``passed``, ``failed``, ``skipped`` (the rule does not apply), ``xfail``
    (failed, as declared in ``expected_failed_checks``; ``reason`` says why) or ``xpass``
    (declared to fail but passed: a failure, the declaration is stale)."""

    plugin: str
    check: str
    rule: str
    status: Status
    message: str
    seconds: float
    reason: str = ""

    @property
    def passed(self) -> bool:
        """Skipped and expected failures count as passed; ``failed`` and ``xpass`` do not."""
        return self.status not in ("failed", "xpass")


def expected_failures(
    expected_failed_checks: ExpectedFailedChecks | None, case: KitCase
) -> dict[str, str]:
    """The ``{check: reason}`` declared for ``case``; an unknown check name or a reason
    that is not a string is the test author's error (ValueError, naming it)."""
    if expected_failed_checks is None:
        return {}
    declared = (
        expected_failed_checks(case) if callable(expected_failed_checks) else expected_failed_checks
    )
    if declared is None:
        return {}
    if not isinstance(declared, Mapping):
        raise ValueError(
            f"expected_failed_checks for {case.label}: expected a dict of check name to "
            f"reason, got {type(declared).__name__}"
        )
    known = {check.name for check in all_checks()}
    unknown = sorted(set(declared) - known)
    if unknown:
        raise ValueError(
            f"expected_failed_checks for {case.label} names unknown check(s): "
            f"{', '.join(map(str, unknown))}; known: {', '.join(sorted(known))}"
        )
    for name, reason in declared.items():
        if not isinstance(reason, str) or not reason.strip():
            raise ValueError(
                f"expected_failed_checks for {case.label}: the reason for {name} must be "
                "a non-empty string"
            )
    return dict(declared)


def run_check(
    check: Check,
    plugin: PluginSpec,
    name: str | None = None,
    *,
    expected_failure: str | None = None,
) -> CheckResult:
    """Run one check, turning any outcome into a result (never raises for the plugin's
    bugs); with ``expected_failure`` (the reason), a failure is ``xfail`` and a pass
    ``xpass``."""
    case = as_case(plugin)
    label = name or case.label
    reason = expected_failure or ""
    started = time.perf_counter()
    status: Status = "passed"
    message = ""
    why_not = check.not_applicable(case)
    if why_not is not None:
        return CheckResult(label, check.name, check.rule, "skipped", why_not, 0.0, reason)
    try:
        with one_thread():
            check(case, label)
    except CheckSkipped as err:
        status, message = "skipped", str(err)
    except CheckFailure as err:
        status, message = "failed", str(err)
    except Exception as err:  # a bug outside the wrapped body; still one failed row
        status, message = "failed", f"{label}: {check.rule}; observed: {type(err).__name__}: {err}"
    if expected_failure is not None:
        if status == "failed":
            status = "xfail"
        elif status == "passed":
            status = "xpass"
            message = (
                f"{label}: check {check.name} was expected to fail ({expected_failure}) but "
                "passed; remove it from expected_failed_checks"
            )
    seconds = time.perf_counter() - started
    return CheckResult(label, check.name, check.rule, status, message, seconds, reason)


def check_plugin(
    plugin: str | PluginSpec,
    name: str | None = None,
    *,
    expected_failed_checks: ExpectedFailedChecks | None = None,
) -> list[CheckResult]:
    """Run every check on ``plugin`` and return one result each, failures included.

    ``plugin`` is a registered name (loaded through its entry point: PluginError if it
    cannot be), a class, a ``(name, class)`` pair, a configured instance, a
    ``(class, params)`` pair or a :class:`KitCase`; ``name`` overrides its label."""
    if isinstance(plugin, str):
        from pipeline_core.registry import load_plugin

        case = KitCase(load_plugin(plugin), name=plugin)
    else:
        case = as_case(plugin)
    label = name or case.label
    expected = expected_failures(expected_failed_checks, case)
    return [
        run_check(check, case, label, expected_failure=expected.get(check.name))
        for check in all_checks()
    ]


class BoundCheck:
    """One check bound to a plugin case; call it with the ``plugin`` pytest passes."""

    def __init__(
        self, check: Check, case: KitCase | None, name: str, load_error: str | None = None
    ) -> None:
        self.check = check
        self.case = case
        self.name = name
        self.load_error = load_error

    def __call__(self, plugin: Any = None) -> None:
        import pytest

        if self.load_error is not None or self.case is None:
            raise CheckFailure(self.name, "the plugin loads", self.load_error or "no class")
        # the test passes back the KitCase it was given (or, in older suites, its class)
        if plugin is None or plugin is self.case or plugin is self.case.plugin:
            case, name = self.case, self.name
        else:
            case = as_case(plugin)
            name = case.label
        try:
            with one_thread():
                self.check(case, name)
        except CheckSkipped as err:
            pytest.skip(str(err))

    def __repr__(self) -> str:
        return f"check_{self.check.name}"


def _resolve(plugin: str | PluginSpec) -> tuple[str, KitCase | None, str | None]:
    """(label, case or None, load error or None) for anything the kit accepts."""
    if isinstance(plugin, str):
        from pipeline_core.registry import load_plugin

        try:
            return plugin, KitCase(load_plugin(plugin), name=plugin), None
        except PluginError as err:
            return plugin, None, str(err)
    case = as_case(plugin)
    return case.label, case, None


def parametrize_with_checks(
    plugins: Iterable[str | PluginSpec],
    expected_failed_checks: ExpectedFailedChecks | None = None,
) -> pytest.MarkDecorator:
    """``@parametrize_with_checks(["my-model"])`` over ``def test_x(plugin, check)``.

    Each plugin is a registered name (loaded through the entry point, as seqlab will), a
    class, a ``(name, class)`` pair, a configured instance, a ``(class, params)`` pair or
    a :class:`KitCase`; the test receives the :class:`KitCase` as ``plugin`` and calls
    ``check(plugin)``. Ids are ``<label>-<check>``, e.g.
    ``ngram[smoothing=witten_bell]-causal``; two plugins with the same label are an error
    (give one a ``name``). A name that fails to load gives one failing ``<name>-loads``
    item instead of breaking collection for the others. Rules that do not apply (another
    task, a count-based or stateless plugin) are not generated. Checks named in
    ``expected_failed_checks`` are marked ``xfail(strict=True, reason=...)``.
    """
    import pytest

    params: list[Any] = []
    seen: set[str] = set()
    for plugin in plugins:
        label, case, error = _resolve(plugin)
        if label in seen:
            raise ValueError(
                f"parametrize_with_checks: two plugins are labelled '{label}'; "
                "give one a name (KitCase(..., name=...) or a (name, plugin) pair)"
            )
        seen.add(label)
        if error is not None or case is None:
            loads = Check("loads", "the plugin loads", lambda c, n: None)
            bound = BoundCheck(loads, None, label, error)
            params.append(pytest.param(None, bound, id=f"{label}-loads"))
            continue
        expected = expected_failures(expected_failed_checks, case)
        for check in all_checks():
            if not check.applies_to(case):  # e.g. a fill-blank rule for a next-token model
                continue
            marks: list[Any] = []
            if check.name in expected:
                marks.append(
                    pytest.mark.xfail(strict=True, reason=expected[check.name], raises=CheckFailure)
                )
            params.append(
                pytest.param(
                    case, BoundCheck(check, case, label), id=f"{label}-{check.name}", marks=marks
                )
            )
    return pytest.mark.parametrize(("plugin", "check"), params)
