"""``python -m benchmarks seed``: the tutorial's seed.yaml against a stateful ``objective:
all`` model of the same size; the figures it records must agree with its own curves."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from benchmarks import seed_vs_stateful as bench
from tests.conftest import WONDERLAND, run_benchmarks


@pytest.mark.skipif(not WONDERLAND.is_file(), reason=f"{WONDERLAND} not present")
def test_quick_run_records_curves_that_agree_with_its_figures(tmp_path: Path) -> None:
    proc = run_benchmarks("--results-dir", str(tmp_path), "seed", "--quick")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert any(line.startswith("ratio=") for line in proc.stdout.splitlines())
    record = json.loads((tmp_path / "seed.json").read_text(encoding="utf-8"))
    assert record["name"] == "seed" and record["command"].endswith("seed --quick")
    figs = record["figures"]
    a, b = figs["a"], figs["b"]
    keys = ("seconds", "cumulative_s", "train_nll", "val_nll", "val_bpc")

    # A: seed.yaml cut to --quick's 2 epochs, one figure per epoch
    assert figs["settings"]["a"]["epochs"] == 2 and figs["settings"]["chars"] == 20_000
    assert all(len(a[k]) == 2 for k in keys)
    n_b = len(b["val_nll"])
    assert n_b >= 1 and all(len(b[k]) == n_b for k in keys)
    for side in (a, b):
        assert all(s > 0 for s in side["seconds"])
        assert side["cumulative_s"] == pytest.approx(
            [sum(side["seconds"][: i + 1]) for i in range(len(side["seconds"]))]
        )
        # character level: bpc is nll in bits (same positions, every val char once)
        assert side["val_bpc"] == pytest.approx([v / math.log(2) for v in side["val_nll"]])
    assert figs["settings"]["a"]["params"] == figs["settings"]["b"]["params"]  # same size

    # the target is A's final training loss; A's time is all of its epochs
    assert figs["target_nll"] == a["train_nll"][-1]
    assert a["time_s"] == pytest.approx(sum(a["seconds"]))
    # B's crossing: the first epoch whose val loss <= the target, recomputed
    below = [i + 1 for i, v in enumerate(b["val_nll"]) if v <= figs["target_nll"]]
    crossing = below[0] if below else None
    assert b["crossing_epoch"] == crossing
    assert b["best_val_nll"] == min(b["val_nll"])
    assert b["val_nll"][b["best_epoch"] - 1] == b["best_val_nll"]
    if crossing is None:  # it stopped at its time cap, or on a plateau of its val loss
        assert figs["ratio"] is None and figs["met"] is False
        if b["stopped"] == "cap":
            assert sum(b["seconds"]) >= figs["settings"]["cap"] * a["time_s"]
        else:
            patience = figs["settings"]["patience"]
            assert b["stopped"] == "plateau" and n_b > patience
            assert min(b["val_nll"][-patience:]) >= min(b["val_nll"][:-patience])
    else:
        assert b["stopped"] == "reached"
        assert n_b == max(crossing, 2)  # no epoch after the crossing once A was done
        time_b = sum(b["seconds"][:crossing])
        assert b["time_s"] == pytest.approx(time_b)
        assert figs["ratio"] == pytest.approx(time_b / a["time_s"])
        assert figs["met"] == (figs["ratio"] <= figs["target_ratio"])
    assert figs["target_ratio"] == 0.1

    # the same-figure comparison: the lowest of A's val losses that B's val loss reached
    reached = [
        (v, i + 1, next(j + 1 for j, w in enumerate(b["val_nll"]) if w <= v))
        for i, v in enumerate(a["val_nll"])
        if min(b["val_nll"]) <= v
    ]
    matched = figs["matched_val"]
    if not reached:
        assert matched is None
    else:
        val, epoch_a, epoch_b = min(reached)
        assert (matched["val_nll"], matched["a_epoch"], matched["b_epoch"]) == (
            val,
            epoch_a,
            epoch_b,
        )
        assert matched["ratio"] == pytest.approx(
            sum(b["seconds"][:epoch_b]) / sum(a["seconds"][:epoch_a])
        )
    assert f"ratio={'-' if figs['ratio'] is None else format(figs['ratio'], '.4f')}" in (
        proc.stdout
    )
    # the reachable reading: B's time to A's final val loss, over A's whole time
    to_val = figs["ratio_to_a_val"]
    if to_val is None:
        assert figs["b"]["time_to_a_val_s"] is None and figs["met_at_a_val"] is False
    else:
        assert to_val == pytest.approx(figs["b"]["time_to_a_val_s"] / figs["a"]["time_s"])
        assert figs["met_at_a_val"] is (to_val <= 0.1)
    last = next(line for line in proc.stdout.splitlines() if line.startswith("ratio="))
    assert last.endswith(
        f"val_ratio={'-' if to_val is None else format(to_val, '.4f')} "
        f"val_met={'yes' if figs['met_at_a_val'] else 'no'}"
    )
    assert figs["settings"]["b"]["lr_schedule"] == "plateau"  # the default


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--epochs", "0"], "--epochs"),
        (["--bptt", "0"], "--bptt"),
        (["--lr", "-1"], "--lr"),
        (["--patience", "0"], "--patience"),
        (["--epochs", "two"], "--epochs"),
        (["--data", "/no/such/book.txt"], "--data"),
    ],
)
def test_bad_argument_is_one_line_error_exit_2(
    args: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        bench.main(args)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and named in err


def test_bad_argument_through_the_suite_writes_nothing(tmp_path: Path) -> None:
    proc = run_benchmarks("--results-dir", str(tmp_path), "seed", "--epochs", "0", timeout=60)
    assert proc.returncode == 2
    first, *rest = proc.stderr.splitlines()
    assert first == "error: --epochs must be >= 1 (got 0)"
    assert "Traceback" not in proc.stderr and len(rest) <= 1  # the suite's "exited with 2"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not WONDERLAND.is_file(), reason=f"{WONDERLAND} not present")
def test_streams_the_train_split_cannot_fill_is_one_line_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rc = bench.main(["--quick", "--streams", "1000", "--bptt", "100"])
    assert rc == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("error: --streams/--bptt: ")


def test_first_at_or_below() -> None:
    assert bench.first_at_or_below([3.0, 2.5, 2.0, 1.0], 2.0) == 3
    assert bench.first_at_or_below([3.0, 2.5], 2.0) is None
    assert bench.first_at_or_below([], 2.0) is None


def test_plateaued_means_no_new_best_in_the_last_patience_values() -> None:
    assert bench.plateaued([3.0, 2.0, 2.1, 2.2], 2)
    assert not bench.plateaued([3.0, 2.0, 2.1, 1.9], 2)
    assert not bench.plateaued([3.0, 2.9], 2)  # too few to tell
