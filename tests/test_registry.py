"""Entry-point discovery: built-ins found like third parties, broken plugins isolated.

Hand-made ``EntryPoint`` objects stand in for installed distributions, and a module
put in ``sys.modules`` stands in for a plugin package, so each failure mode (duplicate
name, import error, class that breaks the contract) is shown without installing
anything; the real installation path is covered by test_third_party.py.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import types
from collections.abc import Iterator
from importlib.metadata import EntryPoint
from typing import Any, ClassVar

import pytest

from pipeline_core import registry
from pipeline_core.contract import PluginConfig, SequenceModel
from pipeline_core.errors import PluginError

FAKE_MODULE = "seqlab_registry_test_plugins"


def ep(name: str, value: str) -> EntryPoint:
    return EntryPoint(name=name, value=value, group=registry.GROUP)


class _Fitless(SequenceModel):
    """Implements everything except fit: abstract, so not a usable plugin."""

    def log_proba(self, contexts: Any) -> Any:
        raise NotImplementedError

    @property
    def is_fitted(self) -> bool:
        return False

    def get_state(self) -> dict[str, Any]:
        return {}

    def set_state(self, state: Any) -> None:
        pass


class _Concrete(_Fitless):
    def fit(self, data: Any, settings: Any, on_epoch: Any = None) -> list[Any]:
        return []


class _BadKinds(_Concrete):
    task_kinds: ClassVar[Any] = frozenset({"next-token", "translate-poetry"})


class _KindsAsString(_Concrete):
    task_kinds: ClassVar[Any] = "next-token"


class _NotAConfig:
    pass


class _BadConfig(_Concrete):
    config_class: ClassVar[Any] = _NotAConfig


class _GoodConfig(PluginConfig):
    width: int = 3


class _Good(_Concrete):
    config_class: ClassVar[type[PluginConfig]] = _GoodConfig


@pytest.fixture
def fake_plugins(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A plugin module that exists only in sys.modules, with good and bad classes."""
    module = types.ModuleType(FAKE_MODULE)
    for cls in (_Fitless, _Concrete, _BadKinds, _KindsAsString, _BadConfig, _Good):
        setattr(module, cls.__name__.lstrip("_"), cls)
    module.not_a_class = 42  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, FAKE_MODULE, module)
    registry._load.cache_clear()
    yield FAKE_MODULE
    registry._load.cache_clear()


def by_name(infos: list[registry.PluginInfo]) -> dict[str, list[registry.PluginInfo]]:
    out: dict[str, list[registry.PluginInfo]] = {}
    for info in infos:
        out.setdefault(info.name, []).append(info)
    return out


# ---- the real installation ------------------------------------------------------------
def test_builtins_are_discovered_from_seqlab_distribution() -> None:
    found = {i.name: i for i in registry.discover() if i.distribution == "seqlab"}
    assert {"lstm", "ngram"} <= set(found)
    lstm = found["lstm"]
    assert lstm.value == "plugins.lstm:LSTMModel"
    assert lstm.version == "0.1.0"
    assert lstm.ok and lstm.as_dict()["status"] == "ok"


def test_load_plugin_returns_the_builtin_class() -> None:
    from plugins.lstm import LSTMModel

    assert registry.load_plugin("lstm") is LSTMModel


def test_unknown_plugin_error_lists_known_ones() -> None:
    with pytest.raises(PluginError) as info:
        registry.load_plugin("no-such-model")
    message = str(info.value)
    assert "unknown plugin 'no-such-model'" in message
    assert "lstm" in message and "ngram" in message
    assert "\n" not in message


def test_plugin_info_needs_no_import_and_unknown_name_raises() -> None:
    assert registry.plugin_info("lstm").distribution == "seqlab"
    with pytest.raises(PluginError, match="known plugins"):
        registry.plugin_info("no-such-model")


# ---- failure modes, each confined to its own plugin ------------------------------------
def test_duplicate_name_marks_both_broken_and_keeps_others(fake_plugins: str) -> None:
    eps = [
        ep("twin", f"{fake_plugins}:Good"),
        ep("twin", f"{fake_plugins}:Concrete"),
        ep("solo", f"{fake_plugins}:Good"),
    ]
    infos = by_name(registry.discover(eps))
    twins = infos["twin"]
    assert len(twins) == 2
    for twin in twins:
        assert not twin.ok
        assert twin.error is not None
        assert "duplicate plugin name 'twin'" in twin.error
    # each names the *other* registration, so the user can find both packages
    for twin, other in zip(twins, reversed(twins), strict=True):
        assert other.value in (twin.error or "")
        assert f"({twin.value})" not in (twin.error or "")
    assert infos["solo"][0].ok
    inspected = by_name(registry.inspect_all(eps))
    assert inspected["solo"][0].ok
    assert all(not t.ok for t in inspected["twin"])


def test_same_entry_point_seen_twice_is_one_plugin(fake_plugins: str) -> None:
    """An editable install can expose one entry point twice: that is not a duplicate."""
    infos = registry.discover([ep("solo", f"{fake_plugins}:Good")] * 2)
    assert [(i.name, i.ok) for i in infos] == [("solo", True)]


def test_entry_point_to_missing_module_is_broken_with_reason(fake_plugins: str) -> None:
    eps = [ep("ghost", "nosuchmodule:Thing"), ep("fine", f"{fake_plugins}:Good")]
    listed = by_name(registry.discover(eps))
    assert listed["ghost"][0].ok, "listing alone imports nothing, so cannot know yet"
    inspected = by_name(registry.inspect_all(eps))
    ghost = inspected["ghost"][0]
    assert not ghost.ok and ghost.as_dict()["status"] == "broken"
    assert ghost.error is not None
    assert "plugin 'ghost'" in ghost.error
    assert "nosuchmodule" in ghost.error and "ModuleNotFoundError" in ghost.error
    assert inspected["fine"][0].ok


def test_entry_point_to_missing_attribute_is_broken(fake_plugins: str) -> None:
    inspected = registry.inspect_all([ep("absent", f"{fake_plugins}:NoSuchClass")])
    assert not inspected[0].ok
    assert "plugin 'absent'" in (inspected[0].error or "")
    assert "AttributeError" in (inspected[0].error or "")


@pytest.mark.parametrize(
    ("attr", "reason"),
    [
        ("not_a_class", "is not a subclass of SequenceModel"),
        ("Fitless", "does not implement fit"),
        ("BadKinds", "task_kinds must be a non-empty subset"),
        ("KindsAsString", "task_kinds must be a non-empty subset"),
        ("BadConfig", "config_class must subclass PluginConfig"),
    ],
)
def test_class_breaking_the_contract_is_broken(fake_plugins: str, attr: str, reason: str) -> None:
    eps = [ep("bad", f"{fake_plugins}:{attr}"), ep("good", f"{fake_plugins}:Good")]
    inspected = by_name(registry.inspect_all(eps))
    bad = inspected["bad"][0]
    assert not bad.ok
    assert bad.error is not None and reason in bad.error
    assert "plugin 'bad'" in bad.error
    assert inspected["good"][0].ok


def test_good_fake_plugin_loads_through_the_entry_point(fake_plugins: str) -> None:
    info = registry.discover([ep("good", f"{fake_plugins}:Good")])[0]
    assert registry._load(info) is _Good
    assert info.distribution == "<unknown>"  # a hand-made entry point has no distribution


# ---- listing is cheap ------------------------------------------------------------------
def test_listing_imports_no_plugin_module_and_no_torch() -> None:
    code = textwrap.dedent(
        """
        import sys
        import pipeline_core.registry as registry
        assert "torch" not in sys.modules, "importing the registry imported torch"
        infos = registry.discover()
        assert {"lstm", "ngram"} <= {i.name for i in infos}, infos
        loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("plugins."))
        assert not loaded, f"discover() imported {loaded}"
        import seqlab.cli_plugins
        assert "torch" not in sys.modules, "importing the plugin CLI imported torch"
        print("clean")
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "clean"
