"""benchmarks/runners.py --quick: sequential vs Dask, its last line's format."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow
RUNNERS_BENCH = REPO / "benchmarks" / "runners.py"
LAST_LINE = re.compile(
    r"ratio=(\d+\.\d+) sequential_s=(\d+\.\d+) dask_s=(\d+\.\d+) overhead_s=(-?\d+\.\d+)"
)


def test_runners_quick_prints_the_ratio_line_last(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    # no PREFECT_API_URL: the Dask run needs, and gets, a temporary server of its own
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    proc = subprocess.run(
        [sys.executable, str(RUNNERS_BENCH), "--quick", "--json", str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=540,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.rstrip("\n").splitlines()
    match = LAST_LINE.fullmatch(lines[-1])
    assert match, lines[-3:]
    ratio, sequential_s, dask_s, overhead_s = map(float, match.groups())
    assert sequential_s > 0 and dask_s > 0
    assert ratio == pytest.approx(sequential_s / dask_s, abs=2e-3)
    assert any(line.startswith("flows differ by") for line in lines)  # the table above it

    figures = json.loads(out.read_text(encoding="utf-8"))
    assert figures["overhead_s"] == pytest.approx(overhead_s, abs=0.01)
    bpc = figures["test_bpc"]
    assert sorted(bpc["dask"]) == ["gru", "lstm", "ngram"]
    assert bpc["dask"] == bpc["sequential"]  # one torch thread each: the same figures
    for model, value in bpc["direct"].items():  # the stages without Prefect agree too
        assert value == pytest.approx(bpc["sequential"][model], abs=1e-9)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figures.json"]  # nothing else
