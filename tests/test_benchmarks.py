"""The benchmarks run, as ``make bench`` runs them, on tiny inputs: their output format."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, WONDERLAND

TRAINER_BENCH = REPO / "benchmarks" / "trainer_overhead.py"
RATIO_LINE = re.compile(r"ratio=\d+\.\d+ seqlab_tok_s=\d+ bare_tok_s=\d+")
SCORE_LINE = re.compile(r"score_speedup=\d+\.\d+ windowed_s=\d+\.\d+ stateful_s=\d+\.\d+")


@pytest.mark.skipif(not WONDERLAND.is_file(), reason=f"{WONDERLAND} not present")
def test_trainer_overhead_quick_prints_ratio_last_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(TRAINER_BENCH),
            "--quick",
            "--batches",
            "2",
            "--threads",
            "1",  # no OpenMP barriers: steady on a busy machine
            "--json",
            str(out),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ.copy(),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.rstrip("\n").splitlines()
    assert RATIO_LINE.fullmatch(lines[-1]), lines[-3:]
    assert SCORE_LINE.fullmatch(lines[-2]), lines[-3:]
    assert any(line.startswith("seqlab tok/s") for line in lines)  # the table above them

    figures = json.loads(out.read_text(encoding="utf-8"))
    assert "trainer_overhead.py" in figures["command"] and "--quick" in figures["command"]
    machine = figures["machine"]
    assert machine["cpu_count"] >= 1 and machine["torch_threads"] >= 1
    assert machine["platform"] and machine["torch"]
    settings, train, score = figures["settings"], figures["train"], figures["score"]
    assert settings["batches"] == 2 and settings["repeats"] == 1
    assert settings["interleave"] == "batch" and settings["threads"] == 1
    assert len(train["seqlab_tok_s"]) == len(train["bare_tok_s"]) == 1
    ratio = float(lines[-1].split()[0].removeprefix("ratio="))
    assert ratio == pytest.approx(train["ratio"], abs=1e-3)
    assert train["ratio"] > 0 and score["windowed_s"] > 0 and score["stateful_s"] > 0
    # both scorings cover the same test positions of the same model
    assert score["stateful_nll"] == pytest.approx(score["windowed_nll"], rel=0.2)
