"""seqlab's public API for plugin authors: the one module a plugin imports.

Everything here is the stable surface (semantic versioning applies to it); the internal
packages (``pipeline_core``, ``flows``, ``plugins``) may move without notice. The
conformance kit is :mod:`seqlab.testing`.

A count-based plugin subclasses :class:`SequenceModel` and implements ``fit``,
``log_proba``, ``is_fitted``, ``get_state`` and ``set_state``; a neural plugin
subclasses :class:`TorchSequenceModel` and implements ``forward`` only (with
``stateful = True``, ``forward(x, state=None) -> (logits, state)``).
"""

from pipeline_core.config import TrainConfig
from pipeline_core.contract import (
    TASK_KINDS,
    AdaptNotSupported,
    EpochCallback,
    EpochRecord,
    FitData,
    NotFittedError,
    PluginConfig,
    SequenceModel,
    State,
    TaskKind,
    TorchSequenceModel,
    as_context_array,
    detach_state,
    seed_everything,
)
from pipeline_core.errors import ConfigError, DataError, PluginError, SeqlabError
from pipeline_core.training import Callback, Trainer, train

__all__ = [
    "TASK_KINDS",
    "AdaptNotSupported",
    "Callback",
    "ConfigError",
    "DataError",
    "EpochCallback",
    "EpochRecord",
    "FitData",
    "NotFittedError",
    "PluginConfig",
    "PluginError",
    "SeqlabError",
    "SequenceModel",
    "State",
    "TaskKind",
    "TorchSequenceModel",
    "TrainConfig",
    "Trainer",
    "as_context_array",
    "detach_state",
    "seed_everything",
    "train",
]
