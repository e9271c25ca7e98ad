"""Running the checks: all at once for a report, or one pytest item per (plugin, check).

:func:`check_plugin` never stops at the first failure (an author wants the whole list);
:func:`parametrize_with_checks` mirrors scikit-learn's: a plugin author's test suite
gets one named test per rule, ids ``<plugin>-<check>``, and pytest is imported only
there, so the kit itself does not depend on it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pipeline_core.errors import PluginError
from pipeline_core.testing.checks import (
    Check,
    CheckFailure,
    CheckSkipped,
    all_checks,
    one_thread,
)

if TYPE_CHECKING:
    import pytest

Status = Literal["passed", "failed", "skipped"]


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check on one plugin."""

    plugin: str
    check: str
    rule: str
    status: Status
    message: str
    seconds: float

    @property
    def passed(self) -> bool:
        """Skipped counts as passed: the rule does not apply."""
        return self.status != "failed"


def run_check(check: Check, plugin_cls: type[Any], name: str) -> CheckResult:
    """Run one check, turning any outcome into a result (never raises for the plugin's bugs)."""
    started = time.perf_counter()
    status: Status = "passed"
    message = ""
    if not check.applies_to(plugin_cls):
        message = f"the plugin does not declare the {check.task_kind} task"
        return CheckResult(name, check.name, check.rule, "skipped", message, 0.0)
    try:
        with one_thread():
            check(plugin_cls, name)
    except CheckSkipped as err:
        status, message = "skipped", str(err)
    except CheckFailure as err:
        status, message = "failed", str(err)
    except Exception as err:  # a bug outside the wrapped body; still one failed row
        status, message = "failed", f"{name}: {check.rule}; observed: {type(err).__name__}: {err}"
    return CheckResult(name, check.name, check.rule, status, message, time.perf_counter() - started)


def check_plugin(plugin_cls: type[Any], name: str | None = None) -> list[CheckResult]:
    """Run every check on ``plugin_cls`` and return one result each, failures included."""
    label = name or str(getattr(plugin_cls, "__name__", repr(plugin_cls)))
    return [run_check(check, plugin_cls, label) for check in all_checks()]


class BoundCheck:
    """One check bound to a plugin name; call it with the plugin class in a pytest test."""

    def __init__(self, check: Check, name: str, load_error: str | None = None) -> None:
        self.check = check
        self.name = name
        self.load_error = load_error

    def __call__(self, plugin_cls: type[Any] | None) -> None:
        import pytest

        if self.load_error is not None or plugin_cls is None:
            raise CheckFailure(self.name, "the plugin loads", self.load_error or "no class")
        try:
            with one_thread():
                self.check(plugin_cls, self.name)
        except CheckSkipped as err:
            pytest.skip(str(err))

    def __repr__(self) -> str:
        return f"check_{self.check.name}"


def _resolve(plugin: str | type | tuple[str, type]) -> tuple[str, type | None, str | None]:
    """(name, class or None, load error or None) for a name, a class or a (name, class)."""
    if isinstance(plugin, tuple):
        return plugin[0], plugin[1], None
    if isinstance(plugin, type):
        return plugin.__name__, plugin, None
    from pipeline_core.registry import load_plugin

    try:
        return plugin, load_plugin(plugin), None
    except PluginError as err:
        return plugin, None, str(err)


def parametrize_with_checks(
    plugins: Iterable[str | type | tuple[str, type]],
) -> pytest.MarkDecorator:
    """``@parametrize_with_checks(["my-model"])`` over ``def test_x(plugin, check)``.

    Each plugin is a registered name (loaded through the entry point, as seqlab will),
    a class, or a ``(name, class)`` pair. A name that fails to load gives one failing
    ``<name>-loads`` item instead of breaking collection for the others.
    """
    import pytest

    params: list[Any] = []
    for plugin in plugins:
        name, cls, error = _resolve(plugin)
        if error is not None or cls is None:
            loads = Check("loads", "the plugin loads", lambda c, n: None)
            params.append(pytest.param(None, BoundCheck(loads, name, error), id=f"{name}-loads"))
            continue
        for check in all_checks():
            if check.applies_to(cls):  # a fill-blank rule is no test of a next-token model
                params.append(pytest.param(cls, BoundCheck(check, name), id=f"{name}-{check.name}"))
    return pytest.mark.parametrize(("plugin", "check"), params)
