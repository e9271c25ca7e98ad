"""No process ``seqlab run`` starts outlives it, whatever signal ends it; Ctrl-C and
SIGTERM stop it cleanly (runs in progress KILLED, finished ones kept, one line, exit 130
or 143). Real processes, real signals; servers bind 127.0.0.1 only."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux /proc")

CONFIG = {
    "data": {"source": "synthetic:markov?length=20000", "clean": "none", "context_len": 16},
    "models": [
        {"plugin": "ngram", "params": {"order": 3}},
        {"plugin": "lstm", "params": {"embedding_dim": 8, "hidden_size": 32}},
    ],
    # many short epochs: a signal always lands while the lstm trains
    "train": {
        "epochs": 500,
        "batch_size": 32,
        "max_batches_per_epoch": 20,
        "num_threads": 1,
        "progress": False,
    },
    "tracking": {"sample_len": 20},
}


def _env() -> dict[str, str]:
    """The user's environment without a Prefect API: seqlab starts its own server."""
    return {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}


def _state(pid: int) -> str | None:
    """The process state letter, or None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[0]


def _alive(pid: int) -> bool:
    return _state(pid) not in (None, "Z", "X")  # a zombie has ended


def descendants(pid: int) -> set[int]:
    """Every process below ``pid``, read from /proc (children of children included)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _wait_gone(pids: set[int], seconds: float = 15) -> set[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        alive = {p for p in pids if _alive(p)}
        if not alive:
            return set()
        time.sleep(0.1)
    return {p for p in pids if _alive(p)}


def _runs(db: Path) -> dict[str, str]:
    """Run name -> status, straight from MLflow's SQLite tables."""
    with sqlite3.connect(db) as con:
        return dict(con.execute("SELECT name, status FROM runs").fetchall())


def start_training(tmp_path: Path) -> tuple[subprocess.Popen[str], Path]:
    """A real ``seqlab run`` (no PREFECT_API_URL), returned once the lstm is in its
    second epoch (its first per-epoch checkpoint is written)."""
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(CONFIG), encoding="utf-8")
    db = tmp_path / "mlruns.db"
    proc = subprocess.Popen(
        [sys.executable, "-m", "seqlab", "run", "--config", str(config),
         "--tracking-uri", f"sqlite:///{db}"],
        cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 240
    try:
        while not any((tmp_path / "mlartifacts").rglob("checkpoints/last.pt")):
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the lstm did not finish an epoch in 240 s"
            time.sleep(0.1)
    except BaseException:
        proc.kill()
        proc.communicate()
        raise
    return proc, db


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_kill_9_leaves_no_process_behind(tmp_path: Path) -> None:
    proc, db = start_training(tmp_path)
    try:
        children = descendants(proc.pid)
        assert children, "seqlab run should have started its Prefect server"
        assert all(_alive(p) for p in children)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert _wait_gone(children) == set(), "processes outlived seqlab run"
    # the store still opens; the killed comparison shows as stale and can be closed
    from pipeline_core.runs import STALE, close_comparison, list_comparisons
    from pipeline_core.tracking import Tracker

    tracker = Tracker(f"sqlite:///{db}")
    [row] = list_comparisons(tracker)
    assert row.status == STALE and row.pid == proc.pid
    assert (row.models_finished, row.models_total, row.best_model) == (1, 2, "ngram")
    assert len(close_comparison(tracker, row.run_id)) == 1  # the lstm's run
    assert _runs(db) == {
        "compare synthetic-markov": "KILLED",
        "ngram": "FINISHED",
        "lstm": "KILLED",
    }


@pytest.mark.slow
@pytest.mark.timeout(400)
@pytest.mark.parametrize(
    ("sig", "code", "line"),
    [(signal.SIGINT, 130, "error: interrupted"), (signal.SIGTERM, 143, "error: terminated")],
    ids=["SIGINT", "SIGTERM"],
)
def test_signal_stops_cleanly(tmp_path: Path, sig: int, code: int, line: str) -> None:
    proc, db = start_training(tmp_path)
    try:
        children = descendants(proc.pid)
        sent = time.monotonic()
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=120)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, stderr[-3000:]
    assert stderr.splitlines() == [line], stderr[-3000:]
    assert took < 60, f"{took:.1f} s from the signal to the exit"
    # in progress: KILLED (the parent and the lstm); finished: kept
    assert _runs(db) == {
        "compare synthetic-markov": "KILLED",
        "ngram": "FINISHED",
        "lstm": "KILLED",
    }
    assert _wait_gone(children, seconds=5) == set()
    leftover = Path(tempfile.gettempdir()).glob(f"seqlab-prefect-{proc.pid}-*")
    assert list(leftover) == [], "the temporary server's folder was not removed"


CHILD = """
import subprocess, sys, time
from flows.server import die_with_parent
child = subprocess.Popen(["sleep", "300"], preexec_fn=die_with_parent())
print(child.pid, flush=True)
time.sleep(300)
"""


def test_a_child_started_with_die_with_parent_dies_with_it() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", CHILD], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert _alive(child)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
    assert _wait_gone({child}, seconds=5) == set()


SERVER = """
import json, os, sys, time, urllib.request
from flows.server import TemporaryServer
server = TemporaryServer()
with server as url:
    with urllib.request.urlopen(url + "/health", timeout=5) as resp:
        healthy = resp.status == 200
    print(json.dumps({"url": url, "database": str(server.database), "pid": server.process.pid,
                      "sid": os.getsid(server.process.pid), "folder": str(server.folder),
                      "healthy": healthy, "seconds": server.startup_seconds}), flush=True)
"""


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_temporary_servers_at_once_keep_their_own_database(tmp_path: Path) -> None:
    """Two runs starting together on one new PREFECT_HOME: each server gets its own
    database (no shared migration), the migrated template is written once and valid,
    and both are gone, folders too, when their parents end."""
    env = {**_env(), "PREFECT_HOME": str(tmp_path / "prefect")}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SERVER], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outs = []
    for proc in procs:
        out, _ = proc.communicate(timeout=280)
        assert proc.returncode == 0
        outs.append(json.loads(out))
    assert all(o["healthy"] for o in outs)
    assert outs[0]["database"] != outs[1]["database"]
    assert outs[0]["url"] != outs[1]["url"]
    for out in outs:
        assert out["sid"] == out["pid"]  # its own session: a terminal's Ctrl-C skips it
        assert Path(out["database"]).parent == Path(out["folder"])
        assert not Path(out["folder"]).exists()
        assert not _alive(out["pid"])
    [template] = (tmp_path / "prefect" / "seqlab").glob("server-*.db")
    with sqlite3.connect(template) as con:
        assert con.execute("SELECT count(*) FROM alembic_version").fetchone()[0] == 1
    assert not (tmp_path / "prefect" / "prefect.db").exists()  # the user's is untouched


# --------------------------------------------------------------------------- in process


def test_a_stop_request_ends_training_on_a_worker_thread_at_the_next_batch() -> None:
    """Python raises KeyboardInterrupt in the main thread only: the Trainer, which
    Prefect runs on a worker thread, stops at its next batch once a stop is requested."""
    import threading

    import numpy as np

    from pipeline_core import interrupt
    from pipeline_core.config import TrainConfig
    from pipeline_core.contract import FitData
    from pipeline_core.training import Callback, Trainer
    from plugins.lstm import LSTMModel

    batches: list[int] = []

    class Count(Callback):
        def on_batch_end(self, trainer: Trainer, batch: int, loss: float) -> None:
            batches.append(batch)
            if len(batches) == 3:
                interrupt.request_stop()

    data = FitData(
        train=np.tile(np.array([1, 2, 3, 4], dtype=np.uint8), 500),
        val=np.tile(np.array([1, 2, 3, 4], dtype=np.uint8), 50),
        vocab_size=5,
        context_len=6,
    )
    settings = TrainConfig(epochs=50, batch_size=8, progress=False)
    outcome: list[BaseException] = []

    def train() -> None:
        try:
            model = LSTMModel.create(5, {"hidden_size": 8})
            Trainer(model, data, settings, callbacks=[Count()]).fit()
        except BaseException as err:
            outcome.append(err)

    interrupt.reset()
    try:
        worker = threading.Thread(target=train)
        worker.start()
        worker.join(timeout=120)
    finally:
        interrupt.reset()
    assert [type(e) for e in outcome] == [KeyboardInterrupt]
    assert len(batches) == 3  # no batch after the request


def test_tracker_run_ends_an_interrupt_killed_and_an_error_failed(tmp_path: Path) -> None:
    from pipeline_core.interrupt import Terminated
    from pipeline_core.tracking import Tracker

    tracker = Tracker(f"sqlite:///{tmp_path / 'mlruns.db'}")
    statuses = {}
    for name, err in [
        ("ctrl-c", KeyboardInterrupt()),
        ("sigterm", Terminated("terminated")),
        ("exit", SystemExit(3)),
        ("bug", RuntimeError("boom")),
    ]:
        run = tracker.start_run(name, "signals")
        with pytest.raises(type(err)), tracker.run(run):
            raise err
        info = tracker.client.get_run(run.run_id)
        statuses[name] = (info.info.status, "seqlab.error" in info.data.tags)
    assert statuses == {
        "ctrl-c": ("KILLED", False),
        "sigterm": ("KILLED", False),
        "exit": ("KILLED", False),
        "bug": ("FAILED", True),
    }


def test_handle_signals_turns_an_engines_sigterm_into_terminated() -> None:
    """Prefect's flow engine answers SIGTERM with its own TerminationSignal (a
    BaseException carrying ``.signal``); the CLI sees Terminated (exit 143)."""
    from pipeline_core import interrupt

    class EngineSignal(BaseException):
        signal = int(signal.SIGTERM)

    before = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(interrupt.Terminated), interrupt.handle_signals():
            assert signal.getsignal(signal.SIGINT) is not before
            with interrupt.stopping_workers():
                raise EngineSignal()
        assert interrupt.stop_requested()
        assert interrupt.received_signal() == signal.SIGTERM
        assert signal.getsignal(signal.SIGINT) is before  # restored
    finally:
        interrupt.reset()


def test_an_ignored_sigint_stays_ignored() -> None:
    """``nohup``-style or `cmd &` in a script: SIGINT ignored by the parent stays so."""
    from pipeline_core import interrupt

    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with interrupt.handle_signals():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)
        interrupt.reset()
