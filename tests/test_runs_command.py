"""``seqlab runs``: recent comparisons and sweeps with status and best model (trial); a
RUNNING one whose process is gone is stale and ``--close`` ends it (and its running
models or trials) as KILLED, refusing one whose process still lives."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline_core.errors import ConfigError
from pipeline_core.runs import (
    STALE,
    close_comparison,
    close_run,
    list_comparisons,
    liveness,
    process_started,
    process_tags,
)
from pipeline_core.sweep_record import SweepResult, finish_sweep
from pipeline_core.sweep_trial import (
    COMPLETE,
    FAILED,
    PRUNED,
    STATE_TAG,
    TrialOutcome,
    TrialSpec,
    trial_tags,
)
from pipeline_core.tracking import RunRef, Tracker
from tests.conftest import assert_one_line_error, run_cli


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.fixture(scope="module")
def live_process() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(["sleep", "600"])
    yield proc
    proc.kill()
    proc.wait()


def comparison(
    tracker: Tracker,
    experiment: str,
    status: str,
    children: dict[str, tuple[str, float | None]],
    pid_tags: dict[str, str],
    best: tuple[str, float] | None = None,
) -> RunRef:
    """A comparison as ``seqlab run`` records one: a parent tagged seqlab.kind=compare,
    its config's model list as a param, one child run per model."""
    parent = tracker.start_run(
        "compare test", experiment, tags={"seqlab.kind": "compare", **pid_tags}
    )
    tracker.log_params(parent, {"models": [{"plugin": name} for name in children]})
    for name, (child_status, bpc) in children.items():
        child = tracker.start_run(name, parent=parent)
        if bpc is not None:
            tracker.log_metrics(child, {"test_bpc": bpc})
        if child_status != "RUNNING":
            tracker.client.set_terminated(child.run_id, child_status)
    if best is not None:
        tracker.set_tags(parent, {"seqlab.best_model": best[0]})
        tracker.log_metrics(parent, {"best_test_bpc": best[1]})
    if status != "RUNNING":
        tracker.client.set_terminated(parent.run_id, status)
    return parent


@pytest.fixture(scope="module")
def store(
    tmp_path_factory: pytest.TempPathFactory, live_process: subprocess.Popen[bytes]
) -> dict[str, str]:
    """One store, four comparisons: finished, stale (killed), alive, and one recorded
    before seqlab tagged its process."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('runs') / 'mlruns.db'}"
    tracker = Tracker(uri)
    host = socket.gethostname()
    ids = {"uri": uri}
    finished = comparison(
        tracker, "seqlab/a/next-token", "FINISHED",
        {"ngram": ("FINISHED", 1.9), "lstm": ("FINISHED", 2.1)},
        {"seqlab.pid": str(dead_pid()), "seqlab.host": host}, best=("ngram", 1.9),
    )  # fmt: skip
    ids["finished"] = finished.run_id
    ids["stale"] = comparison(
        tracker, "seqlab/b/next-token", "RUNNING",
        {"ngram": ("FINISHED", 1.8), "lstm": ("RUNNING", None), "gru": ("RUNNING", None)},
        {"seqlab.pid": str(dead_pid()), "seqlab.host": host},
    ).run_id  # fmt: skip
    live = live_process.pid
    ids["alive"] = comparison(
        tracker, "seqlab/b/next-token", "RUNNING", {"lstm": ("RUNNING", None)},
        {"seqlab.pid": str(live), "seqlab.host": host,
         "seqlab.pid_started": process_started(live) or ""},
    ).run_id  # fmt: skip
    ids["old"] = comparison(
        tracker, "seqlab/c/next-token", "RUNNING", {"lstm": ("RUNNING", None)}, {}
    ).run_id
    ids["child"] = tracker.child_runs(finished)[0].info.run_id
    return ids


def test_process_tags_name_this_process() -> None:
    tags = process_tags()
    assert tags["seqlab.pid"].isdigit() and tags["seqlab.host"] == socket.gethostname()
    assert liveness(tags) == "alive"
    assert liveness({**tags, "seqlab.pid": str(dead_pid())}) == "gone"
    if "seqlab.pid_started" in tags:  # a reused pid: same number, another start time
        assert liveness({**tags, "seqlab.pid_started": "1"}) == "gone"
    assert liveness({**tags, "seqlab.host": "elsewhere.example"}) == "elsewhere"
    assert liveness({}) == "unknown"


def test_list_shows_status_models_and_best(store: dict[str, str]) -> None:
    rows = {row.run_id: row for row in list_comparisons(Tracker(store["uri"]))}
    assert set(rows) == {store[k] for k in ("finished", "stale", "alive", "old")}
    finished, stale = rows[store["finished"]], rows[store["stale"]]
    assert (finished.status, finished.models_finished, finished.models_total) == (
        "FINISHED", 2, 2
    )  # fmt: skip
    assert (finished.best_model, finished.best_test_bpc) == ("ngram", 1.9)
    assert finished.experiment == "seqlab/a/next-token"
    assert (stale.status, stale.models_finished, stale.models_total) == (STALE, 1, 3)
    assert (stale.best_model, stale.best_test_bpc) == ("ngram", 1.8)  # from the children
    assert rows[store["alive"]].status == "RUNNING"
    assert rows[store["old"]].status == "RUNNING (process unknown)"
    order = [row.run_id for row in list_comparisons(Tracker(store["uri"]))]
    assert order[0] == store["old"] and order[-1] == store["finished"]  # newest first
    assert len(list_comparisons(Tracker(store["uri"]), limit=2)) == 2


def test_close_refuses_what_is_not_stale(store: dict[str, str]) -> None:
    tracker = Tracker(store["uri"])
    refusals = {
        "alive": "is still running (process",
        "finished": "is FINISHED, not RUNNING",
        "child": "is not a seqlab comparison (it is a model run of comparison",
        "nope": "no MLflow run with id 'nope'",
    }
    for key, message in refusals.items():
        with pytest.raises(ConfigError, match=r"^--close: ") as excinfo:
            close_comparison(tracker, store.get(key, key))
        assert message in str(excinfo.value)
    assert tracker.client.get_run(store["alive"]).info.status == "RUNNING"


@pytest.mark.slow
def test_cli_lists_closes_a_stale_comparison_and_refuses_a_live_one(
    store: dict[str, str], tmp_path: Path
) -> None:
    uri = store["uri"]
    listed = run_cli("runs", "--tracking-uri", uri, "--json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    rows = {row["run_id"]: row for row in json.loads(listed.stdout)}
    assert rows[store["stale"]]["status"] == STALE
    table = run_cli("runs", "--tracking-uri", uri, cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    stale_line = next(ln for ln in table.stdout.splitlines() if store["stale"] in ln)
    assert STALE in stale_line and "1/3" in stale_line and "seqlab/b/next-token" in stale_line

    refused = run_cli("runs", "--tracking-uri", uri, "--close", store["alive"], cwd=tmp_path)
    assert_one_line_error(refused, "--close:", "still running")

    closed = run_cli("runs", "--tracking-uri", uri, "--close", store["stale"], cwd=tmp_path)
    assert closed.returncode == 0, closed.stderr
    assert f"seqlab run --resume {store['stale']}" in closed.stdout
    tracker = Tracker(uri)
    assert tracker.client.get_run(store["stale"]).info.status == "KILLED"
    parent = tracker.client.get_run(store["stale"])
    children = tracker.child_runs(RunRef(store["stale"], parent.info.experiment_id))
    statuses = {c.info.run_name: c.info.status for c in children}
    assert statuses == {"ngram": "FINISHED", "lstm": "KILLED", "gru": "KILLED"}
    again = run_cli("runs", "--tracking-uri", uri, "--close", store["stale"], cwd=tmp_path)
    assert_one_line_error(again, "is KILLED, not RUNNING")


def test_cli_on_a_store_that_does_not_exist_creates_nothing(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'none.db'}"
    listed = run_cli("runs", "--tracking-uri", uri, cwd=tmp_path)
    assert listed.returncode == 0 and "no comparisons recorded" in listed.stdout
    as_json = run_cli("runs", "--tracking-uri", uri, "--json", cwd=tmp_path)
    assert json.loads(as_json.stdout) == []
    closing = run_cli("runs", "--tracking-uri", uri, "--close", "abc", cwd=tmp_path)
    assert_one_line_error(closing, "--close: no MLflow run with id 'abc'")
    assert list(tmp_path.iterdir()) == []


# ---- sweeps: listed beside comparisons, closed the same way ----------------------------


def sweep(
    tracker: Tracker,
    experiment: str,
    status: str,
    trials: dict[int, tuple[str, str | None, float | None]],
    pid_tags: dict[str, str],
    total: int,
    metric: str = "val_bpc",
) -> RunRef:
    """A sweep as ``seqlab sweep`` records one: a parent tagged seqlab.kind=sweep with its
    trial count and metric, one child run per trial tagged as ``run_trial`` tags it
    (number: run status, trial state, figure), and a FINISHED one ended by
    ``finish_sweep`` itself, so the listing reads what the sweep really writes."""
    tags = {"seqlab.kind": "sweep", "seqlab.trials": str(total), "seqlab.metric": metric}
    parent = tracker.start_run("sweep test", experiment, tags={**tags, **pid_tags})
    outcomes = []
    for number, (run_status, state, value) in trials.items():
        spec = TrialSpec(number, number, {"train.lr": 0.01})
        child = tracker.start_run(f"trial-{number}", parent=parent, tags=trial_tags(spec, {}))
        if value is not None:
            extra = {"trial_value": value} if state == COMPLETE else {}
            tracker.log_metrics(child, {metric: value, **extra})
        if state is not None:
            tracker.set_tags(child, {STATE_TAG: state})
        if run_status != "RUNNING":
            tracker.client.set_terminated(child.run_id, run_status)
        outcomes.append(TrialOutcome(number, spec.values, state or FAILED, value, child.run_id))
    if status == "FINISHED":
        result = SweepResult(parent.run_id, experiment, tracker.uri, metric, outcomes)
        finish_sweep(tracker, parent, result)
    elif status != "RUNNING":
        tracker.client.set_terminated(parent.run_id, status)
    return parent


def stale_sweep(tracker: Tracker, experiment: str = "seqlab/d/next-token") -> RunRef:
    """Killed after two of six trials: one COMPLETE, one PRUNED, two left RUNNING."""
    return sweep(
        tracker, experiment, "RUNNING",
        {0: ("FINISHED", COMPLETE, 2.2), 1: ("FINISHED", PRUNED, 1.5),
         2: ("RUNNING", None, None), 3: ("RUNNING", None, None)},
        {"seqlab.pid": str(dead_pid()), "seqlab.host": socket.gethostname()},
        total=6, metric="val_nll",
    )  # fmt: skip


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """One store, comparisons and sweeps interleaved in time (oldest first): a finished
    comparison, a finished sweep, a stale sweep, a finished comparison. Read only."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mixed') / 'mlruns.db'}"
    tracker = Tracker(uri)
    gone = {"seqlab.pid": str(dead_pid()), "seqlab.host": socket.gethostname()}
    ids = {"uri": uri}
    ids["compare_old"] = comparison(
        tracker, "seqlab/a/next-token", "FINISHED",
        {"ngram": ("FINISHED", 1.9), "lstm": ("FINISHED", 2.1)}, gone, best=("ngram", 1.9),
    ).run_id  # fmt: skip
    time.sleep(0.01)  # start times are in ms: no two parents may share one
    ids["sweep_done"] = sweep(
        tracker, "seqlab/d/next-token", "FINISHED",
        {0: ("FINISHED", COMPLETE, 2.0), 1: ("FINISHED", COMPLETE, 1.9206),
         2: ("FINISHED", PRUNED, 2.5), 3: ("FAILED", FAILED, None)},
        gone, total=4,
    ).run_id  # fmt: skip
    time.sleep(0.01)
    ids["sweep_stale"] = stale_sweep(tracker).run_id
    time.sleep(0.01)
    ids["compare_new"] = comparison(
        tracker, "seqlab/a/next-token", "FINISHED",
        {"ngram": ("FINISHED", 1.8), "lstm": ("FINISHED", 1.7)}, gone,
    ).run_id  # fmt: skip
    return ids


def test_list_shows_a_sweep_with_its_trials_and_best_trial(mixed: dict[str, str]) -> None:
    rows = {row.run_id: row for row in list_comparisons(Tracker(mixed["uri"]))}
    done, stale = rows[mixed["sweep_done"]], rows[mixed["sweep_stale"]]
    assert (done.kind, done.status, done.experiment) == ("sweep", "FINISHED", "seqlab/d/next-token")
    assert (done.models_finished, done.models_total) == (3, 4)  # the FAILED trial is not
    assert (done.best_trial, done.best_metric, done.best_value) == (2, "val_bpc", 1.9206)
    assert (done.best_model, done.best_test_bpc) == (None, None)  # not a test figure
    # killed mid-way: six trials asked, the best COMPLETE one so far (the pruned one's
    # lower figure is no result), and stale like a comparison would be
    assert (stale.kind, stale.status) == ("sweep", STALE)
    assert (stale.models_finished, stale.models_total) == (2, 6)
    assert (stale.best_trial, stale.best_metric, stale.best_value) == (1, "val_nll", 2.2)
    compare = rows[mixed["compare_old"]]
    assert (compare.kind, compare.best_model, compare.best_test_bpc) == ("compare", "ngram", 1.9)
    assert (compare.best_trial, compare.best_metric, compare.best_value) == (None, "test_bpc", 1.9)
    assert (rows[mixed["compare_new"]].best_model, rows[mixed["compare_new"]].best_value) == (
        "lstm", 1.7
    )  # fmt: skip


def test_newest_first_and_limit_count_both_kinds(mixed: dict[str, str]) -> None:
    tracker = Tracker(mixed["uri"])
    newest_first = ["compare_new", "sweep_stale", "sweep_done", "compare_old"]
    assert [row.run_id for row in list_comparisons(tracker)] == [mixed[k] for k in newest_first]
    for limit in (1, 2, 3):
        listed = [row.run_id for row in list_comparisons(tracker, limit=limit)]
        assert listed == [mixed[k] for k in newest_first[:limit]]


def test_close_a_stale_sweep_kills_its_running_trials(tmp_path: Path) -> None:
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlruns.db'}")
    stale = stale_sweep(tracker)
    running = {"seqlab.pid": str(os.getpid()), "seqlab.host": socket.gethostname()}
    alive = sweep(tracker, "seqlab/d/next-token", "RUNNING", {0: ("RUNNING", None, None)},
                  running, total=2)  # fmt: skip
    elsewhere = {"seqlab.pid": "1", "seqlab.host": "elsewhere.example"}
    away = sweep(tracker, "seqlab/d/next-token", "RUNNING", {}, elsewhere, total=2)
    trial = tracker.child_runs(stale)[0].info.run_id
    refusals = {
        alive.run_id: f"sweep {alive.run_id} is still running (process {os.getpid()}",
        away.run_id: "runs on host elsewhere.example",
        trial: f"is not a seqlab sweep (it is a trial run of sweep {stale.run_id})",
    }
    for run_id, message in refusals.items():
        with pytest.raises(ConfigError, match=r"^--close: ") as excinfo:
            close_run(tracker, run_id)
        assert message in str(excinfo.value)
    assert tracker.client.get_run(alive.run_id).info.status == "RUNNING"

    kind, closed = close_run(tracker, stale.run_id)
    statuses = {c.info.run_name: c.info.status for c in tracker.child_runs(stale)}
    assert statuses == {
        "trial-0": "FINISHED", "trial-1": "FINISHED", "trial-2": "KILLED", "trial-3": "KILLED"
    }  # fmt: skip
    killed = {c.info.run_id for c in tracker.child_runs(stale) if c.info.status == "KILLED"}
    assert kind == "sweep" and set(closed) == killed
    assert tracker.client.get_run(stale.run_id).info.status == "KILLED"
    with pytest.raises(ConfigError, match=f"sweep {stale.run_id} is KILLED, not RUNNING"):
        close_comparison(tracker, stale.run_id)


@pytest.mark.slow
def test_cli_lists_sweeps_beside_comparisons(mixed: dict[str, str], tmp_path: Path) -> None:
    uri = mixed["uri"]
    table = run_cli("runs", "--tracking-uri", uri, cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    header = next(ln for ln in lines if ln.startswith("parent run"))
    assert header.split() == [
        "parent", "run", "kind", "started", "status", "models", "best", "best", "figure",
        "experiment",
    ]  # fmt: skip

    def line(key: str) -> str:
        return next(ln for ln in lines if ln.startswith(mixed[key]))

    assert line("sweep_done").split()[1] == "sweep"
    for part in ("FINISHED", "3/4", "trial 2", "val_bpc 1.9206", "seqlab/d/next-token"):
        assert part in line("sweep_done")
    assert STALE in line("sweep_stale") and "2/6" in line("sweep_stale")
    assert "trial 1" in line("sweep_stale") and "val_nll 2.2000" in line("sweep_stale")
    assert line("compare_old").split()[1] == "compare"  # a comparison renders as before
    for part in ("FINISHED", "2/2", "ngram", "test_bpc 1.9000", "seqlab/a/next-token"):
        assert part in line("compare_old")

    listed = run_cli("runs", "--tracking-uri", uri, "--json", "--limit", "3", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [row["run_id"] for row in rows] == [
        mixed["compare_new"], mixed["sweep_stale"], mixed["sweep_done"]
    ]  # fmt: skip
    done = rows[2]
    assert {k: done[k] for k in ("kind", "models_finished", "models_total", "best_trial")} == {
        "kind": "sweep", "models_finished": 3, "models_total": 4, "best_trial": 2
    }  # fmt: skip
    assert (done["best_metric"], done["best_value"], done["best_test_bpc"]) == (
        "val_bpc", 1.9206, None
    )  # fmt: skip
    assert (rows[0]["kind"], rows[0]["best_metric"], rows[0]["best_value"]) == (
        "compare", "test_bpc", 1.7
    )  # fmt: skip


@pytest.mark.slow
def test_cli_closes_a_stale_sweep(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    tracker = Tracker(uri)
    stale = stale_sweep(tracker)
    closed = run_cli("runs", "--tracking-uri", uri, "--close", stale.run_id, cwd=tmp_path)
    assert closed.returncode == 0, closed.stderr
    assert f"closed sweep {stale.run_id}: it and 2 running trial run(s)" in closed.stdout
    assert "--resume" not in closed.stdout  # a sweep cannot be resumed
    statuses = sorted(c.info.status for c in tracker.child_runs(stale))
    assert statuses == ["FINISHED", "FINISHED", "KILLED", "KILLED"]
    assert tracker.client.get_run(stale.run_id).info.status == "KILLED"
