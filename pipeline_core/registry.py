"""Entry-point discovery of plugins (group ``seqlab.models``).

The built-ins are registered through seqlab's own pyproject exactly as a third party's
are. Listing reads entry-point metadata only (no plugin module is imported); a plugin is
imported when first asked for. A duplicate name, an import that fails, or a class that
does not satisfy the contract makes *that* plugin broken, with a reason naming it and its
distribution; every other plugin stays usable.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline_core.errors import PluginError

if TYPE_CHECKING:
    from pipeline_core.contract import SequenceModel

GROUP = "seqlab.models"


@dataclass(frozen=True)
class PluginInfo:
    """One discovered plugin; ``error`` says why it is broken (None when usable)."""

    name: str
    value: str
    distribution: str
    version: str
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def as_dict(self) -> dict[str, str | None]:
        status = "ok" if self.ok else "broken"
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "entry_point": self.value,
            "status": status,
            "error": self.error,
        }


def _dist_of(ep: EntryPoint) -> tuple[str, str]:
    dist = ep.dist
    if dist is None:
        return "<unknown>", "?"
    return dist.metadata["Name"] or "<unknown>", dist.version or "?"


def _entry_points() -> list[EntryPoint]:
    return sorted(entry_points(group=GROUP), key=lambda ep: (ep.name, ep.value))


def discover(eps: Iterable[EntryPoint] | None = None) -> list[PluginInfo]:
    """Every plugin in the group, without importing any; duplicates are marked broken."""
    found = list(_entry_points() if eps is None else eps)
    by_name: dict[str, list[EntryPoint]] = {}
    for ep in found:
        by_name.setdefault(ep.name, []).append(ep)
    infos = []
    for name in sorted(by_name):
        group = by_name[name]
        distinct = {ep.value for ep in group}
        for ep in group:
            dist, version = _dist_of(ep)
            error = None
            if len(distinct) > 1:
                others = ", ".join(f"{_dist_of(o)[0]} ({o.value})" for o in group if o is not ep)
                error = f"duplicate plugin name '{name}': also registered by {others}"
            infos.append(PluginInfo(name, ep.value, dist, version, error))
            if len(distinct) == 1:
                break  # the same entry point seen twice (e.g. an editable install) is one
    return infos


def check_plugin_class(obj: object, info: PluginInfo) -> None:
    """Refuse an entry point that is not a concrete SequenceModel subclass."""
    from pipeline_core.contract import PluginConfig, SequenceModel

    where = f"plugin '{info.name}' from {info.distribution}"
    if not isinstance(obj, type) or not issubclass(obj, SequenceModel):
        raise PluginError(f"{where}: {info.value} is not a subclass of SequenceModel")
    abstract = sorted(getattr(obj, "__abstractmethods__", ()))
    if abstract:
        raise PluginError(f"{where}: {info.value} does not implement {', '.join(abstract)}")
    if not (isinstance(obj.config_class, type) and issubclass(obj.config_class, PluginConfig)):
        raise PluginError(f"{where}: config_class must subclass PluginConfig")
    from pipeline_core.contract import TASK_KINDS

    kinds = obj.task_kinds
    # a str or None here must give a PluginError, not a TypeError that ends the listing
    if not isinstance(kinds, set | frozenset | tuple | list):
        kinds = ()
    unknown = set(kinds) - set(TASK_KINDS)
    if not kinds or unknown:
        raise PluginError(
            f"{where}: task_kinds must be a non-empty subset of {', '.join(TASK_KINDS)}"
        )


@functools.cache
def _load(info: PluginInfo) -> type:
    """Import one discovered plugin and check its class (cached: a plugin imports once)."""
    ep = EntryPoint(name=info.name, value=info.value, group=GROUP)
    try:
        obj = ep.load()
    except Exception as err:  # any import-time failure makes only this plugin broken
        raise PluginError(
            f"plugin '{info.name}' from {info.distribution} failed to import {info.value}: "
            f"{type(err).__name__}: {err}"
        ) from None
    check_plugin_class(obj, info)
    return obj


def load_plugin(name: str) -> type[SequenceModel]:
    """The plugin class registered as ``name``; a one-line error lists the known ones."""
    infos = [i for i in discover() if i.name == name]
    if not infos:
        known = ", ".join(sorted({i.name for i in discover()})) or "none"
        raise PluginError(f"unknown plugin '{name}'; known plugins: {known}")
    info = infos[0]
    if info.error is not None:
        raise PluginError(f"plugin '{name}' from {info.distribution} is broken: {info.error}")
    return _load(info)


def plugin_info(name: str) -> PluginInfo:
    """Metadata of ``name`` (for tags such as plugin version), without importing it."""
    for info in discover():
        if info.name == name:
            return info
    load_plugin(name)  # raises the unknown-plugin error
    raise AssertionError("unreachable")


def inspect_all(eps: Iterable[EntryPoint] | None = None) -> list[PluginInfo]:
    """Discover and import every plugin, marking those that fail as broken with a reason.

    ``eps`` (default: the installed entry points) lets tests inspect hand-made ones.
    """
    checked = []
    for info in discover(eps):
        if info.ok:
            try:
                _load(info)
            except PluginError as err:
                info = PluginInfo(info.name, info.value, info.distribution, info.version, str(err))
        checked.append(info)
    return checked


def load_checkpoint(path: str | Path, vocab: Sequence[str] | None = None) -> SequenceModel:
    """Rebuild any plugin's model from a checkpoint, resolving its class by the plugin
    name stored in it; with ``vocab``, refuse a checkpoint trained on another vocabulary."""
    from pipeline_core.contract import read_checkpoint

    payload = read_checkpoint(path)
    name = payload.get("plugin")
    if not name:
        raise PluginError(f"{path}: the checkpoint does not name its plugin")
    return load_plugin(str(name)).load(path, vocab=vocab)
