"""Faults a real process survives: SIGKILL at random moments (during training, MLflow
logging and checkpoint writing) followed by ``--resume`` reaches the metrics of a run
never interrupted; several ``seqlab run`` at once on one SQLite store all complete."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from mlflow import MlflowClient

from tests.conftest import run_cli

pytestmark = pytest.mark.slow

CONFIG = {
    "data": {"source": "synthetic:markov?length=40000", "clean": "none", "context_len": 16},
    "models": [
        {"plugin": "ngram", "params": {"order": 4}},
        {
            "plugin": "lstm",
            "params": {"embedding_dim": 16, "hidden_size": 48},
            "train": {"bptt": "stateful"},
        },
    ],
    "train": {"epochs": 6, "batch_size": 8, "lr": 0.005, "progress": False},
    "tracking": {"sample_len": 20},
}


def _runs(uri: str) -> list:
    client = MlflowClient(uri)
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


def _parent_id(uri: str) -> str | None:
    """Read with sqlite3 itself: an MlflowClient would create the tables, racing the
    process under test that is creating them."""
    import sqlite3

    db = Path(uri.removeprefix("sqlite:///"))
    if not db.exists():
        return None
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            row = conn.execute(
                "SELECT run_uuid FROM tags WHERE key = 'seqlab.kind' AND value = 'compare'"
            ).fetchone()
    except sqlite3.Error:
        return None
    return str(row[0]) if row else None


def _count(uri: str, sql: str) -> int:
    import sqlite3

    db = Path(uri.removeprefix("sqlite:///"))
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return int(conn.execute(sql).fetchone()[0])
    except sqlite3.Error:
        return 0


EPOCHS_LOGGED = "SELECT COUNT(*) FROM metrics WHERE key = 'val_nll' AND step > 0"


def _start(config: Path, uri: str, cwd: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    parent = _parent_id(uri)
    args = ["--resume", parent] if parent else ["--config", str(config)]
    return subprocess.Popen(
        [sys.executable, "-m", "seqlab", "run", *args, "--tracking-uri", uri],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _checkpoints_whole(artifacts: Path) -> None:
    """Every checkpoint under its real name loads: nothing is half-written."""
    for path in artifacts.rglob("*.pt"):
        torch.load(path, map_location="cpu", weights_only=True)


def test_repeated_kills_then_resume_reach_the_uninterrupted_metrics(
    prefect_server: str, tmp_path: Path
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(CONFIG), encoding="utf-8")
    whole_uri = f"sqlite:///{tmp_path / 'whole' / 'mlruns.db'}"
    whole = run_cli("run", "--config", str(config), "--tracking-uri", whole_uri, cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr[-2000:]

    store = tmp_path / "killed"
    uri = f"sqlite:///{store / 'mlruns.db'}"
    rng = random.Random(20261125)
    kills = 0
    slow_writes = 0
    # where each kill lands: between a checkpoint's copy and its rename ("write"), at a
    # random moment after the next epoch was logged ("epoch": MLflow logging, the next
    # epoch's training, checkpointing), or at a random moment after launch ("random")
    plan = ["write", "epoch", "random", "epoch", "write", "epoch", "random", "epoch"]
    for moment in plan:
        env = os.environ.copy()
        if moment == "write":
            env["SEQLAB_FAULT_DELAY"] = "artifact:3"
        epochs_before = _count(uri, EPOCHS_LOGGED)
        proc = _start(config, uri, tmp_path, env)
        try:
            deadline = time.monotonic() + 240
            if moment == "write":
                while not any(store.glob("mlartifacts/**/.*.tmp-*")):
                    if proc.poll() is not None or time.monotonic() > deadline:
                        break
                    time.sleep(0.02)
            elif moment == "epoch":
                while _count(uri, EPOCHS_LOGGED) == epochs_before and proc.poll() is None:
                    assert time.monotonic() < deadline
                    time.sleep(0.05)
                time.sleep(rng.uniform(0.0, 1.0))
            else:
                time.sleep(rng.uniform(0.0, 8.0))
            if proc.poll() is not None:
                break  # it finished before this kill: the comparison is complete
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            kills += 1
            slow_writes += moment == "write"
        finally:
            if proc.poll() is None:
                proc.kill()
        # after every kill the store opens and every checkpoint is whole
        assert isinstance(_runs(uri), list)
        _checkpoints_whole(store / "mlartifacts")
    assert kills >= 5 and slow_writes >= 1, (kills, slow_writes)

    final = run_cli("run", "--resume", str(_parent_id(uri)), "--tracking-uri", uri, cwd=tmp_path)
    assert final.returncode == 0, final.stdout[-2000:] + final.stderr[-2000:]
    runs = _runs(uri)
    assert len(runs) == 3  # one parent, one run per model, however many kills
    assert all(r.info.status == "FINISHED" for r in runs)
    got = {r.info.run_name: r.data.metrics for r in runs}
    want = {r.info.run_name: r.data.metrics for r in _runs(whole_uri)}
    for name in ("ngram", "lstm"):
        for metric in ("test_bpc", "val_bpc", "test_acc1", "test_nll"):
            assert got[name][metric] == pytest.approx(want[name][metric], abs=1e-9), (
                name,
                metric,
            )
    _checkpoints_whole(store / "mlartifacts")


def test_concurrent_runs_on_one_sqlite_store_all_complete(
    prefect_server: str, tmp_path: Path
) -> None:
    """Two processes meet a store that does not exist yet, then four an existing one."""
    uri = f"sqlite:///{tmp_path / 'shared' / 'mlruns.db'}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def launch(i: int) -> subprocess.Popen[str]:
        args = ["--tracking-uri", uri, "--data", f"synthetic:markov?length=3000&seed={i}"]
        args += ["--models", "ngram,lstm", "--epochs", "1", "--set", "train.progress=false"]
        args += ["--set", "train.num_threads=1", "--set", "tracking.sample_len=10"]
        args += ["--set", "train.max_batches_per_epoch=10"]
        return subprocess.Popen(
            [sys.executable, "-m", "seqlab", "run", *args],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    seed = 0
    for wave, n_procs in (("new store", 2), ("existing store", 4)):
        procs = [launch(seed + i) for i in range(n_procs)]
        seed += n_procs
        for proc in procs:
            _out, err = proc.communicate(timeout=600)
            assert proc.returncode == 0, f"{wave}: {err[-3000:]}"
    runs = _runs(uri)
    parents = [r for r in runs if r.data.tags.get("seqlab.kind") == "compare"]
    assert len(parents) == 6
    client = MlflowClient(uri)
    for parent in parents:
        assert parent.info.status == "FINISHED"
        assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {
            "leaderboard.csv",
            "config.json",
        }
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        assert sorted(c.info.run_name for c in children) == ["lstm", "ngram"]
        for child in children:
            assert child.info.status == "FINISHED"
            assert "test_bpc" in child.data.metrics
            paths = {a.path for a in client.list_artifacts(child.info.run_id)}
            assert {"model", "samples.txt", "vocab.json"} <= paths


def test_a_full_disk_fails_the_model_in_one_line_and_leaves_no_partial_file(
    prefect_server: str, tmp_path: Path
) -> None:
    """The process may write files of at most 1.5 MB (RLIMIT_FSIZE, as a disk that
    fills up): the LSTM's per-epoch checkpoint cannot be written."""
    import resource

    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    store_ready = run_cli(
        "run", "--data", "synthetic:markov?length=3000", "--models", "ngram",
        "--tracking-uri", uri, cwd=tmp_path,
    )  # fmt: skip
    assert store_ready.returncode == 0, store_ready.stderr[-2000:]

    def limit_file_size() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past it fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (1_500_000, 1_500_000))

    args = ["--data", "synthetic:markov?length=3000", "--models", "ngram,lstm"]
    args += ["--epochs", "1", "--set", "train.progress=false", "--tracking-uri", uri]
    proc = subprocess.run(
        [sys.executable, "-m", "seqlab", "run", *args],
        cwd=tmp_path,
        env=os.environ.copy(),
        preexec_fn=limit_file_size,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: model lstm failed: "), proc.stderr
    assert "could not write the checkpoint" in lines[0] and "Traceback" not in proc.stderr
    runs = {r.info.run_name: r for r in _runs(uri)}
    assert runs["lstm"].info.status == "FAILED"
    artifacts = tmp_path / "mlartifacts"
    assert not list(artifacts.rglob(".*.tmp-*"))  # no partial file left behind
    _checkpoints_whole(artifacts)  # nothing half-written under a real name
