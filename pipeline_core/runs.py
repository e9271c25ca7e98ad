"""Recent comparisons in an MLflow store, and closing the ones a killed process left.

A comparison is a parent run tagged ``seqlab.kind=compare``; ``start_comparison`` tags
it with the process that runs it (``seqlab.pid``, ``seqlab.host``). A RUNNING
comparison whose process is gone from this host was killed (``kill -9``, a crash, a
power cut): it is reported as stale, and :func:`close_comparison` marks it and its
RUNNING model runs KILLED. ``seqlab run --resume ID`` continues one instead.
MLflow is reached through :class:`~pipeline_core.tracking.Tracker` only.
"""

from __future__ import annotations

import json
import math
import os
import socket
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pipeline_core.errors import ConfigError
from pipeline_core.tracking import PARENT_TAG, RunRef, Tracker

KIND_FILTER = "tags.`seqlab.kind` = 'compare'"
STALE = "RUNNING (stale: process gone)"


def store_missing(uri: str) -> bool:
    """A SQLite store that does not exist yet (listing it must not create it)."""
    return uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists()


def process_started(pid: int) -> str | None:
    """When ``pid`` started (clock ticks after boot, from /proc), or None where there is
    no /proc: with the pid it names one process, so a reused pid is not mistaken for it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else None


def process_tags() -> dict[str, str]:
    """The tags that name the process running a comparison."""
    pid = os.getpid()
    tags = {"seqlab.pid": str(pid), "seqlab.host": socket.gethostname()}
    started = process_started(pid)
    if started is not None:
        tags["seqlab.pid_started"] = started
    return tags


def process_alive(pid: int, started: str | None = None) -> bool:
    """Whether process ``pid`` (started at ``started``, when known) lives on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if started is None:
        return True
    now = process_started(pid)
    return now is None or now == started  # another start time: the pid was reused


def liveness(tags: dict[str, str]) -> str:
    """``alive``, ``gone``, ``elsewhere`` (another host: cannot tell) or ``unknown``
    (no process recorded: a comparison from before seqlab recorded it)."""
    pid, host = tags.get("seqlab.pid", ""), tags.get("seqlab.host", "")
    if not pid.isdigit() or not host:
        return "unknown"
    if host != socket.gethostname():
        return "elsewhere"
    alive = process_alive(int(pid), tags.get("seqlab.pid_started"))
    return "alive" if alive else "gone"


@dataclass
class Comparison:
    """One line of ``seqlab runs``."""

    run_id: str
    experiment: str
    start_time: str
    status: str
    models_finished: int
    models_total: int
    best_model: str | None
    best_test_bpc: float | None
    pid: int | None
    host: str | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_status(run: Any) -> str:
    """The run's MLflow status, with a RUNNING one qualified by its process."""
    status = str(run.info.status)
    if status != "RUNNING":
        return status
    tags = dict(run.data.tags)
    state = liveness(tags)
    if state == "gone":
        return STALE
    if state == "elsewhere":
        return f"RUNNING (on host {tags['seqlab.host']})"
    return "RUNNING" if state == "alive" else "RUNNING (process unknown)"


def _models_total(run: Any, children: list[Any]) -> int:
    try:
        models = json.loads(run.data.params.get("models", ""))
    except ValueError:
        models = None
    return len(models) if isinstance(models, list) else len(children)


def _best(run: Any, children: list[Any]) -> tuple[str | None, float | None]:
    name = run.data.tags.get("seqlab.best_model")
    bpc = run.data.metrics.get("best_test_bpc")
    if name and bpc is not None:
        return name, float(bpc)
    scored = [
        (float(c.data.metrics["test_bpc"]), c.info.run_name)
        for c in children
        if c.info.status == "FINISHED"
        and "test_bpc" in c.data.metrics
        and math.isfinite(c.data.metrics["test_bpc"])
    ]
    if not scored:
        return None, None
    best_bpc, best_name = min(scored)
    return best_name, best_bpc


def _started(ms: int | None) -> str:
    if not ms:
        return ""
    return datetime.fromtimestamp(ms / 1000).astimezone().isoformat(timespec="seconds")


def list_comparisons(tracker: Tracker, limit: int = 20) -> list[Comparison]:
    """The ``limit`` most recent comparisons across every experiment, newest first."""
    experiments = {
        str(e.experiment_id): e.name for e in tracker.client.search_experiments(max_results=1000)
    }
    if not experiments:
        return []
    parents = tracker.client.search_runs(
        list(experiments),
        filter_string=KIND_FILTER,
        order_by=["attributes.start_time DESC"],
        max_results=limit,
    )
    rows = []
    for run in parents:
        children = tracker.child_runs(RunRef(run.info.run_id, run.info.experiment_id))
        best_model, best_bpc = _best(run, children)
        tags = run.data.tags
        pid = tags.get("seqlab.pid", "")
        rows.append(
            Comparison(
                run_id=run.info.run_id,
                experiment=experiments.get(str(run.info.experiment_id), ""),
                start_time=_started(run.info.start_time),
                status=run_status(run),
                models_finished=sum(c.info.status == "FINISHED" for c in children),
                models_total=_models_total(run, children),
                best_model=best_model,
                best_test_bpc=best_bpc,
                pid=int(pid) if pid.isdigit() else None,
                host=tags.get("seqlab.host") or None,
            )
        )
    return rows


def close_comparison(tracker: Tracker, run_id: str) -> list[str]:
    """Mark a stale comparison and its RUNNING model runs KILLED; the ids of the model
    runs closed. Refused (one line) unless it is a RUNNING comparison whose process is
    gone."""
    try:
        run = tracker.client.get_run(run_id)
    except Exception:
        raise ConfigError(f"--close: no MLflow run with id {run_id!r} in {tracker.uri}") from None
    tags = dict(run.data.tags)
    if tags.get("seqlab.kind") != "compare":
        owner = tags.get(PARENT_TAG)
        hint = f" (it is a model run of comparison {owner})" if owner else ""
        raise ConfigError(f"--close: run {run_id} is not a seqlab comparison{hint}")
    if run.info.status != "RUNNING":
        raise ConfigError(
            f"--close: comparison {run_id} is {run.info.status}, not RUNNING: nothing to close"
        )
    state = liveness(tags)
    if state == "alive":
        pid = tags["seqlab.pid"]
        raise ConfigError(
            f"--close: comparison {run_id} is still running (process {pid} on this host); "
            f"stop it first (Ctrl-C, or kill {pid})"
        )
    if state == "elsewhere":
        raise ConfigError(
            f"--close: comparison {run_id} runs on host {tags['seqlab.host']}, where this "
            "host cannot tell whether it is still alive; close it there"
        )
    parent = RunRef(run_id, run.info.experiment_id)
    closed = []
    for child in tracker.child_runs(parent):
        if child.info.status == "RUNNING":
            tracker.kill(RunRef(child.info.run_id, child.info.experiment_id))
            closed.append(child.info.run_id)
    tracker.kill(parent)
    return closed
