"""``make demo``: a short-range source and a long-lag one, n-gram against rnn against
lstm/gru, each against the source's known optimum, with three lines under each
leaderboard saying who won, by how much and why (tests/test_story.py checks the
wording; here, that the runs the demo makes tell the tutorial's story).

The short-range run is also the Markov reproduction: the LSTM comes within 0.02 bpc of
the source's entropy rate, and of the oracle on the same test positions.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.comparisons import Comparison, read_comparison
from tests.conftest import REPO, run_cli

pytestmark = pytest.mark.slow


def demo(config: str, tracking_uri: str, tmp_path: Path) -> Comparison:
    result = run_cli(
        "run", "--config", config, "--tracking-uri", tracking_uri, "--set", "train.progress=false"
    )
    return read_comparison(result, tracking_uri, tmp_path)


def story(run: Comparison, tracking_uri: str, dst: Path) -> list[str]:
    """The three lines, as logged on the parent run (and printed under the leaderboard)."""
    lines = run.summary(MlflowClient(tracking_uri), dst)
    start = next(i for i, line in enumerate(lines) if line.startswith("who won: "))
    assert "who won: " in run.stdout and "why: " in run.stdout
    return lines[start : start + 3]


def test_make_demo_runs_both_configs() -> None:
    recipe = (REPO / "Makefile").read_text().split("\ndemo:")[1].split("\n\n")[0]
    assert "configs/demo.yaml" in recipe and "configs/demo-long-lag.yaml" in recipe


def test_short_range_source_every_model_near_the_optimum(
    prefect_server: str, tracking_uri: str, tmp_path: Path
) -> None:
    run = demo("configs/demo.yaml", tracking_uri, tmp_path)
    board, metrics = run.board, run.parent.data.metrics
    assert {"oracle", "ngram", "rnn", "lstm", "gru"} <= set(board.index)
    entropy = metrics["source_entropy_rate_bits"]
    # the reproduction: the LSTM within 0.02 bpc of the entropy rate and of the oracle
    assert abs(board.loc["lstm", "test_bpc"] - entropy) < 0.02
    assert 0 < board.loc["lstm", "gap_bpc"] < 0.02
    # the trigram sees exactly the two characters the law depends on
    assert 0 <= board.loc["ngram", "gap_bpc"] < 0.01
    who, much, why = story(run, tracking_uri, tmp_path)
    assert who.startswith(f"who won: {board.index[1]}")  # row 0 is the oracle
    assert much.startswith("by how much: gap to the optimum")
    assert why.startswith("why: each character depends only on the previous 2")
    assert "every model sees that far back" in why


def test_long_lag_source_only_memory_reaches_the_optimum(
    prefect_server: str, tracking_uri: str, tmp_path: Path
) -> None:
    run = demo("configs/demo-long-lag.yaml", tracking_uri, tmp_path)
    board, metrics = run.board, run.parent.data.metrics
    memoryless = metrics["source_memoryless_bits"]
    oracle = board.loc["oracle", "test_bpc"]
    headroom = memoryless - oracle
    gated = min(board.loc["lstm", "gap_bpc"], board.loc["gru", "gap_bpc"])
    # a gated cell recalls the symbol: most of the way from memoryless to the optimum
    assert gated < 0.25 * headroom, board[["test_bpc", "gap_bpc"]]
    # the n-gram cannot see 21 characters back; the vanilla RNN does not learn to
    assert board.loc["ngram", "test_bpc"] > memoryless - 0.01
    assert board.loc["rnn", "gap_bpc"] > gated + 0.5 * headroom
    who, much, why = story(run, tracking_uri, tmp_path)
    assert who.split(",")[0] in ("who won: lstm", "who won: gru")
    assert f"memoryless {memoryless:.4f}" in much
    assert "each recalled symbol was seen 21 characters earlier" in why
    assert "ngram (4) sees fewer than 21 characters back" in why
