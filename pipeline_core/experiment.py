"""The stages of a comparison as plain functions; flows/ wires them into Prefect tasks.

ingest -> clean -> vectorize (cached) -> train each model -> evaluate each on the same
test positions -> leaderboard. MLflow is reached only through :class:`Tracker`, with run
ids passed explicitly.
"""

from __future__ import annotations

import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline_core.config import DataConfig, ModelSpec, RunConfig, TrackingConfig, TrainConfig
from pipeline_core.contract import EpochRecord, FitData, SequenceModel
from pipeline_core.errors import ConfigError
from pipeline_core.metrics import Scores, evaluate
from pipeline_core.sources import synthetic_metadata
from pipeline_core.tracking import RunRef, Tracker
from pipeline_core.vectorize import EncodedCorpus, corpus_text, detokenize, vectorize_cached

TASK = "next-token"
SAMPLE_TEMPERATURES = (0.0, 0.5, 1.0)


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


def experiment_name(data: DataConfig, tracking: TrackingConfig) -> str:
    return tracking.experiment or f"seqlab/{dataset_name(data.source)}/{TASK}"


def source_entropy_bits(data: DataConfig) -> float | None:
    """The exact entropy rate of a synthetic character source: the best bpc possible."""
    known = synthetic_metadata(data.source)
    if known is None or "entropy_rate_bits" not in known or data.level != "char":
        return None
    return float(known["entropy_rate_bits"])


# ---- data stages ---------------------------------------------------------------------
def ingest(data: DataConfig) -> pd.DataFrame:
    from pipeline_core.sources import load_documents

    return load_documents(data.source, errors=data.errors)


def clean(docs: pd.DataFrame, data: DataConfig) -> pd.DataFrame:
    from pipeline_core.cleaning import clean_documents

    return clean_documents(docs, data.clean)


def encode(docs: pd.DataFrame, data: DataConfig) -> EncodedCorpus:
    """The cleaned documents as one encoded corpus, cached on text hash + config."""
    corpus, _ = vectorize_cached(corpus_text(docs["text"].tolist()), data)
    return corpus


# ---- models --------------------------------------------------------------------------
@dataclass(frozen=True)
class ResolvedModel:
    """A model spec whose plugin was found and whose config validated."""

    spec: ModelSpec
    plugin_cls: type[SequenceModel]
    config: dict[str, Any]
    version: str


def resolve_models(specs: list[ModelSpec]) -> list[ResolvedModel]:
    """Find every plugin and validate every config *before* anything is trained."""
    from pipeline_core.registry import load_plugin, plugin_info

    labels = [s.label for s in specs]
    dupes = sorted({lbl for lbl in labels if labels.count(lbl) > 1})
    if dupes:
        raise ConfigError(f"models: duplicate model name(s) {', '.join(dupes)}; give each a name")
    if not specs:
        raise ConfigError("models: at least one model is needed")
    resolved = []
    for spec in specs:
        cls = load_plugin(spec.plugin)
        try:
            config = cls.make_config(spec.params)
        except ConfigError as err:
            raise ConfigError(f"models.{spec.label}: {err}") from None
        version = plugin_info(spec.plugin).version
        resolved.append(ResolvedModel(spec, cls, config.model_dump(mode="json"), version))
    return resolved


@dataclass
class TrainedModel:
    """A fitted model and where its run is recorded."""

    resolved: ResolvedModel
    model: SequenceModel
    history: list[EpochRecord]
    train_seconds: float
    run: RunRef


@dataclass
class ModelResult:
    """One leaderboard row and its run."""

    label: str
    plugin: str
    scores: Scores
    val_scores: Scores
    train_seconds: float
    run_id: str
    samples: dict[str, str] = field(default_factory=dict)


def fit_data(corpus: EncodedCorpus) -> FitData:
    return FitData(
        train=corpus.train,
        val=corpus.val,
        vocab_size=len(corpus.vocab),
        context_len=corpus.config.context_len,
        step=corpus.config.step,
    )


def epoch_metrics(record: EpochRecord, tokens_per_char: float) -> dict[str, float]:
    return {
        "train_nll": record.train_nll,
        "val_nll": record.val_nll,
        "val_bpc": record.val_nll / np.log(2) * tokens_per_char,
        "grad_norm": record.grad_norm,
        "tokens_per_s": record.tokens_per_s,
        "epoch_seconds": record.seconds,
    }


def train_model(
    resolved: ResolvedModel,
    corpus: EncodedCorpus,
    train: TrainConfig,
    tracker: Tracker,
    parent: RunRef,
    tags: dict[str, str],
) -> TrainedModel:
    """Start the model's child run, fit it (logging each epoch), and return it."""
    spec = resolved.spec
    run = tracker.start_run(
        spec.label,
        tags={
            **tags,
            "seqlab.plugin": spec.plugin,
            "seqlab.plugin_version": resolved.version,
            "seqlab.data_sha256": corpus.text_sha256,
        },
        parent=parent,
    )
    tracker.log_params(
        run,
        {
            "plugin": spec.plugin,
            "model": resolved.config,
            "train": train.model_dump(mode="json"),
            "data": corpus.config.model_dump(mode="json"),
            "vocab_size": len(corpus.vocab),
        },
    )
    val_tokens_per_char = len(corpus.val) / max(corpus.split_chars["val"], 1)
    try:
        model = resolved.plugin_cls.create(len(corpus.vocab), resolved.config, seed=train.seed)
        started = time.perf_counter()
        history = model.fit(
            fit_data(corpus),
            train,
            on_epoch=lambda r: tracker.log_metrics(
                run, epoch_metrics(r, val_tokens_per_char), step=r.epoch
            ),
        )
        seconds = time.perf_counter() - started
    except BaseException as err:
        tracker.set_tags(run, {"seqlab.error": str(err)[:5000]})
        tracker.end(run, failed=True)
        raise
    tracker.log_metrics(run, {"train_seconds": seconds})
    return TrainedModel(resolved, model, history, seconds, run)


def generate_samples(
    model: SequenceModel, corpus: EncodedCorpus, n_tokens: int, seed: int
) -> dict[str, str]:
    """Continuations of the test split's first context at a few temperatures."""
    from pipeline_core.generation import generate

    ctx = corpus.config.context_len
    start = corpus.span("test")[0]
    prompt = corpus.ids[start : start + ctx].astype(np.int64)
    prompt_text = detokenize(corpus.vocab.decode(prompt), corpus.level)
    samples = {}
    for temp in SAMPLE_TEMPERATURES:
        ids = generate(model, prompt, n_tokens, ctx, temperature=temp, seed=seed)
        text = detokenize(corpus.vocab.decode(ids), corpus.level)
        samples[f"temperature {temp}"] = f"[{prompt_text}]{text}"
    return samples


def evaluate_model(
    trained: TrainedModel,
    corpus: EncodedCorpus,
    tracker: Tracker,
    tracking: TrackingConfig,
    seed: int = 0,
) -> ModelResult:
    """Score on val and test, log metrics and artifacts, and close the child run."""
    from pipeline_core import plots

    run, label = trained.run, trained.resolved.spec.label
    try:
        val_scores = evaluate(trained.model, corpus, "val")
        scores = evaluate(trained.model, corpus, "test")
        tracker.log_metrics(run, {**val_scores.as_metrics("val"), **scores.as_metrics("test")})
        samples = (
            generate_samples(trained.model, corpus, tracking.sample_len, seed)
            if tracking.samples
            else {}
        )
        shown = dict(list(samples.items())[: tracking.samples])
        tracker.log_text(run, "\n\n".join(f"# {k}\n{v}" for k, v in shown.items()), "samples.txt")
        tracker.log_text(run, corpus.vocab.to_json(), "vocab.json")
        tracker.log_dict(
            run,
            {"plugin": trained.resolved.spec.plugin, "config": trained.resolved.config},
            "model_config.json",
        )
        fig = plots.learning_curve(trained.history, label)
        tracker.log_figure(run, fig, "learning_curve.png")
        plots.close(fig)
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = trained.model.save(
                Path(tmp) / "checkpoint.pt",
                vocab=corpus.vocab.tokens,
                plugin=trained.resolved.spec.plugin,
                extra={"data": corpus.config.model_dump(mode="json")},
            )
            tracker.log_file(run, ckpt, "model")
    except BaseException as err:
        tracker.set_tags(run, {"seqlab.error": str(err)[:5000]})
        tracker.end(run, failed=True)
        raise
    tracker.end(run)
    return ModelResult(
        label=label,
        plugin=trained.resolved.spec.plugin,
        scores=scores,
        val_scores=val_scores,
        train_seconds=trained.train_seconds,
        run_id=run.run_id,
        samples=shown,
    )


# ---- comparison ----------------------------------------------------------------------
def leaderboard(results: list[ModelResult]) -> pd.DataFrame:
    """One row per model, best test bpc first."""
    rows = [
        {
            "model": r.label,
            "plugin": r.plugin,
            "test_bpc": r.scores.bpc,
            "test_ppl": r.scores.ppl,
            "test_acc1": r.scores.acc1,
            "val_bpc": r.val_scores.bpc,
            "train_s": r.train_seconds,
            "run_id": r.run_id,
        }
        for r in results
    ]
    table = pd.DataFrame(rows)
    if len(table):
        table = table.sort_values("test_bpc", kind="stable").reset_index(drop=True)
    return table


def start_comparison(
    config: RunConfig, tracker: Tracker, corpus: EncodedCorpus, tags: dict[str, str]
) -> RunRef:
    """The parent run: the resolved config as params, the data's identity as tags."""
    name = f"compare {dataset_name(config.data.source)}"
    parent = tracker.start_run(
        name,
        experiment_name(config.data, config.tracking),
        tags={**tags, "seqlab.data_sha256": corpus.text_sha256, "seqlab.kind": "compare"},
    )
    tracker.log_params(parent, config.model_dump(mode="json"))
    sizes = corpus.split_sizes()
    figures: dict[str, float] = {
        "vocab_size": len(corpus.vocab),
        **{f"{k}_tokens": v for k, v in sizes.items()},
    }
    floor = source_entropy_bits(config.data)
    if floor is not None:
        figures["source_entropy_rate_bits"] = floor
    tracker.log_metrics(parent, figures)
    return parent


def finish_comparison(
    tracker: Tracker, parent: RunRef, results: list[ModelResult], failed: bool = False
) -> pd.DataFrame:
    """Log the leaderboard table and chart on the parent run and close it."""
    from pipeline_core import plots

    table = leaderboard(results)
    if len(table):
        tracker.log_text(parent, table.to_csv(index=False), "leaderboard.csv")
        fig = plots.leaderboard_chart(
            table["model"].tolist(), table["test_bpc"].tolist(), "seqlab leaderboard"
        )
        tracker.log_figure(parent, fig, "leaderboard.png")
        plots.close(fig)
        best = table.iloc[0]
        tracker.set_tags(parent, {"seqlab.best_model": best["model"]})
        tracker.log_metrics(parent, {"best_test_bpc": float(best["test_bpc"])})
    tracker.end(parent, failed=failed)
    return table


def score_checkpoint(
    path: str | Path, data_overrides: dict[str, Any], split: str = "test"
) -> tuple[Scores, DataConfig]:
    """Score a saved model on a corpus prepared as it was trained (the checkpoint holds
    that data config; ``data_overrides`` change the source or anything else)."""
    from pipeline_core.config import validate_model
    from pipeline_core.contract import read_checkpoint
    from pipeline_core.registry import load_checkpoint

    saved = read_checkpoint(path).get("extra", {}).get("data", {})
    data = validate_model(DataConfig, {**saved, **data_overrides}, where="data")
    corpus = encode(clean(ingest(data), data), data)
    model = load_checkpoint(path, vocab=corpus.vocab.tokens)
    return evaluate(model, corpus, split), data
