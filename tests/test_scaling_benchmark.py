"""benchmarks/scaling.py: a ``--quick`` run through ``python -m benchmarks`` records every
size with its seconds and peak memory, the tutorial's one-hot sizes match the formula on
the cleaned corpus rebuilt here, and a bad ``--sizes`` is a one-line error."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import scaling as bench
from pipeline_core.cleaning import seed_clean_bytes
from tests.conftest import DATA, REPO, run_benchmarks

TEXTS = [DATA / name for name in ("wonderland.txt", "tiny-shakespeare.txt", "nottingham-jigs.txt")]
pytestmark = pytest.mark.skipif(
    not all(p.is_file() for p in TEXTS), reason=f"the shared texts are not all in {DATA}"
)


def corpus_bytes(n_bytes: int) -> bytes:
    """The three texts, each ending in a newline, repeated and cut to ``n_bytes``; a
    character the cut splits is dropped."""
    texts = [p.read_bytes() for p in TEXTS]
    unit = b"".join(t if t.endswith(b"\n") else t + b"\n" for t in texts)
    data = (unit * (n_bytes // len(unit) + 1))[:n_bytes]
    return data.decode("utf-8", "ignore").encode("utf-8")


def test_quick_run_records_each_size_and_the_one_hot_formula(tmp_path: Path) -> None:
    proc = run_benchmarks("--results-dir", str(tmp_path), "scaling", "--quick")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert any(line.startswith("linearity=") for line in proc.stdout.splitlines())
    record = json.loads((tmp_path / "scaling.json").read_text(encoding="utf-8"))
    assert record["name"] == "scaling"
    figures = record["figures"]
    sizes, baseline = figures["sizes"], figures["baseline_rss_mib"]
    assert list(sizes) == [bench.size_label(s) for s in bench.QUICK_SIZES]
    assert baseline > 0
    for label, f in sizes.items():
        data = corpus_bytes(round(float(label) * bench.MB))
        assert f["bytes"] == len(data)
        assert f["cache"] == "miss"  # measured cold: computed, not read from a cache
        assert all(f["seconds"][stage] > 0 for stage in ("ingest", "clean", "vectorize"))
        assert f["seconds"]["total"] == pytest.approx(
            sum(f["seconds"][s] for s in ("ingest", "clean", "vectorize"))
        )
        assert f["repeat_totals_s"] == [pytest.approx(f["seconds"]["total"])]  # 1 repeat
        assert f["peak_rss_mib"] > baseline
        assert f["data_rss_mib"] == pytest.approx(f["peak_rss_mib"] - baseline)
        assert f["mb_per_s"] == pytest.approx(len(data) / 1e6 / f["seconds"]["total"])

        # the tutorial's tensors: X (n - 10, 10, vocab) and y (n - 10, vocab), 1 byte each
        cleaned = seed_clean_bytes(data)
        n_chars, vocab = len(cleaned), len(set(cleaned))
        assert (f["n_chars"], f["vocab"]) == (n_chars, vocab)
        onehot = f["onehot"]
        windows = n_chars - 10
        bool_bytes = windows * 10 * vocab + windows * vocab
        assert onehot["n_windows"] == windows
        assert onehot["bool_mib"] * 2**20 == pytest.approx(bool_bytes)
        assert onehot["float32_mib"] * 2**20 == pytest.approx(4 * bool_bytes)
        assert onehot["float32_over_peak"] == pytest.approx(
            onehot["float32_mib"] / f["peak_rss_mib"]
        )

    first, last = (
        sizes[bench.size_label(s)] for s in (bench.QUICK_SIZES[0], bench.QUICK_SIZES[-1])
    )
    summary = figures["summary"]
    assert first["s_per_mb_ratio"] == 1
    assert summary["linearity_ratio"] == pytest.approx(last["s_per_mb"] / first["s_per_mb"])
    assert summary["max_peak_mib"] == max(f["peak_rss_mib"] for f in sizes.values())
    assert summary["target_met"] == (summary["max_peak_mib"] <= 2048)


@pytest.mark.parametrize("value", ["0", "abc", "1,-2", "1,1"])
def test_bad_sizes_is_a_one_line_error_exit_2(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert bench.main(["--sizes", value]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --sizes: "), captured.err


def test_bad_sizes_through_the_suite_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    proc = run_benchmarks("--results-dir", str(tmp_path), "scaling", "--sizes", "abc", timeout=60)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.splitlines()[0] == "error: --sizes: 'abc' is not a number"
    assert list(tmp_path.iterdir()) == []


def test_build_corpus_is_the_texts_repeated_and_cut_at_a_character(tmp_path: Path) -> None:
    for n_bytes in (1000, 300_000, 2_000_003):
        written = bench.build_corpus(tmp_path / "c.txt", n_bytes)
        data = (tmp_path / "c.txt").read_bytes()
        assert data == corpus_bytes(n_bytes) and written == len(data)
        assert n_bytes - 4 < written <= n_bytes


PRINT_PEAK = "from benchmarks.scaling import peak_rss_mib; print(peak_rss_mib())"


def test_a_child_reports_its_own_peak_not_its_parents() -> None:
    """``python -m benchmarks all`` spawns the measurements from a process that has run
    the model benchmarks: Linux keeps ``ru_maxrss`` across exec, ``VmHWM`` it resets."""
    from benchmarks.scaling import peak_rss_mib

    ballast = b"\x01" * (768 << 20)  # resident: every page written
    assert peak_rss_mib() > 768
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            "from benchmarks.scaling import peak_rss_mib; print(peak_rss_mib())",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert float(child.stdout) < 700, child.stdout  # its imports only, not the ballast
    del ballast
