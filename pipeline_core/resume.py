"""Resuming a killed comparison: what its parent run already holds.

A comparison's parent run stores its resolved config (``config.json``) and data sha256.
``seqlab run --resume PARENT_RUN_ID`` checks both against the new invocation, keeps the
models that finished (their scores are read back from MLflow, nothing is retrained),
continues an interrupted one from its last per-epoch checkpoint in the same child run,
and trains the ones that never started.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from typing import Any

from pipeline_core.config import RunConfig, validate_model
from pipeline_core.errors import ConfigError
from pipeline_core.experiment import CONFIG_ARTIFACT, ModelResult
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


def _scores(metrics: dict[str, float], prefix: str) -> Scores | None:
    names = ("nll", "bpc", "ppl", "acc1", "acc5", "n_tokens", "n_chars")
    if not all(f"{prefix}_{n}" in metrics for n in names):
        return None
    m = {n: metrics[f"{prefix}_{n}"] for n in names}
    return Scores(
        nll=m["nll"],
        bpc=m["bpc"],
        ppl=m["ppl"],
        acc1=m["acc1"],
        acc5=m["acc5"],
        n_tokens=int(m["n_tokens"]),
        n_chars=int(m["n_chars"]),
    )


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
    for child in tracker.child_runs(parent):
        label = child.info.run_name
        if label not in labels:
            continue
        metrics = dict(child.data.metrics)
        test, val = _scores(metrics, "test"), _scores(metrics, "val")
        ref = RunRef(child.info.run_id, child.info.experiment_id)
        if child.info.status == "FINISHED" and test is not None and val is not None:
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
