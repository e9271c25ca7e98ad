"""Scoring a trained model is pure (:func:`score_model` -> :class:`ModelReport`);
recording it is the edge (:func:`record` writes the report to its MLflow run)."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipeline_core.contract import EpochRecord, SequenceModel
from pipeline_core.metrics import Scores
from pipeline_core.tasks import Task, as_task
from pipeline_core.vectorize import EncodedCorpus, detokenize

if TYPE_CHECKING:
    from pipeline_core.config import TrackingConfig
    from pipeline_core.dynamic import DynamicSettings
    from pipeline_core.tracking import RunRef, Tracker

SAMPLE_TEMPERATURES = (0.0, 0.5, 1.0)
CARRIED = "carried state"
WINDOWS = "windows"


@dataclass
class ModelReport:
    """Everything one model's evaluation produced, before anything is recorded."""

    label: str
    plugin: str
    config: dict[str, object]
    val_scores: Scores
    test_scores: Scores
    scoring: str
    history: list[EpochRecord]
    samples: dict[str, str] = field(default_factory=dict)
    #: the task's record for the checkpoint's ``extra.task`` (:meth:`Task.checkpoint_extra`)
    task: dict[str, object] = field(default_factory=dict)
    #: dynamic evaluation was asked for (``train.dynamic_eval``); its scores, None when
    #: the plugin cannot adapt (n/a) or it was not asked for
    dynamic_enabled: bool = False
    dynamic_scores: Scores | None = None


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


def score_model(
    model: SequenceModel,
    corpus: EncodedCorpus,
    task: str | Task,
    carry_state: bool,
    *,
    label: str,
    plugin: str,
    config: dict[str, object],
    history: list[EpochRecord],
    tracking: TrackingConfig,
    seed: int = 0,
    dynamic: DynamicSettings | None = None,
) -> ModelReport:
    """Val and test scores under the task's one metric, and samples; with ``dynamic``
    (next-token only), the test split scored dynamically after them, on a copy of the
    model (:mod:`pipeline_core.dynamic`). Records nothing."""
    the_task = as_task(task)
    the_task.prepare(corpus)
    val = the_task.score(model, corpus, "val", carry_state)
    test = the_task.score(model, corpus, "test", carry_state)
    dynamic_scores = None
    if dynamic is not None and the_task.name == "next-token":
        from pipeline_core.dynamic import evaluate_dynamic

        dynamic_scores = evaluate_dynamic(model, corpus, dynamic, carry_state)
    samples = generate_samples(model, corpus, tracking.sample_len, seed) if tracking.samples else {}
    return ModelReport(
        label=label,
        plugin=plugin,
        config=config,
        val_scores=val,
        test_scores=test,
        scoring=the_task.scoring_label(type(model), carry_state),
        history=history,
        samples=dict(list(samples.items())[: tracking.samples]),
        task=the_task.checkpoint_extra(),
        dynamic_enabled=dynamic is not None,
        dynamic_scores=dynamic_scores,
    )


def record(
    tracker: Tracker, run: RunRef, report: ModelReport, model: SequenceModel, corpus: EncodedCorpus
) -> None:
    """Write a report to its run: metrics, samples, vocabulary, config, learning curve,
    and the model's checkpoint under ``model/``."""
    from pipeline_core import plots

    tracker.log_metrics(
        run, {**report.val_scores.as_metrics("val"), **report.test_scores.as_metrics("test")}
    )
    tracker.set_tags(run, {"seqlab.scoring": report.scoring})
    if report.dynamic_scores is not None:
        from pipeline_core.dynamic import dynamic_metrics

        tracker.log_metrics(run, dynamic_metrics(report.dynamic_scores))
    elif report.dynamic_enabled:
        tracker.set_tags(run, {"seqlab.dynamic_eval": "n/a (the plugin cannot adapt)"})
    tracker.log_text(
        run, "\n\n".join(f"# {k}\n{v}" for k, v in report.samples.items()), "samples.txt"
    )
    tracker.log_text(run, corpus.vocab.to_json(), "vocab.json")
    tracker.log_dict(run, {"plugin": report.plugin, "config": report.config}, "model_config.json")
    fig = plots.learning_curve(report.history, report.label)
    tracker.log_figure(run, fig, "learning_curve.png")
    plots.close(fig)
    from pipeline_core.serving import save_pyfunc_model

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = model.save(
            Path(tmp) / "checkpoint.pt",
            vocab=corpus.vocab.tokens,
            plugin=report.plugin,
            extra={
                "data": corpus.config.model_dump(mode="json"),
                "scoring": report.scoring,
                **({"task": report.task} if report.task else {}),
            },
        )
        start = corpus.span("test")[0]
        example = corpus.ids[start : start + corpus.config.context_len]
        folder = save_pyfunc_model(
            ckpt, Path(tmp) / "model", detokenize(corpus.vocab.decode(example), corpus.level)
        )
        tracker.log_artifacts(run, folder, "model")
