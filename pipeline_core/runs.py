"""Recent comparisons and sweeps in an MLflow store, and closing the ones a killed
process left.

A comparison is a parent run tagged ``seqlab.kind=compare``, a sweep one tagged
``seqlab.kind=sweep`` (its children are trials); both are tagged with the process that
runs them (``seqlab.pid``, ``seqlab.host``). A RUNNING parent whose process is gone from
this host was killed (``kill -9``, a crash, a power cut): it is reported as stale, and
:func:`close_run` marks it and its RUNNING child runs KILLED. ``seqlab run --resume ID``
continues a comparison instead (a sweep cannot be resumed).
MLflow is reached through :class:`~pipeline_core.tracking.Tracker` only.
"""

from __future__ import annotations

import json
import math
import os
import socket
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from pipeline_core.errors import ConfigError
from pipeline_core.tracking import PARENT_TAG, RunRef, Tracker

KINDS = ("compare", "sweep")
NOUNS = {"compare": "comparison", "sweep": "sweep"}
COMPARE_METRIC = "test_bpc"
STALE = "RUNNING (stale: process gone)"
T = TypeVar("T")


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
    """The tags that name the process running a comparison or a sweep."""
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
    """One line of ``seqlab runs``: a comparison or, with ``kind="sweep"``, a sweep.

    For a sweep ``models_*`` count its trials, ``best_trial`` is 1-based (as ``seqlab
    sweep`` prints it) and ``best_value`` is a validation figure, so ``best_test_bpc``
    (a test figure) stays None; ``best_metric`` names what ``best_value`` is."""

    run_id: str
    kind: str
    experiment: str
    start_time: str
    status: str
    models_finished: int
    models_total: int
    best_model: str | None
    best_test_bpc: float | None
    best_trial: int | None
    best_metric: str | None
    best_value: float | None
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


def _trials_total(run: Any, children: list[Any]) -> int:
    trials = run.data.tags.get("seqlab.trials", "")
    return int(trials) if trials.isdigit() else len(children)


def _best_trial(run: Any, children: list[Any]) -> tuple[int | None, float | None]:
    """The best trial (0-based, as optuna numbers it) and its figure: from the parent
    once the sweep finished, else the best COMPLETE trial so far (a sweep still running
    or killed)."""
    metric = run.data.tags.get("seqlab.metric", "")
    number = run.data.tags.get("seqlab.best_trial", "")
    value = run.data.metrics.get(f"best_{metric}")
    if number.isdigit() and value is not None:
        return int(number), float(value)

    def complete(child: Any) -> bool:
        tags = child.data.tags
        return (
            tags.get("seqlab.trial_state") == "COMPLETE" and tags.get("seqlab.trial", "").isdigit()
        )

    best_value, best_number = _lowest(
        children, "trial_value", lambda c: int(c.data.tags["seqlab.trial"]), complete
    )
    return best_number, best_value


def _best(run: Any, children: list[Any]) -> tuple[str | None, float | None]:
    name = run.data.tags.get("seqlab.best_model")
    bpc = run.data.metrics.get("best_test_bpc")
    if name and bpc is not None:
        return name, float(bpc)
    best_bpc, best_name = _lowest(children, "test_bpc", lambda c: str(c.info.run_name))
    return best_name, best_bpc


def _lowest(
    children: list[Any],
    metric: str,
    name_of: Callable[[Any], T],
    keep: Callable[[Any], bool] = lambda child: True,
) -> tuple[float | None, T | None]:
    """The lowest finite ``metric`` of the FINISHED children ``keep`` accepts, and what
    ``name_of`` calls its run: the best so far of a comparison or sweep that did not
    record its own."""
    scored = [
        (float(c.data.metrics[metric]), name_of(c))
        for c in children
        if c.info.status == "FINISHED"
        and keep(c)
        and metric in c.data.metrics
        and math.isfinite(c.data.metrics[metric])
    ]
    if not scored:
        return None, None
    value, name = min(scored, key=lambda pair: (pair[0], str(pair[1])))  # ties: by name
    return value, name


def _started(ms: int | None) -> str:
    if not ms:
        return ""
    return datetime.fromtimestamp(ms / 1000).astimezone().isoformat(timespec="seconds")


def _row(run: Any, experiment: str, children: list[Any]) -> Comparison:
    tags = run.data.tags
    kind = tags.get("seqlab.kind", "")
    pid = tags.get("seqlab.pid", "")
    best_model: str | None = None
    best_bpc: float | None = None
    best_trial: int | None = None
    metric: str | None = COMPARE_METRIC
    if kind == "sweep":
        metric = tags.get("seqlab.metric") or None
        number, value = _best_trial(run, children)
        best_trial = None if number is None else number + 1  # as `seqlab sweep` prints it
        total = _trials_total(run, children)
    else:
        best_model, best_bpc = _best(run, children)
        value = best_bpc
        total = _models_total(run, children)
    return Comparison(
        run_id=run.info.run_id,
        kind=kind,
        experiment=experiment,
        start_time=_started(run.info.start_time),
        status=run_status(run),
        models_finished=sum(c.info.status == "FINISHED" for c in children),
        models_total=total,
        best_model=best_model,
        best_test_bpc=best_bpc,
        best_trial=best_trial,
        best_metric=metric,
        best_value=value,
        pid=int(pid) if pid.isdigit() else None,
        host=tags.get("seqlab.host") or None,
    )


def list_comparisons(tracker: Tracker, limit: int = 20) -> list[Comparison]:
    """The ``limit`` most recent comparisons and sweeps across every experiment, newest
    first. One search per kind, merged: an ``IN`` filter on a tag is not something every
    MLflow store is known to take."""
    experiments = {
        str(e.experiment_id): e.name for e in tracker.client.search_experiments(max_results=1000)
    }
    if not experiments:
        return []
    parents = [
        run
        for kind in KINDS
        for run in tracker.client.search_runs(
            list(experiments),
            filter_string=f"tags.`seqlab.kind` = '{kind}'",
            order_by=["attributes.start_time DESC"],
            max_results=limit,
        )
    ]
    parents.sort(key=lambda run: run.info.start_time or 0, reverse=True)
    return [
        _row(
            run,
            experiments.get(str(run.info.experiment_id), ""),
            tracker.child_runs(RunRef(run.info.run_id, run.info.experiment_id)),
        )
        for run in parents[:limit]
    ]


def close_comparison(tracker: Tracker, run_id: str) -> list[str]:
    """:func:`close_run`, the ids of the child runs closed only (what callers from before
    sweeps were listed expect)."""
    return close_run(tracker, run_id)[1]


def close_run(tracker: Tracker, run_id: str) -> tuple[str, list[str]]:
    """Mark a stale comparison or sweep and its RUNNING child runs (models, trials)
    KILLED; its kind and the ids of the child runs closed. Refused (one line) unless it
    is a RUNNING comparison or sweep whose process is gone."""
    try:
        run = tracker.client.get_run(run_id)
    except Exception:
        raise ConfigError(f"--close: no MLflow run with id {run_id!r} in {tracker.uri}") from None
    tags = dict(run.data.tags)
    kind = tags.get("seqlab.kind", "")
    if kind not in KINDS:
        owner = tags.get(PARENT_TAG)
        if owner and kind == "trial":
            what = f"a seqlab sweep (it is a trial run of sweep {owner})"
        elif owner:
            what = f"a seqlab comparison (it is a model run of comparison {owner})"
        else:
            what = "a seqlab comparison or sweep"
        raise ConfigError(f"--close: run {run_id} is not {what}")
    noun = NOUNS[kind]
    if run.info.status != "RUNNING":
        raise ConfigError(
            f"--close: {noun} {run_id} is {run.info.status}, not RUNNING: nothing to close"
        )
    state = liveness(tags)
    if state == "alive":
        pid = tags["seqlab.pid"]
        raise ConfigError(
            f"--close: {noun} {run_id} is still running (process {pid} on this host); "
            f"stop it first (Ctrl-C, or kill {pid})"
        )
    if state == "elsewhere":
        raise ConfigError(
            f"--close: {noun} {run_id} runs on host {tags['seqlab.host']}, where this "
            "host cannot tell whether it is still alive; close it there"
        )
    parent = RunRef(run_id, run.info.experiment_id)
    closed = []
    for child in tracker.child_runs(parent):
        if child.info.status == "RUNNING":
            tracker.kill(RunRef(child.info.run_id, child.info.experiment_id))
            closed.append(child.info.run_id)
    tracker.kill(parent)
    return kind, closed
