"""Typed configs (pydantic) and YAML loading: one resolved config per run.

Every config rejects unknown keys, and every validation error becomes a one-line
:class:`~pipeline_core.errors.ConfigError` that names the field at fault.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pipeline_core.errors import ConfigError
from pipeline_core.sweep_space import SweepConfig

Level = Literal["char", "word"]
CleanPreset = Literal["none", "seed", "text"]
DecodeErrors = Literal["strict", "ignore"]


class StrictModel(BaseModel):
    """Base for every config: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


Objective = Literal["all", "last"]
Bptt = Literal["windows", "stateful"]
LrSchedule = Literal["none", "cosine", "plateau"]
Device = Literal["auto", "cpu", "cuda"]


class TrainConfig(StrictModel):
    """How the one Trainer fits a neural plugin; count-based plugins never see it."""

    epochs: int = Field(default=3, ge=1, le=10_000, description="Passes over the train split.")
    batch_size: int = Field(default=64, ge=1, description="Windows (or streams) per batch.")
    optimizer: Literal["adam", "rmsprop"] = Field(default="adam", description="adam or rmsprop.")
    lr: float = Field(default=2e-3, gt=0, le=10, description="Learning rate.")
    weight_decay: float = Field(
        default=0.0,
        ge=0.0,
        le=10,
        description="Decoupled weight decay (AdamW; with rmsprop an L2 term): 0 is off.",
    )
    clip_norm: float | None = Field(
        default=5.0, gt=0, description="If ||g|| > C then g <- g*C/||g|| (null: off)."
    )
    clip_value: float | None = Field(
        default=None, gt=0, description="Clip each gradient entry to [-v, v] (null: off)."
    )
    seed: int = Field(default=0, description="Seeds weights, batch order and dropout.")
    objective: Objective = Field(
        default="all",
        description="next-token loss on every position (all) or the window's last (last).",
    )
    bptt: Bptt = Field(
        default="windows",
        description="windows: shuffled windows; stateful: truncated BPTT over contiguous "
        "streams with the state carried across batches (plugins with state only).",
    )
    max_batches_per_epoch: int | None = Field(
        default=None, ge=1, description="Cap on batches per epoch (null: the whole split)."
    )
    num_threads: int | None = Field(
        default=None, ge=1, description="torch intra-op threads (null: torch's default)."
    )
    progress: bool = Field(default=True, description="Show a rich progress bar.")
    patience: int | None = Field(
        default=None,
        ge=1,
        description="Early stopping: epochs without a better val nll before stopping; "
        "the best weights are restored (null: off).",
    )
    lr_schedule: LrSchedule = Field(
        default="none", description="none, cosine (over the epochs) or plateau (on val nll)."
    )
    device: Device = Field(
        default="auto", description="auto (CUDA when torch sees one), cpu or cuda."
    )
    dynamic_eval: bool = Field(
        default=False,
        description="After the static scores, score the test split again dynamically: "
        "segment by segment, each scored first and then learned from (RMS-normalised SGD "
        "for neural plugins, added counts for the n-gram), reported apart as "
        "`test_bpc_dynamic` / `dyn_bpc`; static figures and the ranking are unchanged.",
    )
    dynamic_lr: float = Field(
        default=0.002,
        gt=0,
        le=1,
        description="Dynamic evaluation (neural plugins): step size of the RMS-normalised "
        "SGD step on each segment's mean loss.",
    )
    dynamic_decay: float = Field(
        default=0.02,
        ge=0,
        le=1,
        description="Dynamic evaluation (neural plugins): after each step, move this share "
        "of the way back to the static weights (0: none).",
    )
    dynamic_segment: int = Field(
        default=50,
        ge=1,
        description="Dynamic evaluation: tokens scored per segment before each update.",
    )


class DataConfig(StrictModel):
    """Where the text comes from and how it becomes integer arrays."""

    source: str = Field(
        default="synthetic:markov",
        description="A file, a directory, a glob, an http(s) URL, `gutenberg:<id>` or "
        "`synthetic:<name>?key=value&...` (e.g. `synthetic:markov?order=2&length=60000`).",
    )
    clean: CleanPreset = Field(
        default="text",
        description="Cleaning preset: none; seed (the tutorial's: per line strip, lowercase, "
        "ASCII only, drop empty lines, join with one space); text (NFKC, BOM and Project "
        "Gutenberg header/footer removed, whitespace normalised, case kept).",
    )
    errors: DecodeErrors = Field(
        default="strict",
        description="Undecodable bytes: strict (an error naming the file) or ignore (drop).",
    )
    level: Level = Field(default="char", description="Tokens: characters or words.")
    context_len: int = Field(
        default=10,
        ge=1,
        le=100_000,
        description="Tokens of context per window (the tutorial's SEQ_LEN); also the "
        "truncated-BPTT length with train.bptt: stateful.",
    )
    step: int = Field(default=1, ge=1, description="Stride between the starts of training windows.")
    splits: tuple[float, float, float] = Field(
        default=(0.8, 0.1, 0.1),
        description="Train, val and test fractions: three positive numbers that sum to 1; "
        "contiguous slices, the tail of the text is the test split.",
    )
    min_freq: int = Field(
        default=1, ge=1, description="Tokens seen fewer times than this become `<unk>` (id 0)."
    )
    max_vocab: int | None = Field(
        default=None,
        ge=1,
        description="Keep at most this many tokens, most frequent first, besides `<unk>` "
        "(null: no cap).",
    )

    @field_validator("splits")
    @classmethod
    def _splits_are_fractions(cls, splits: tuple[float, float, float]) -> tuple[float, ...]:
        if any(f <= 0 for f in splits) or abs(sum(splits) - 1.0) > 1e-6:
            raise ValueError("must be three positive fractions that sum to 1")
        return splits


class ModelSpec(StrictModel):
    """One plugin to run, with its own config (validated by the plugin's config class)."""

    plugin: str = Field(description="A plugin name, as `seqlab plugins` lists it.")
    name: str | None = Field(
        default=None, description="Label on the leaderboard (default: the plugin name)."
    )
    params: dict[str, Any] = Field(
        default_factory=dict, description="The plugin's own config (see its config_class)."
    )
    train: dict[str, Any] = Field(
        default_factory=dict,
        description="Overrides of the train section for this model only (e.g. bptt).",
    )

    @property
    def label(self) -> str:
        return self.name or self.plugin


class TrackingConfig(StrictModel):
    """Where MLflow records runs; ``None`` means MLFLOW_TRACKING_URI or ./mlruns.db."""

    tracking_uri: str | None = Field(
        default=None,
        description="MLflow tracking URI (null: `$MLFLOW_TRACKING_URI`, else "
        "`sqlite:///./mlruns.db`).",
    )
    experiment: str | None = Field(
        default=None,
        description="MLflow experiment name (null: `seqlab/<dataset>/<task>`).",
    )
    samples: int = Field(
        default=3,
        ge=0,
        description="Generated samples logged per model, at temperatures 0, 0.5 and 1 in "
        "that order (at most 3; 0: none).",
    )
    sample_len: int = Field(default=200, ge=1, description="Tokens per generated sample.")
    iteration_samples: int = Field(
        default=0,
        ge=0,
        description="After every epoch, greedy tokens generated from a random seed window "
        "of the train split, logged as `iterations/iteration_NNN.txt` (the tutorial's "
        "per-iteration report; 0: off).",
    )
    gradient_flow: bool = Field(
        default=True,
        description="Log each recurrent model's gradient norm per time step, "
        "`gradient_flow.png` and `.json` (the vanishing gradient made visible).",
    )


Runner = Literal["sequential", "threads", "dask"]


class ExecutionConfig(StrictModel):
    """How the comparison's tasks run: one after another, on threads, or on Dask."""

    runner: Runner = Field(
        default="sequential",
        description="sequential (one model at a time), threads (models in parallel "
        "threads) or dask (each model a task on a Dask cluster).",
    )
    dask_address: str | None = Field(
        default=None,
        description="A running Dask scheduler, e.g. `tcp://10.0.0.5:8786` (null: a "
        "LocalCluster of `dask_workers` processes for the run's duration).",
    )
    dask_workers: int = Field(
        default=2, ge=1, le=256, description="Worker processes of the LocalCluster."
    )
    refresh: bool = Field(
        default=False,
        description="Recompute the vectorized data even when a cached copy for the same "
        "text and data config exists.",
    )


class RegistryConfig(StrictModel):
    """The MLflow model registry: where a comparison's best model goes."""

    enabled: bool = Field(
        default=True,
        description="Register the best model by validation bpc after a comparison "
        "(`--no-register`: do not).",
    )
    name: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$",
        description="Registered model name: letters, digits, `.`, `_` and `-` (null: "
        "`seqlab-<dataset>`).",
    )


class RunConfig(StrictModel):
    """The whole resolved configuration of one ``seqlab run``."""

    task: str = Field(
        default="next-token",
        description="The task every model is trained and scored on: next-token, fill-blank, "
        "transduce, classify or regress.",
    )
    task_options: dict[str, Any] = Field(
        default_factory=dict,
        description="The task's own options (see the task reference below); validated by the task.",
    )
    data: DataConfig = Field(
        default_factory=DataConfig, description="The corpus and how it is tokenized and split."
    )
    models: list[ModelSpec] = Field(
        default_factory=lambda: [ModelSpec(plugin="ngram"), ModelSpec(plugin="lstm")],
        description="The models compared, each a plugin with its own params.",
    )
    train: TrainConfig = Field(
        default_factory=TrainConfig,
        description="How the Trainer fits every neural plugin (count-based ones ignore it).",
    )
    tracking: TrackingConfig = Field(
        default_factory=TrackingConfig, description="Where and what MLflow records."
    )
    execution: ExecutionConfig = Field(
        default_factory=ExecutionConfig, description="Where the comparison's tasks run."
    )
    registry: RegistryConfig = Field(
        default_factory=RegistryConfig, description="What the model registry receives."
    )
    sweep: SweepConfig | None = Field(
        default=None,
        description="What `seqlab sweep` searches: `metric`, `sampler` (tpe, random), "
        "`seed`, `pruner` (median, none), `warmup_epochs`, `startup_trials` and `space`, "
        "a mapping from a config path to `{low, high, step, log}` or `{choices}` (see "
        "Sweeps above); ignored by `seqlab run`.",
    )


M = TypeVar("M", bound=BaseModel)


def describe_validation_error(err: ValidationError, prefix: str = "") -> str:
    """One line naming each field at fault, e.g. ``train.epochs: must be >= 1 (got 0)``."""
    parts = []
    for item in err.errors():
        loc = ".".join(str(p) for p in item["loc"])
        field = f"{prefix}{loc}" if loc else prefix.rstrip(".") or "config"
        got = item.get("input")
        shown = "" if isinstance(got, dict | list) else f" (got {got!r})"
        message = str(item["msg"]).removeprefix("Value error, ")
        parts.append(f"{field}: {message}{shown}")
    return "; ".join(parts)


def validate_model(cls: type[M], values: Mapping[str, Any] | M | None, where: str = "") -> M:
    """Validate ``values`` against ``cls``, raising a ConfigError that names the field."""
    if isinstance(values, cls):
        return values
    try:
        return cls.model_validate(dict(values or {}))
    except ValidationError as err:
        prefix = f"{where}." if where else ""
        raise ConfigError(f"invalid config: {describe_validation_error(err, prefix)}") from None


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with a one-line error naming the file on failure."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{p}{where}: not valid YAML") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{p}: a config must be a YAML mapping, got {type(loaded).__name__}")
    return loaded


def load_run_config(
    path: str | Path | None = None, overrides: Mapping[str, Any] | None = None
) -> RunConfig:
    """File (if any), then dotted-key overrides such as ``{"train.epochs": 2}``."""
    values: dict[str, Any] = load_yaml(path) if path is not None else {}
    for dotted, value in (overrides or {}).items():
        node = values
        *parents, leaf = dotted.split(".")
        for key in parents:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise ConfigError(f"invalid config: {dotted}: {key} is not a mapping")
            node = child
        node[leaf] = value
    return validate_model(RunConfig, values)


def model_train_config(train: TrainConfig, spec: ModelSpec) -> TrainConfig:
    """The run's train section with ``spec.train`` laid over it (per-model overrides)."""
    if not spec.train:
        return train
    merged = {**train.model_dump(), **spec.train}
    return validate_model(TrainConfig, merged, where=f"models.{spec.label}.train")
