"""Resuming a killed comparison: what its parent run already holds.

A comparison's parent run stores its resolved config (``config.json``) and data sha256.
``seqlab run --resume PARENT_RUN_ID`` checks both against the new invocation, keeps the
models that finished (their scores are read back from MLflow, nothing is retrained:
every figure a task logs, bpc and its family, transduce's cer and exact match,
classify's accuracy, macro f1 and log-loss, regress's mse and mae),
continues an interrupted one from its last per-epoch checkpoint in the same child run,
and trains the ones that never started.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass, field, fields
from typing import Any

from pipeline_core.config import RunConfig, validate_model
from pipeline_core.errors import ConfigError
from pipeline_core.experiment import CONFIG_ARTIFACT, ModelResult, make_task
from pipeline_core.metrics import Scores
from pipeline_core.tracking import RunRef, Tracker

#: settings that may differ between the killed run and its resume
#: settings a resume may change: where runs are recorded, shown, run and registered
IGNORED_ON_RESUME = ("tracking", "train.progress", "train.num_threads", "execution", "registry")


@dataclass
class ResumePlan:
    """The parent to continue, finished results to keep, runs to continue."""

    parent: RunRef
    data_sha256: str
    finished: dict[str, ModelResult] = field(default_factory=dict)
    unfinished: dict[str, RunRef] = field(default_factory=dict)


def stored_config(tracker: Tracker, parent_id: str) -> RunConfig:
    """The resolved config a comparison was started with; ConfigError if ``parent_id``
    is not a seqlab comparison."""
    run = tracker.run_info(parent_id)
    if run.data.tags.get("seqlab.kind") != "compare":
        raise ConfigError(f"--resume: run {parent_id} is not a seqlab comparison (a parent run)")
    with tempfile.TemporaryDirectory() as tmp:
        path = tracker.download(RunRef(parent_id, run.info.experiment_id), CONFIG_ARTIFACT, tmp)
        if path is None:
            raise ConfigError(f"--resume: run {parent_id} holds no {CONFIG_ARTIFACT}")
        values = json.loads(path.read_text(encoding="utf-8"))
    return validate_model(RunConfig, values, where="stored config")


def _comparable(config: RunConfig) -> dict[str, Any]:
    dumped = config.model_dump(mode="json")
    for dotted in IGNORED_ON_RESUME:
        *parents, leaf = dotted.split(".")
        node = dumped
        for key in parents:
            node = node[key]
        node.pop(leaf, None)
    return dumped


def first_difference(a: Any, b: Any, where: str = "") -> str | None:
    """The dotted key where two JSON-like values first differ, or None."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            found = first_difference(a.get(key), b.get(key), f"{where}.{key}" if where else key)
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            found = first_difference(x, y, f"{where}[{i}]")
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list):
        return f"{where}: {len(a)} entries then, {len(b)} now"
    return None if a == b else f"{where or 'config'}: {a!r} then, {b!r} now"


#: Scores fields that are counts (logged as floats)
COUNTS = ("n_tokens", "n_chars")
#: final figures whose names the per-epoch metrics share (the final one is at step 0)
PER_EPOCH = ("val_nll", "val_bpc")


def _scores(metrics: dict[str, float], prefix: str, rank_metric: str = "bpc") -> Scores | None:
    """The Scores a finished child logged under ``prefix`` (``Scores.as_metrics``), or
    None when its count or its task's rank metric is missing. A figure the task does not
    define was never logged and reads back as NaN, as the model's own Scores had it."""
    if not all(f"{prefix}_{n}" in metrics for n in ("n_tokens", rank_metric)):
        return None
    values: dict[str, Any] = {}
    for f in fields(Scores):
        value = metrics.get(f"{prefix}_{f.name}")
        if f.name in COUNTS:
            values[f.name] = int(value) if value is not None and math.isfinite(value) else 0
        else:
            values[f.name] = float("nan") if value is None else float(value)
    return Scores(**values)


def _final_metrics(tracker: Tracker, child: Any) -> dict[str, float]:
    """The child's metrics, with the final (step 0) value of names an epoch also logs:
    a run's latest value of those is its last epoch's, not the score it ended with."""
    metrics = dict(child.data.metrics)
    for key in PER_EPOCH:
        if key in metrics:
            at_zero = [v for step, v in tracker.metric_history(child.info.run_id, key) if step == 0]
            if at_zero:
                metrics[key] = at_zero[-1]
    return metrics


def plan_resume(tracker: Tracker, parent_id: str, config: RunConfig) -> ResumePlan:
    """Check that ``config`` is the one the comparison ran with, and sort its children."""
    saved = stored_config(tracker, parent_id)
    diff = first_difference(_comparable(saved), _comparable(config))
    if diff is not None:
        raise ConfigError(f"--resume: run {parent_id} was made with another config ({diff})")
    run = tracker.run_info(parent_id)
    parent = RunRef(parent_id, run.info.experiment_id)
    plan = ResumePlan(parent, run.data.tags.get("seqlab.data_sha256", ""))
    labels = {spec.label for spec in config.models}
    rank_metric = make_task(config).rank_metric  # what a finished child must have logged
    for child in tracker.child_runs(parent):
        label = child.info.run_name
        if label not in labels:
            continue
        finished = child.info.status == "FINISHED"
        metrics = _final_metrics(tracker, child) if finished else dict(child.data.metrics)
        test = _scores(metrics, "test", rank_metric)
        val = _scores(metrics, "val", rank_metric)
        ref = RunRef(child.info.run_id, child.info.experiment_id)
        if finished and test is not None and val is not None:
            plan.finished[label] = ModelResult(
                label=label,
                plugin=child.data.tags.get("seqlab.plugin", ""),
                run_id=ref.run_id,
                scores=test,
                val_scores=val,
                train_seconds=float(metrics.get("train_seconds", float("nan"))),
                scoring=child.data.tags.get("seqlab.scoring", ""),
            )
        elif label not in plan.finished:
            plan.unfinished[label] = ref
    return plan


def check_data(plan: ResumePlan, parent_id: str, sha256: str) -> None:
    """The data must be the very text the comparison started on."""
    if plan.data_sha256 and plan.data_sha256 != sha256:
        raise ConfigError(
            f"--resume: run {parent_id} was made on other data (sha256 "
            f"{plan.data_sha256[:12]}… then, {sha256[:12]}… now)"
        )
