"""The stages of a comparison as plain functions; flows/ wires them into Prefect tasks.

ingest -> clean -> vectorize (cached) -> train each model -> evaluate each on the same
test positions -> leaderboard. MLflow is reached only through :class:`Tracker`, with run
ids passed explicitly. One model's failure fails its own run only: it becomes a failed
row of the leaderboard, with its reason.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline_core.config import (
    DataConfig,
    ModelSpec,
    RunConfig,
    TrackingConfig,
    TrainConfig,
    model_train_config,
)
from pipeline_core.contract import EpochRecord, FitData, SequenceModel, TorchSequenceModel
from pipeline_core.errors import ConfigError, DataError, PluginError
from pipeline_core.interrupt import raise_if_stopped
from pipeline_core.metrics import Scores, evaluate
from pipeline_core.oracle import ORACLE, known_optimum
from pipeline_core.sources import synthetic_metadata
from pipeline_core.tasks import Baseline, Task, as_task, get_task
from pipeline_core.tracking import RunRef, Tracker, describe_error
from pipeline_core.vectorize import EncodedCorpus, corpus_text, vectorize_cached

log = logging.getLogger("seqlab")


# ---- naming --------------------------------------------------------------------------
def dataset_name(source: str) -> str:
    """A short, stable name for a source: file stem, ``gutenberg-11``, ``synthetic-markov``."""
    if source.startswith(("http://", "https://")):
        stem = Path(source.split("?", 1)[0].rstrip("/")).stem or "url"
    elif ":" in source and not Path(source).exists() and not re.match(r"^[A-Za-z]:\\", source):
        scheme, rest = source.split(":", 1)
        stem = f"{scheme}-{rest.split('?', 1)[0]}"
    else:
        stem = Path(source.rstrip("/*")).stem or "data"
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip("-").lower() or "data"


def experiment_name(data: DataConfig, tracking: TrackingConfig, task: str = "next-token") -> str:
    return tracking.experiment or f"seqlab/{dataset_name(data.source)}/{task}"


def source_entropy_bits(data: DataConfig) -> float | None:
    """The exact entropy rate of a synthetic character source: the best bpc possible."""
    known = synthetic_metadata(data.source)
    if known is None or "entropy_rate_bits" not in known or data.level != "char":
        return None
    return float(known["entropy_rate_bits"])


def source_optimum(data: DataConfig) -> dict[str, float]:
    """A synthetic example source's exact optimum per metric (parity: accuracy 1 and
    log-loss 0; adding: MSE 0), empty for any other source."""
    known = synthetic_metadata(data.source) or {}
    return {str(k): float(v) for k, v in dict(known.get("optimum") or {}).items()}


def optimum_lines(table: pd.DataFrame, task: Task, optimum: dict[str, float]) -> list[str]:
    """The known optimum of the task's ranking figure and the best model's distance to it."""
    metric = task.rank_metric
    if metric not in optimum:
        return []
    line = f"known optimum: {metric} {optimum[metric]:g} (exact for this source)"
    models = table[(table["status"] == "finished") & (table["plugin"] != BASELINE)]
    if len(models):
        best = models.iloc[0]
        line += f"; {best['model']} is {best[f'test_{metric}'] - optimum[metric]:+.4f} from it"
    return [line]


# ---- data stages ---------------------------------------------------------------------
def ingest(data: DataConfig) -> pd.DataFrame:
    from pipeline_core.sources import load_documents

    return load_documents(data.source, errors=data.errors)


def clean(docs: pd.DataFrame, data: DataConfig) -> pd.DataFrame:
    from pipeline_core.cleaning import clean_documents

    return clean_documents(docs, data.clean)


def encode(
    docs: pd.DataFrame, data: DataConfig, refresh: bool = False, windows: bool = True
) -> EncodedCorpus:
    """The cleaned documents as one encoded corpus, cached on text hash + config
    (``refresh``: recomputed and the cache overwritten; ``corpus.cache`` says which;
    ``windows``: see :func:`~pipeline_core.vectorize.vectorize`)."""
    text = corpus_text(docs["text"].tolist())
    corpus, _ = vectorize_cached(text, data, refresh=refresh, windows=windows)
    return corpus


# ---- models --------------------------------------------------------------------------
@dataclass(frozen=True)
class ResolvedModel:
    """A model spec whose plugin was found, declares the task, and whose configs validated."""

    spec: ModelSpec
    plugin_cls: type[SequenceModel]
    config: dict[str, Any]
    version: str
    train: TrainConfig

    @property
    def label(self) -> str:
        return self.spec.label


def make_task(config: RunConfig) -> Task:
    """The run's task with its validated options (a one-line error names a bad one)."""
    return get_task(config.task, config.task_options)


def resolve_models(
    specs: list[ModelSpec], task: str | Task, train: TrainConfig
) -> list[ResolvedModel]:
    """Find every plugin and validate every config *before* anything is trained: an
    unknown task, a plugin without the task, or settings it cannot honour fail here."""
    from pipeline_core.registry import load_plugin, plugin_info
    from pipeline_core.training import check_trainable

    the_task = as_task(task)
    labels = [s.label for s in specs]
    dupes = sorted({lbl for lbl in labels if labels.count(lbl) > 1})
    if dupes:
        raise ConfigError(f"models: duplicate model name(s) {', '.join(dupes)}; give each a name")
    if not specs:
        raise ConfigError("models: at least one model is needed")
    resolved = []
    for spec in specs:
        cls = load_plugin(spec.plugin)
        the_task.check_plugin(cls, spec.label)
        try:
            config = cls.make_config(spec.params)
        except ConfigError as err:
            raise ConfigError(f"models.{spec.label}: {err}") from None
        settings = model_train_config(train, spec)
        check_trainable(cls, settings, spec.label)
        params = config.model_dump(mode="json")
        for part, part_cls, part_settings in cls.trained_parts(params):
            check_trainable(part_cls, part_settings, f"{spec.label}, {part}")
        version = plugin_info(spec.plugin).version
        resolved.append(ResolvedModel(spec, cls, params, version, settings))
    return resolved


def carries_state(resolved: ResolvedModel) -> bool:
    """Whether the plugin is scored with its state carried under this config and
    training (:meth:`SequenceModel.scores_streaming`): a stateful plugin trained by
    stateful BPTT, or a mixture holding one."""
    return resolved.plugin_cls.scores_streaming(resolved.config, resolved.train)


@dataclass
class TrainedModel:
    """A fitted model and where its run is recorded."""

    resolved: ResolvedModel
    model: SequenceModel
    history: list[EpochRecord]
    train_seconds: float
    run: RunRef
    #: ‖∂L/∂h_t‖ per time step of a val window (None: not recurrent, or not asked for)
    grad_flow: list[float] | None = None


@dataclass
class ModelResult:
    """One leaderboard row: a finished model's scores, or a failed one's reason."""

    label: str
    plugin: str
    run_id: str
    scores: Scores | None = None
    val_scores: Scores | None = None
    train_seconds: float = float("nan")
    scoring: str = ""
    error: str | None = None
    samples: dict[str, str] | None = None
    grad_flow: list[float] | None = None
    #: per-epoch figures (None: not at hand, e.g. a model kept by a resume)
    history: list[EpochRecord] | None = None
    #: previous tokens its scored predictions could depend on (inf: a carried state;
    #: None: not at hand): the model's own reach, capped by the scoring window
    reach: float | None = None
    #: ``train.dynamic_eval`` was on; the dynamic test scores (None: n/a or off)
    dynamic_enabled: bool = False
    dynamic_scores: Scores | None = None

    @property
    def failed(self) -> bool:
        return self.error is not None


def check_fits(resolved: list[ResolvedModel], corpus: EncodedCorpus, task: str | Task) -> None:
    """Refuse, with the numbers and before any run starts, settings the prepared corpus
    cannot serve: a ``data.step`` that leaves the train split a single window, and for
    every model the Trainer fits (a neural plugin, or one a plugin trains inside its own
    fit: :meth:`SequenceModel.trained_parts`), batches the train split cannot fill."""
    the_task = as_task(task)
    the_task.prepare(corpus)
    cfg, train = corpus.config, corpus.train
    starts = len(train) - cfg.context_len  # windows of context_len + 1 tokens
    if cfg.step > 1 and cfg.step >= starts:
        raise DataError(
            f"data.step={cfg.step} is larger than the train split allows: its "
            f"{len(train):,} tokens give {max(starts, 0):,} window starts (context_len + 1 "
            f"= {cfg.context_len + 1} tokens each), so only the first window would be used; "
            "lower data.step"
        )
    for item in resolved:
        neural = issubclass(item.plugin_cls, TorchSequenceModel)
        trained: list[tuple[str, type[SequenceModel], TrainConfig]] = (
            [("", item.plugin_cls, item.train)] if neural else []
        )
        trained += item.plugin_cls.trained_parts(item.config)
        for part, plugin_cls, settings in trained:
            try:
                trains_by = the_task.training_task(plugin_cls)
                trains_by.check_fill(train, cfg.context_len, cfg.step, settings)
            except DataError as err:
                where = f"model '{item.label}'" + (f", {part}" if part else "")
                raise DataError(f"{where}: {err}") from None


def fit_data(corpus: EncodedCorpus) -> FitData:
    return FitData(
        train=corpus.train,
        val=corpus.val,
        vocab_size=len(corpus.vocab),
        context_len=corpus.config.context_len,
        step=corpus.config.step,
    )


def start_model_run(
    resolved: ResolvedModel,
    corpus: EncodedCorpus,
    tracker: Tracker,
    parent: RunRef,
    tags: dict[str, str],
) -> RunRef:
    """The model's child run, tagged and with its whole config as params."""
    run = tracker.start_run(
        resolved.label,
        tags={
            **tags,
            "seqlab.plugin": resolved.spec.plugin,
            "seqlab.plugin_version": resolved.version,
            "seqlab.data_sha256": corpus.text_sha256,
        },
        parent=parent,
    )
    tracker.log_params(
        run,
        {
            "plugin": resolved.spec.plugin,
            "model": resolved.config,
            "train": resolved.train.model_dump(mode="json"),
            "data": corpus.config.model_dump(mode="json"),
            "vocab_size": len(corpus.vocab),
        },
    )
    return run


def train_model(
    resolved: ResolvedModel,
    corpus: EncodedCorpus,
    task: str | Task,
    tracker: Tracker,
    parent: RunRef,
    tags: dict[str, str],
    resume_run: RunRef | None = None,
    tracking: TrackingConfig | None = None,
) -> TrainedModel:
    """Fit one model in its child run (a new one, or ``resume_run`` continued from its
    last per-epoch checkpoint), logging each epoch and checkpointing after it."""
    from pipeline_core.callbacks import (
        IterationSamples,
        MlflowCheckpoint,
        MlflowMetrics,
        load_trainer_checkpoint,
    )
    from pipeline_core.training import Callback, fit_model

    raise_if_stopped()  # Ctrl-C while this model waited its turn: it never starts
    the_task = as_task(task)
    the_task.prepare(corpus)
    carry = carries_state(resolved)
    if resume_run is None:
        run = start_model_run(resolved, corpus, tracker, parent, tags)
        saved = None
    else:
        run = resume_run
        tracker.reopen(run)
        saved = load_trainer_checkpoint(tracker, run)
    with tracker.run(run, close=False):
        model = resolved.plugin_cls.create(
            len(corpus.vocab), resolved.config, seed=resolved.train.seed
        )
        callbacks: list[Callback] = [
            MlflowMetrics(tracker, run, the_task.tokens_per_char(corpus, "val")),
            MlflowCheckpoint(tracker, run),
        ]
        if tracking is not None and tracking.iteration_samples:
            n, seed = tracking.iteration_samples, resolved.train.seed
            callbacks.append(IterationSamples(tracker, run, model, corpus, n, seed))
        started = time.perf_counter()
        history = fit_model(
            model,
            fit_data(corpus),
            resolved.train,
            task=the_task,
            callbacks=callbacks,
            validate=lambda m: the_task.score(m, corpus, "val", carry).nll,
            resume_from=saved,
        )
        seconds = time.perf_counter() - started
        tracker.log_metrics(run, {"train_seconds": seconds})
        flow = None
        if tracking is None or tracking.gradient_flow:
            flow = record_gradient_flow(model, corpus, tracker, run, resolved, the_task)
    return TrainedModel(resolved, model, history, seconds, run, flow)


GRAD_FLOW_WINDOWS = 64


def record_gradient_flow(
    model: SequenceModel,
    corpus: EncodedCorpus,
    tracker: Tracker,
    run: RunRef,
    resolved: ResolvedModel,
    task: Task,
) -> list[float] | None:
    """‖∂L/∂h_t‖ per time step with the task's own loss (:meth:`Task.gradient_flow`),
    logged on the model's run; None for a plugin that exposes no recurrent state (the
    n-gram, most third-party models)."""
    from pipeline_core.diagnostics import log_gradient_flow

    if not isinstance(model, TorchSequenceModel):
        return None
    try:
        flow = task.gradient_flow(model, corpus, GRAD_FLOW_WINDOWS, resolved.train.seed)
    except (PluginError, DataError) as err:  # a diagnostic, not a reason to fail the run
        log.warning("model %s: no gradient-flow plot (%s)", resolved.label, err)
        return None
    if flow is None:
        return None
    log_gradient_flow(tracker, run, resolved.label, flow)
    return [float(v) for v in flow.norms]


def evaluate_model(
    trained: TrainedModel,
    corpus: EncodedCorpus,
    task: str | Task,
    tracker: Tracker,
    tracking: TrackingConfig,
    seed: int = 0,
) -> ModelResult:
    """Score on val and test (pure), record the report, and close the child run."""
    from pipeline_core.dynamic import DynamicSettings
    from pipeline_core.report import record, score_model

    resolved, run = trained.resolved, trained.run
    dynamic = None
    if resolved.train.dynamic_eval:
        dynamic = DynamicSettings.from_train(resolved.train)
    with tracker.run(run):
        raise_if_stopped()  # interrupted after training: the run ends KILLED, unscored
        report = score_model(
            trained.model,
            corpus,
            task,
            carries_state(resolved),
            label=resolved.label,
            plugin=resolved.spec.plugin,
            config=resolved.config,
            history=trained.history,
            tracking=tracking,
            seed=seed,
            dynamic=dynamic,
        )
        record(tracker, run, report, trained.model, corpus)
    return ModelResult(
        label=resolved.label,
        plugin=resolved.spec.plugin,
        run_id=run.run_id,
        scores=report.test_scores,
        val_scores=report.val_scores,
        train_seconds=trained.train_seconds,
        scoring=report.scoring,
        samples=report.samples,
        grad_flow=trained.grad_flow,
        history=list(trained.history),
        reach=scored_reach(trained.model, corpus, carries_state(resolved)),
        dynamic_enabled=report.dynamic_enabled,
        dynamic_scores=report.dynamic_scores,
    )


def scored_reach(model: SequenceModel, corpus: EncodedCorpus, carry: bool) -> float:
    """Previous tokens a scored prediction could depend on: the model's own reach
    (:meth:`SequenceModel.context_reach`), capped by ``data.context_len`` unless the
    state is carried through the split."""
    own = model.context_reach()
    window = math.inf if carry else float(corpus.config.context_len)
    return min(window, math.inf if own is None else float(own))


def failed_result(resolved: ResolvedModel, err: BaseException, run_id: str = "") -> ModelResult:
    return ModelResult(
        label=resolved.label, plugin=resolved.spec.plugin, run_id=run_id, error=describe_error(err)
    )


# ---- comparison ----------------------------------------------------------------------
LEADERBOARD_COLUMNS = (
    "model",
    "plugin",
    "status",
    "test_bpc",
    "gap_bpc",
    "test_ppl",
    "test_acc1",
    "test_acc5",
    "test_exact_match",
    "test_cer",
    "test_accuracy",
    "test_macro_f1",
    "test_log_loss",
    "test_mse",
    "test_mae",
    "val_bpc",
    "val_cer",
    "val_log_loss",
    "val_mse",
    "train_s",
    "scoring",
    "run_id",
    "error",
)
BASELINE = "baseline"
#: dynamic evaluation's test bpc (``train.dynamic_eval``), shown only when it is on
DYNAMIC_COLUMN = "dyn_bpc"
#: the classify task's figures (Scores fields) shown as test_* columns
CLASSIFY = ("accuracy", "macro_f1", "log_loss")
#: the regress task's figures
REGRESS = ("mse", "mae")


def leaderboard(results: list[ModelResult], rank_metric: str = "bpc") -> pd.DataFrame:
    """One row per model: finished ones by the task's test figure (bpc unless the task
    ranks by another, e.g. transduce's cer), then failed ones with their reason."""
    nan = float("nan")

    def figure(scores: Scores | None, name: str) -> float:
        return float(getattr(scores, name)) if scores is not None else nan

    rows = [
        {
            "model": r.label,
            "plugin": r.plugin,
            "status": "failed" if r.failed else "finished",
            **{
                f"test_{name}": figure(r.scores, name)
                for name in (
                    "bpc",
                    "ppl",
                    "acc1",
                    "acc5",
                    "exact_match",
                    "cer",
                    *CLASSIFY,
                    *REGRESS,
                )
            },
            "val_bpc": figure(r.val_scores, "bpc"),
            "val_cer": figure(r.val_scores, "cer"),
            "val_log_loss": figure(r.val_scores, "log_loss"),
            "val_mse": figure(r.val_scores, "mse"),
            "train_s": r.train_seconds,
            "scoring": r.scoring,
            "run_id": r.run_id,
            "error": r.error or "",
        }
        for r in results
    ]
    table = pd.DataFrame(rows, columns=list(LEADERBOARD_COLUMNS))
    if any(r.dynamic_enabled for r in results):  # its own column, never a static figure
        dynamic = [figure(r.dynamic_scores, "bpc") for r in results]
        table.insert(list(table.columns).index("test_bpc") + 1, DYNAMIC_COLUMN, dynamic)
    oracle = oracle_test_bpc(table)
    if oracle is not None:  # each row's excess over the best possible on these positions
        table["gap_bpc"] = table["test_bpc"] - oracle
    if len(table):
        table["_failed"] = table["status"] == "failed"
        table = table.sort_values(["_failed", f"test_{rank_metric}"], kind="stable")
        table = table.drop(columns="_failed").reset_index(drop=True)
    return table


def oracle_test_bpc(table: pd.DataFrame) -> float | None:
    """The oracle row's test bpc (None: the leaderboard has no oracle)."""
    oracle = table[(table["plugin"] == BASELINE) & (table["model"] == ORACLE)]
    return float(oracle["test_bpc"].iloc[0]) if len(oracle) else None


def baseline_results(
    task: Task, corpus: EncodedCorpus, parent: RunRef, extra: Sequence[Baseline] = ()
) -> list[ModelResult]:
    """The task's own reference rows (transduce's copy baseline) and ``extra`` ones (the
    oracle), on the parent run."""
    return [
        ModelResult(
            label=b.label,
            plugin=BASELINE,
            run_id=parent.run_id,
            scores=b.test,
            val_scores=b.val,
            train_seconds=0.0,
            scoring=b.scoring,
        )
        for b in [*task.baselines(corpus), *extra]
    ]


def summary_lines(table: pd.DataFrame, task: Task) -> list[str]:
    """What the leaderboard says in a sentence or two, printed under it and logged."""
    done = table[table["status"] == "finished"]
    lines: list[str] = []
    if task.name == "fill-blank" and len(done):
        both = done[done["scoring"] == "left+right"]
        left = done[done["scoring"] == "left only"]
        if len(both) and len(left):
            b, lo = both.iloc[0], left.iloc[0]
            gain = float(lo["test_bpc"] - b["test_bpc"])
            lines.append(
                f"right context: {b['model']} (left+right) {b['test_bpc']:.4f} bits per blank "
                f"vs {lo['model']} (left only) {lo['test_bpc']:.4f}: the right context buys "
                f"{gain:.4f} bits per blank character"
            )
    models = done[done["plugin"] != BASELINE]
    baselines = done[(done["plugin"] == BASELINE) & (done["model"] != ORACLE)]
    metric = f"test_{task.rank_metric}"
    if len(models) and len(baselines):
        m, b = models.iloc[0], baselines.iloc[0]
        lines.append(
            f"{m['model']} {task.rank_metric} {m[metric]:.4f} vs the {b['model']} baseline's "
            f"{b[metric]:.4f} ({b[metric] - m[metric]:+.4f} in the model's favour)"
        )
    return lines


def leaderboard_markdown(table: pd.DataFrame) -> str:
    """The leaderboard as a markdown table (``leaderboard.md``): the columns that hold
    something, figures to 4 decimals, seconds to 1."""
    shown = [
        c
        for c in table.columns
        if c in ("model", "plugin", "status")
        or table[c].map(lambda v: not (v == "" or (isinstance(v, float) and v != v))).any()
    ]

    def cell(column: str, value: Any) -> str:
        if not isinstance(value, float):
            return str(value).replace("|", "\\|").replace("\n", " ")
        if value != value:
            return ""
        return f"{value:.1f}" if column == "train_s" else f"{value:.4f}"

    text = ("model", "plugin", "status", "scoring", "run_id", "error")
    rule = ["---" if c in text else "---:" for c in shown]
    lines = ["| " + " | ".join(shown) + " |", "|" + "|".join(rule) + "|"]
    for row in table[shown].itertuples(index=False):
        lines.append("| " + " | ".join(cell(c, v) for c, v in zip(shown, row, strict=True)) + " |")
    return "\n".join(lines) + "\n"


def val_bpc_curves(
    tracker: Tracker, results: list[ModelResult], task: Task, corpus: EncodedCorpus | None
) -> dict[str, list[tuple[int, float]]]:
    """Validation bpc per epoch of every finished model, as logged per epoch: from its
    history, else (a model a resume kept) from its run's ``val_bpc`` metric."""
    from pipeline_core.callbacks import epoch_metrics

    ratio = task.tokens_per_char(corpus, "val") if corpus is not None else None
    curves: dict[str, list[tuple[int, float]]] = {}
    for r in results:
        if r.failed:
            continue
        if r.history:
            scores = r.val_scores
            per_char = ratio
            if per_char is None and scores is not None and scores.n_chars:
                per_char = scores.n_tokens / scores.n_chars
            if per_char is None:
                continue
            points = [(h.epoch, epoch_metrics(h, per_char)["val_bpc"]) for h in r.history]
        elif r.run_id and r.plugin != BASELINE:
            points = [p for p in tracker.metric_history(r.run_id, "val_bpc") if p[0] >= 1]
        else:
            continue
        points = [(int(e), float(v)) for e, v in points if np.isfinite(v)]
        if points:
            curves[r.label] = points
    return curves


def log_learning_curves(
    tracker: Tracker,
    parent: RunRef,
    results: list[ModelResult],
    task: Task,
    corpus: EncodedCorpus | None,
) -> None:
    """Every model's validation bpc per epoch in one figure on the parent run."""
    from pipeline_core import plots

    curves = val_bpc_curves(tracker, results, task, corpus)
    if curves:
        fig = plots.learning_curves(curves, "validation bpc per epoch")
        tracker.log_figure(parent, fig, "learning_curves.png")
        plots.close(fig)


CONFIG_ARTIFACT = "config.json"


def process_tags() -> dict[str, str]:
    """Which process runs a comparison (``seqlab runs`` tells a stale RUNNING one)."""
    from pipeline_core.runs import process_tags as tags

    return tags()


def start_comparison(
    config: RunConfig, tracker: Tracker, corpus: EncodedCorpus, tags: dict[str, str]
) -> RunRef:
    """The parent run: the resolved config as params (and as config.json, which a resume
    checks), the data's identity as tags."""
    name = f"compare {dataset_name(config.data.source)}"
    parent = tracker.start_run(
        name,
        experiment_name(config.data, config.tracking, config.task),
        tags={
            **tags,
            "seqlab.data_sha256": corpus.text_sha256,
            **({"seqlab.vectorize_cache": corpus.cache} if corpus.cache else {}),
            "seqlab.kind": "compare",
            "seqlab.task": config.task,
            **process_tags(),
        },
    )
    tracker.log_params(parent, config.model_dump(mode="json"))
    tracker.log_dict(parent, config.model_dump(mode="json"), CONFIG_ARTIFACT)
    sizes = corpus.split_sizes()
    figures: dict[str, float] = {
        "vocab_size": len(corpus.vocab),
        **{f"{k}_tokens": v for k, v in sizes.items()},
        **{f"oov_rate_{k}": v for k, v in corpus.oov_rates().items()},
    }
    floor = source_entropy_bits(config.data)
    if floor is not None:
        figures["source_entropy_rate_bits"] = floor
    figures.update({f"source_optimum_{k}": v for k, v in source_optimum(config.data).items()})
    tracker.log_metrics(parent, figures)
    return parent


def finish_comparison(
    tracker: Tracker,
    parent: RunRef,
    results: list[ModelResult],
    task: str | Task = "next-token",
    corpus: EncodedCorpus | None = None,
) -> tuple[pd.DataFrame, list[str]]:
    """Log the leaderboard (with the task's baselines), its chart, the gradient flow of
    every recurrent model in one figure, and the summary on the parent run and close
    it: FAILED when any model failed (the finished ones are all on the leaderboard)."""
    from pipeline_core import plots

    the_task = as_task(task)
    optimum = known_optimum(the_task, corpus) if corpus is not None else None
    extra = [optimum.baseline] if optimum is not None else []
    rows = [*results, *(baseline_results(the_task, corpus, parent, extra) if corpus else [])]
    if optimum is not None and optimum.metrics():
        tracker.log_metrics(parent, optimum.metrics())
    table = leaderboard(rows, the_task.rank_metric)
    metric = f"test_{the_task.rank_metric}"
    if len(table):
        tracker.log_text(parent, table.to_csv(index=False), "leaderboard.csv")
        tracker.log_text(parent, leaderboard_markdown(table), "leaderboard.md")
    for row in rows:
        if row.plugin == BASELINE and row.scores is not None and row.val_scores is not None:
            tracker.log_metrics(
                parent,
                {
                    **row.val_scores.as_metrics(f"{row.label}_val"),
                    **row.scores.as_metrics(f"{row.label}_test"),
                },
            )
    done = table[table["status"] == "finished"]
    if len(done):
        fig = plots.leaderboard_chart(
            done["model"].tolist(),
            done[metric].tolist(),
            "seqlab leaderboard",
            xlabel=f"{metric.replace('_', ' ')} (lower is better)",
        )
        tracker.log_figure(parent, fig, "leaderboard.png")
        plots.close(fig)
    models = done[done["plugin"] != BASELINE]
    if len(models):
        best = models.iloc[0]
        tracker.set_tags(parent, {"seqlab.best_model": best["model"]})
        tracker.log_metrics(parent, {f"best_{metric}": float(best[metric])})
    curves = {r.label: r.grad_flow for r in results if r.grad_flow}
    if curves:
        fig = plots.gradient_flow(
            {k: np.asarray(v) for k, v in curves.items()}, "gradient flow per time step"
        )
        tracker.log_figure(parent, fig, "gradient_flow.png")
        plots.close(fig)
    log_learning_curves(tracker, parent, results, the_task, corpus)
    lines = summary_lines(table, the_task)
    if corpus is not None:
        lines += optimum_lines(table, the_task, source_optimum(corpus.config))
    if optimum is not None:
        from pipeline_core.story import story_lines

        lines += story_lines(table, optimum, results) or optimum.notes()
    if corpus is not None and the_task.scores_token_stream:  # the data's, not a model's
        from pipeline_core.spelling import oov_note

        lines.append(oov_note(corpus))
    if lines:
        tracker.log_text(parent, "\n".join(lines) + "\n", "summary.txt")
    failed = [r for r in results if r.failed]
    if failed:
        tracker.set_tags(
            parent, {"seqlab.error": "; ".join(f"{r.label}: {r.error}" for r in failed)[:5000]}
        )
    tracker.end(parent, failed=bool(failed))
    return table, lines


def score_checkpoint(
    path: str | Path, data_overrides: dict[str, Any], split: str = "test"
) -> tuple[Scores, DataConfig]:
    """Score a saved model on a corpus prepared as it was trained (the checkpoint holds
    that data config; ``data_overrides`` change the source or anything else).

    A checkpoint of a sequence-level task (``extra.task``: classify, regress) is scored
    by that task with its recorded options, exactly as its comparison scored it
    (accuracy, macro-F1, log-loss / MSE, MAE); any other by the one next-token metric."""
    from pipeline_core.config import validate_model
    from pipeline_core.contract import read_checkpoint
    from pipeline_core.registry import load_checkpoint

    payload = read_checkpoint(path)
    saved = payload.get("extra", {}).get("data", {})
    data = validate_model(DataConfig, {**saved, **data_overrides}, where="data")
    task = saved_task(payload, str(path))
    corpus = encode(clean(ingest(data), data), data)
    model = load_checkpoint(path, vocab=corpus.vocab.tokens)
    carry = saved_scoring(path) == "carried state"
    if task is None:
        return evaluate(model, corpus, split, carry_state=carry), data
    task.prepare(corpus)
    check_saved_task(task, payload, str(path))
    return task.score(model, corpus, split, carry), data


#: the tasks whose checkpoints ``seqlab score`` scores with the task's own metrics
SCORED_BY_TASK = ("classify", "regress")


def saved_task(payload: dict[str, Any], where: str) -> Task | None:
    """The sequence-level task (with its recorded options) a checkpoint was trained
    for, or None for a model scored by next-token bpc."""
    from pipeline_core.serving import checkpoint_task

    record = checkpoint_task(payload, where)
    if record.get("name") not in SCORED_BY_TASK:
        return None
    options = record.get("options")
    return get_task(str(record["name"]), options if isinstance(options, dict) else None)


def check_saved_task(task: Task, payload: dict[str, Any], where: str) -> None:
    """Refuse, in one line, data whose labels (classify) or features per step (regress)
    are not the ones the checkpoint was trained on."""
    from pipeline_core.tasks.classify import ClassifyTask
    from pipeline_core.tasks.regress import RegressTask

    record = payload["extra"]["task"]
    if isinstance(task, ClassifyTask):
        names = list(task.data.names)
        if record.get("labels") is not None and list(record["labels"]) != names:
            raise DataError(
                f"{where}: the model was trained on labels {', '.join(record['labels'])}; "
                f"the data has {', '.join(names)}"
            )
    elif isinstance(task, RegressTask):
        n = task.data.n_features
        if record.get("n_features") is not None and int(record["n_features"]) != n:
            raise DataError(
                f"{where}: the model reads {record['n_features']} features per step; the "
                f"data has {n}"
            )


def saved_scoring(path: str | Path) -> str:
    from pipeline_core.contract import read_checkpoint

    return str(read_checkpoint(path).get("extra", {}).get("scoring", "windows"))
