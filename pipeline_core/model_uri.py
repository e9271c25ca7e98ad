"""A trained model by where it lives: a checkpoint file, a folder holding
``checkpoint.pt``, an MLflow run's artifact (``runs:/<run_id>/model``) or a version of a
registered model (``models:/<name>@<alias>``, ``models:/<name>/<version>``).

:func:`resolve_model` gives the model with what reading and writing text needs (its
vocabulary, token level and context length), from any of these; MLflow is reached only
through :mod:`pipeline_core.tracking`. Anything not found is one line naming it.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline_core.config import Level
from pipeline_core.contract import SequenceModel
from pipeline_core.errors import ConfigError, DataError
from pipeline_core.vectorize import UNK, Vocabulary

CHECKPOINT_NAME = "checkpoint.pt"
MLFLOW_SCHEMES = ("runs:", "models:")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):")
URI_HELP = (
    "give a checkpoint file, a folder holding checkpoint.pt, runs:/<run_id>/model, "
    "models:/<name>@<alias> or models:/<name>/<version>"
)


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to read and write text, and where it came from."""

    model: SequenceModel
    vocab: Vocabulary
    level: Level
    context_len: int
    #: how its run scored it: "carried state" or "windows"
    scoring: str
    plugin: str
    #: the URI or path as given
    source: str
    #: what it resolved to: a local checkpoint, or the run artifact it was downloaded from
    origin: str
    run_id: str | None = None

    @property
    def stateful(self) -> bool:
        from pipeline_core.generation import is_stateful

        return is_stateful(self.model)

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.source,
            "origin": self.origin,
            "run_id": self.run_id,
            "plugin": self.plugin,
            "level": self.level,
            "context_len": self.context_len,
            "vocab_size": len(self.vocab),
        }


def is_mlflow_uri(uri: str) -> bool:
    """True for ``runs:/...`` and ``models:/...`` (they need the tracking store)."""
    return uri.startswith(MLFLOW_SCHEMES)


def _in_folder(folder: Path, what: str) -> Path:
    found = folder / CHECKPOINT_NAME
    if found.is_file():
        return found
    inside = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())[:12]
    listing = ", ".join(inside) or "nothing"
    raise DataError(f"{what} holds no {CHECKPOINT_NAME} (it holds: {listing})")


@contextmanager
def local_checkpoint(
    uri: str | Path, tracking_uri: str | None = None
) -> Iterator[tuple[Path, str, str | None]]:
    """``(checkpoint file, origin, run id)`` for any model URI; an MLflow artifact is
    downloaded into a temporary folder that is removed when the block ends."""
    text = str(uri)
    if is_mlflow_uri(text):
        from pipeline_core.tracking import fetch_model_artifact

        with tempfile.TemporaryDirectory(prefix="seqlab-model-") as tmp:
            fetched = fetch_model_artifact(text, tmp, tracking_uri)
            path = fetched.path
            if path.is_dir():
                path = _in_folder(path, f"{fetched.origin}")
            yield path, fetched.origin, fetched.run_id
        return
    path = Path(text).expanduser()
    if not path.exists():
        scheme = _SCHEME.match(text)
        if scheme is not None:
            raise ConfigError(
                f"model: unknown URI scheme {scheme.group(1)!r} in {text!r}; {URI_HELP}"
            )
        raise DataError(f"model not found: {text} (no such file or folder); {URI_HELP}")
    if path.is_dir():
        path = _in_folder(path, f"folder {text}")
    yield path, str(path), None


def _data_fields(extra: dict[str, Any], where: str) -> tuple[Level, int]:
    data = extra.get("data")
    if not isinstance(data, dict):
        raise DataError(
            f"{where}: the checkpoint records no data config (token level, context_len): "
            "it was not saved by a seqlab run"
        )
    level, context_len = data.get("level", "char"), data.get("context_len")
    if level not in ("char", "word"):
        raise DataError(f"{where}: the checkpoint's data.level {level!r} is not char or word")
    if type(context_len) is not int or context_len < 1:
        raise DataError(f"{where}: the checkpoint's data.context_len {context_len!r} is invalid")
    return level, context_len


def load_resolved(path: Path, source: str, origin: str, run_id: str | None) -> LoadedModel:
    """Rebuild the model of a local checkpoint with its vocabulary and data settings."""
    from pipeline_core.contract import read_checkpoint
    from pipeline_core.registry import load_checkpoint

    payload = read_checkpoint(path)
    tokens = payload.get("vocab")
    if not tokens:
        raise DataError(f"{origin}: the checkpoint holds no vocabulary, so text cannot be read")
    if UNK not in tokens:
        raise DataError(f"{origin}: the checkpoint's vocabulary has no {UNK} token")
    level, context_len = _data_fields(payload["extra"], origin)
    vocab = Vocabulary(tuple(tokens))
    model = load_checkpoint(path, vocab=vocab.tokens)
    if model.vocab_size != len(vocab):
        raise DataError(
            f"{origin}: the model predicts {model.vocab_size} tokens but its vocabulary "
            f"holds {len(vocab)}"
        )
    return LoadedModel(
        model=model,
        vocab=vocab,
        level=level,
        context_len=context_len,
        scoring=str(payload["extra"].get("scoring") or "windows"),
        plugin=str(payload.get("plugin")),
        source=source,
        origin=origin,
        run_id=run_id,
    )


def resolve_model(uri: str | Path, tracking_uri: str | None = None) -> LoadedModel:
    """The model ``uri`` names: a checkpoint file, a folder holding ``checkpoint.pt``,
    ``runs:/<run_id>/<path>`` (default path ``model``), ``models:/<name>@<alias>`` or
    ``models:/<name>/<version>`` (``latest`` too) from the MLflow model registry of
    ``tracking_uri`` (default: ``$MLFLOW_TRACKING_URI`` or ``./mlruns.db``)."""
    with local_checkpoint(uri, tracking_uri) as (path, origin, run_id):
        try:
            return load_resolved(path, str(uri), origin, run_id)
        except DataError as err:
            if run_id is None:
                raise
            # name the artifact, not the temporary folder it was downloaded into
            raise DataError(str(err).replace(str(path), origin)) from None
