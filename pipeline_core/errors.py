"""User-facing errors: one line, no traceback, exit code 2.

Everything that is the user's fault (a bad path, a bad config value, an unknown
plugin) raises a subclass of :class:`SeqlabError`; the CLI prints ``error: <msg>``
and exits 2. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class SeqlabError(Exception):
    """An error caused by the user's input, reported as one line."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))

    @property
    def message(self) -> str:
        return str(self)


class SourceError(SeqlabError):
    """A data source that cannot be read (missing, empty, binary, undecodable)."""


class ConfigError(SeqlabError):
    """A configuration value that does not validate; names the field."""


class PluginError(SeqlabError):
    """A plugin that is unknown, broken, or does not satisfy the contract."""


class DataError(SeqlabError):
    """Data that cannot serve the requested task (too short, vocabulary mismatch)."""


class PluginOutputError(PluginError):
    """A plugin answered with something that is not a distribution (caught at scoring)."""
