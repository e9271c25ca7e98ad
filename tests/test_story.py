"""The three lines under a leaderboard with a known optimum: every figure is read off
the run (the leaderboard, each model's reach, its measured gradient flow)."""

from __future__ import annotations

import math

import pytest

from pipeline_core.experiment import ModelResult, leaderboard
from pipeline_core.metrics import Scores
from pipeline_core.oracle import ORACLE, KnownOptimum, law_span
from pipeline_core.story import flow_ratio, story_lines
from pipeline_core.synthetic import MarkovParams
from pipeline_core.synthetic_copy import CopyParams
from pipeline_core.synthetic_reber import ReberParams
from pipeline_core.tasks import Baseline


def scores(bpc: float) -> Scores:
    return Scores(
        nll=bpc * math.log(2), bpc=bpc, ppl=2**bpc, acc1=0.5, acc5=0.9, n_tokens=100, n_chars=100
    )


def result(
    label: str, plugin: str, bpc: float, reach: float | None, flow: list[float] | None = None
) -> ModelResult:
    return ModelResult(
        label=label, plugin=plugin, run_id="r", scores=scores(bpc), val_scores=scores(bpc),
        train_seconds=1.0, scoring="windows", grad_flow=flow, reach=reach,
    )  # fmt: skip


def oracle_row(bpc: float) -> ModelResult:
    return ModelResult(
        label=ORACLE, plugin="baseline", run_id="p", scores=scores(bpc), val_scores=scores(bpc),
        train_seconds=0.0, scoring="exact law",
    )  # fmt: skip


def optimum(
    bpc: float, span: int | None, note: str, memoryless: float | None = None
) -> KnownOptimum:
    base = Baseline(ORACLE, scores(bpc), scores(bpc), "exact law")
    return KnownOptimum(base, bpc, memoryless, span, note)


COPY_RESULTS = [
    result("ngram", "ngram", 2.10, 4.0),
    result("rnn", "rnn", 1.49, 64.0, [1e-12, 1e-6, 1.0]),
    result("lstm", "lstm", 0.80, 64.0, [2e-3, 0.1, 1.0]),
    result("gru", "gru", 0.85, 64.0, [5e-2, 0.2, 1.0]),
]


def test_the_three_lines_name_the_winner_the_gaps_and_the_reasons() -> None:
    table = leaderboard([*COPY_RESULTS, oracle_row(0.75)])
    span, note = law_span(CopyParams(lag=20))
    lines = story_lines(table, optimum(0.75, span, note, memoryless=1.5), COPY_RESULTS)
    assert len(lines) == 3
    who, much, why = lines
    assert who.startswith("who won: lstm, 0.8000 bpc on test, +0.0500 from the oracle's 0.7500")
    assert "gru next, +0.0500 behind" in who
    assert much.startswith("by how much: gap to the optimum (bpc) lstm +0.0500, gru +0.1000")
    assert "rnn +0.7400, ngram +1.3500" in much
    assert "remembering nothing costs +0.7500 (memoryless 1.5000)" in much
    assert why.startswith("why: each recalled symbol was seen 30 characters earlier")
    assert "ngram (4) sees fewer than 30 characters back" in why
    # strongest gradient first, as measured
    assert "3 steps back" in why and "gru 5e-02, lstm 2e-03, rnn 1e-12" in why


def test_when_every_model_sees_the_whole_law_memory_is_not_the_reason() -> None:
    flow = [1e-4, 1.0]  # measured, but no reason here: no model needed memory
    results = [result("ngram", "ngram", 1.81, 2.0), result("lstm", "lstm", 1.83, math.inf, flow)]
    table = leaderboard([*results, oracle_row(1.80)])
    span, note = law_span(MarkovParams(order=2))
    who, much, why = story_lines(table, optimum(1.80, span, note), results)
    assert who.startswith("who won: ngram") and "lstm next, +0.0200 behind" in who
    assert "memoryless" not in much
    assert why == (
        "why: each character depends only on the previous 2; every model sees that far "
        "back (ngram 2, lstm the whole stream), so no long memory is needed: what "
        "separates them is how well each estimated the law from the training text"
    )


def test_no_reach_claim_where_the_law_has_no_fixed_span() -> None:
    results = [result("lstm", "lstm", 0.60, 10.0)]
    table = leaderboard([*results, oracle_row(0.58)])
    span, note = law_span(ReberParams())
    assert span is None
    why = story_lines(table, optimum(0.58, span, note), results)[2]
    assert "sees" not in why and "repeats its second symbol" in why


def test_nothing_to_tell_without_a_finished_model() -> None:
    failed = ModelResult(label="lstm", plugin="lstm", run_id="r", error="boom")
    table = leaderboard([failed, oracle_row(1.0)])
    assert story_lines(table, optimum(1.0, 2, "x"), [failed]) == []


@pytest.mark.parametrize(
    ("norms", "expected"),
    [([1e-3, 0.5, 1.0], 1e-3), ([2.0, 4.0], 0.5), ([1.0], None), ([1.0, 0.0], None), (None, None)],
)
def test_flow_ratio(norms: list[float] | None, expected: float | None) -> None:
    assert flow_ratio(norms) == expected


def test_example_sources_state_their_exact_optimum() -> None:
    from pipeline_core.config import DataConfig
    from pipeline_core.experiment import optimum_lines, source_optimum
    from pipeline_core.tasks import get_task

    parity = DataConfig(source="synthetic:parity?length=6&examples=50")
    assert source_optimum(parity) == {"accuracy": 1.0, "log_loss": 0.0}
    assert source_optimum(DataConfig(source="synthetic:adding?length=4&examples=50")) == {
        "mse": 0.0
    }
    assert source_optimum(DataConfig(source="synthetic:markov")) == {}
    rows = [
        ModelResult(
            label="gru", plugin="gru", run_id="r", train_seconds=1.0,
            scores=Scores(nll=0.25, bpc=math.nan, ppl=math.nan, acc1=math.nan, acc5=math.nan,
                          n_tokens=10, n_chars=0, log_loss=0.25, accuracy=0.9),
        ),
    ]  # fmt: skip
    table = leaderboard(rows, "log_loss")
    lines = optimum_lines(table, get_task("classify"), source_optimum(parity))
    assert lines == ["known optimum: log_loss 0 (exact for this source); gru is +0.2500 from it"]
    assert optimum_lines(table, get_task("regress"), source_optimum(parity)) == []
