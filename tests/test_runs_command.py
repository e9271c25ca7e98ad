"""``seqlab runs``: recent comparisons with status and best model; a RUNNING one whose
process is gone is stale and ``--close`` ends it (and its running models) as KILLED,
refusing one whose process still lives."""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline_core.errors import ConfigError
from pipeline_core.runs import (
    STALE,
    close_comparison,
    list_comparisons,
    liveness,
    process_started,
    process_tags,
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
