"""Sources of known optimum (reber, copy) and the oracle row that scores their true law.

Entropy rates are checked against hand computations, the oracle against independent
per-position references, and models against the oracle on the same positions.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from pipeline_core import synthetic_copy, synthetic_reber
from pipeline_core.config import DataConfig
from pipeline_core.errors import ConfigError
from pipeline_core.experiment import clean, encode, fit_data, ingest
from pipeline_core.metrics import LN2, evaluate, score_targets, scored_chars
from pipeline_core.oracle import ORACLE, known_optimum, oracle_targets, source_law
from pipeline_core.synthetic import MarkovSource, make_synthetic
from pipeline_core.tasks import get_task
from pipeline_core.vectorize import EncodedCorpus, vectorize
from plugins.ngram import NGramModel
from tests.conftest import assert_one_line_error, run_cli

NEXT = get_task("next-token")
MIN_EPISODES = f"fewer than {synthetic_copy.MIN_EPISODES} of them"

# The Reber language as a regular expression, written from the grammar's drawing
# (Fahlman 1991): from state 4, (X T* V P)* then S or X T* V V; from state 5,
# (P X T* V)* then V or P S. An independent check of the automaton's tables.
_L4 = r"(?:XT*VP)*(?:S|XT*VV)"
_L5 = r"(?:PXT*V)*(?:V|PS)"
REBER = rf"B(?:TS*X{_L4}|PT*V{_L5})E"
EMBEDDED = re.compile(rf"B([TP])({REBER})\1E")


def _corpus(source: str, clean_preset: str = "none", level: str = "char") -> EncodedCorpus:
    data = DataConfig(source=source, clean=clean_preset, level=level, context_len=8)  # type: ignore[arg-type]
    return encode(clean(ingest(data), data), data)


# ---- reber ----------------------------------------------------------------------------
def test_reber_entropy_rate_matches_the_hand_computation() -> None:
    # Expected branch steps h_i from inner state i to the end, solved by hand:
    # h2 = 2 + h4, h3 = 2 + h5, h4 = 1 + h3/2, h5 = 1 + h4/2 -> h4 = 10/3, h3 = 14/3,
    # h5 = 8/3, h2 = 16/3, h1 = 1 + (h2 + h3)/2 = 6.
    h4, h3, h5, h2 = Fraction(10, 3), Fraction(14, 3), Fraction(8, 3), Fraction(16, 3)
    assert h2 == 1 + (h2 + h4) / 2 and h3 == 1 + (h3 + h5) / 2
    assert h4 == 1 + h3 / 2 and h5 == 1 + h4 / 2
    k = 1 + (h2 + h3) / 2
    # each embedded string: 1 + K bits (the T/P choice, then K branches) in 6 + K symbols
    rate = (1 + k) / (6 + k)
    assert rate == Fraction(7, 12)
    assert synthetic_reber.entropy_rate_bits() == pytest.approx(float(rate), abs=1e-12)


def test_reber_stream_is_embedded_reber_strings_back_to_back() -> None:
    text, meta = make_synthetic("reber", {"length": "5000", "seed": "3"})
    assert len(text) == 5000 and set(text) <= set("BEPSTVX")
    last_end = text.rindex("E", 0, text.rindex("B"))  # the last complete string ends here
    strings = list(EMBEDDED.finditer(text[: last_end + 1]))
    assert "".join(m.group(0) for m in strings) == text[: last_end + 1]
    assert len(strings) > 100 and {m.group(1) for m in strings} == {"T", "P"}
    assert meta["source"] == "synthetic:reber?length=5000&seed=3"
    assert make_synthetic("reber", {"length": "5000", "seed": "3"})[0] == text


def test_reber_oracle_on_a_long_sample_is_the_entropy_rate() -> None:
    corpus = _corpus("synthetic:reber?length=300000")
    optimum = known_optimum(NEXT, corpus)
    assert optimum is not None and optimum.baseline.label == ORACLE
    n = optimum.baseline.test.n_tokens
    # each position costs 0 or 1 bit, so its variance is at most 1/4
    tolerance = 5 * math.sqrt(0.25 / n)
    assert optimum.baseline.test.bpc == pytest.approx(7 / 12, abs=tolerance)
    assert optimum.baseline.val.bpc == pytest.approx(7 / 12, abs=tolerance)


def test_reber_oracle_knows_the_long_range_symbol() -> None:
    """Before the final E the embedded grammar repeats the second symbol: the oracle
    puts all its mass there (log p = 0), wherever the string started."""
    corpus = _corpus("synthetic:reber?length=20000")
    found = source_law(corpus)
    assert found is not None
    law, params, text, _ = found
    scored = oracle_targets(corpus, law, params, text, "test")
    positions = corpus.scoring_positions("test")
    closing = [
        i for i, t in enumerate(positions.tolist()) if text[t - 1] == "E" and text[t] in "TP"
    ]
    assert closing and np.all(scored.logp[closing] == 0.0)


# ---- copy ----------------------------------------------------------------------------
@pytest.mark.parametrize("lag", [1, 5, 30])
def test_copy_figures_are_the_documented_formulas(lag: int) -> None:
    length = 40 * (lag + 20)
    text, meta = make_synthetic("copy", {"lag": str(lag), "length": str(length)})
    assert meta["entropy_rate_bits"] == pytest.approx(30 / (lag + 20))
    assert meta["memoryless_bits"] == pytest.approx(60 / (lag + 20))
    # the classic output-only baseline, 10 ln 8 / (T + 20) nats, is the same 30 bits
    assert 10 * math.log(8) / (lag + 20) / LN2 == pytest.approx(meta["entropy_rate_bits"])
    episodes = [text[i : i + lag + 20] for i in range(0, len(text), lag + 20)]
    for ep in episodes:
        assert ep[10:] == "." * (lag - 1) + ":" + ep[:10] and set(ep[:10]) <= set("abcdefgh")
    # a memoryless model that knows the layout pays 3 bits at every letter, 0 elsewhere
    memoryless = 3 * sum(c in "abcdefgh" for c in text) / len(text)
    assert memoryless == pytest.approx(meta["memoryless_bits"], abs=1e-12)


@pytest.mark.parametrize(("lag", "k"), [(1, 1), (20, 1), (6, 3)])
def test_copy_with_fewer_symbols_follows_the_same_formulas(lag: int, k: int) -> None:
    n = lag + 2 * k
    text, meta = make_synthetic("copy", {"lag": str(lag), "symbols": str(k), "length": str(50 * n)})
    assert meta["entropy_rate_bits"] == pytest.approx(3 * k / n)
    assert meta["memoryless_bits"] == pytest.approx(6 * k / n)
    for i in range(0, len(text), n):
        ep = text[i : i + n]
        assert ep[k:] == "." * (lag - 1) + ":" + ep[:k] and set(ep[:k]) <= set("abcdefgh")
    corpus = _corpus(f"synthetic:copy?lag={lag}&symbols={k}&length={50 * n}")
    optimum = known_optimum(NEXT, corpus)
    assert optimum is not None and optimum.span == lag + k
    positions = corpus.scoring_positions("test")
    fresh = int((positions % n < k).sum())
    assert optimum.baseline.test.bpc == pytest.approx(3 * fresh / scored_chars(corpus, "test"))
    # the classic task is unchanged by the new parameter
    assert (
        make_synthetic("copy", {"lag": "5", "symbols": "10"})[0]
        == make_synthetic("copy", {"lag": "5"})[0]
    )


def test_copy_oracle_pays_three_bits_per_fresh_symbol_only() -> None:
    lag = 7
    corpus = _corpus(f"synthetic:copy?lag={lag}&length=13500")
    optimum = known_optimum(NEXT, corpus)
    assert optimum is not None and optimum.memoryless_bits == pytest.approx(60 / (lag + 20))
    positions = corpus.scoring_positions("test")
    fresh = int((positions % (lag + 20) < 10).sum())
    expected = 3 * fresh / scored_chars(corpus, "test")
    assert optimum.baseline.test.bpc == pytest.approx(expected, abs=1e-12)
    assert f"memoryless figure: {60 / (lag + 20):.4f} bits/char" in optimum.notes()[0]


# ---- markov and the n-gram ------------------------------------------------------------
def test_markov_oracle_is_the_transition_row_of_each_context() -> None:
    corpus = _corpus("synthetic:markov?order=2&length=20000&seed=4")
    found = source_law(corpus)
    assert found is not None
    law, params, text, _ = found
    source = MarkovSource.random(2, params.alphabet, params.concentration, params.seed)
    positions = corpus.scoring_positions("val")
    index = {c: i for i, c in enumerate(source.alphabet)}
    reference = [
        math.log(source.transition[index[text[t - 2]] * 6 + index[text[t - 1]], index[text[t]]])
        for t in positions.tolist()
    ]
    scored = oracle_targets(corpus, law, params, text, "val")
    np.testing.assert_allclose(scored.logp, reference, atol=1e-12)


def test_markov_oracle_before_a_full_context_uses_the_stationary_start() -> None:
    found = source_law(_corpus("synthetic:markov?order=2&length=3000&seed=1"))
    assert found is not None
    law, params, text, _ = found
    source = MarkovSource.random(2, params.alphabet, params.concentration, params.seed)
    pi = source.stationary().reshape(6, 6)  # [oldest, newest]
    _, probs = law(params, text, np.array([0, 1]))
    np.testing.assert_allclose(probs[0], pi.sum(axis=1), atol=1e-12)
    first = source.alphabet.index(text[0])
    np.testing.assert_allclose(probs[1], pi[first] / pi[first].sum(), atol=1e-12)


def test_markov_oracle_on_a_long_sample_is_the_entropy_rate() -> None:
    corpus = _corpus("synthetic:markov?length=400000")
    found = source_law(corpus)
    assert found is not None
    law, params, text, meta = found
    bits = -oracle_targets(corpus, law, params, text, "test").logp / LN2
    tolerance = 5 * float(bits.std()) / math.sqrt(len(bits))
    assert float(bits.mean()) == pytest.approx(meta["entropy_rate_bits"], abs=tolerance)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ngram_of_the_right_order_never_beats_the_oracle(seed: int) -> None:
    corpus = _corpus(f"synthetic:markov?order=2&length=30000&seed={seed}")
    found = source_law(corpus)
    assert found is not None
    law, params, text, _ = found
    model = NGramModel(len(corpus.vocab), {"order": 3})
    model.fit(fit_data(corpus))
    positions = corpus.scoring_positions("test")
    model_logp = score_targets(model, corpus.contexts_at(positions), corpus.ids[positions]).logp
    oracle_logp = oracle_targets(corpus, law, params, text, "test").logp
    excess = (oracle_logp - model_logp) / LN2  # bits the model pays over the oracle
    noise = 3 * float(excess.std()) / math.sqrt(len(excess))
    assert float(excess.mean()) >= -noise
    optimum = known_optimum(NEXT, corpus)
    assert optimum is not None
    per_char = len(excess) / scored_chars(corpus, "test")
    gap = float(excess.mean()) * per_char
    model_bpc = evaluate(model, corpus, "test").bpc
    assert model_bpc - optimum.baseline.test.bpc == pytest.approx(gap, abs=1e-9)


# ---- where there is no oracle ----------------------------------------------------------
def test_no_oracle_when_cleaning_changed_the_text_or_not_char_level() -> None:
    assert known_optimum(NEXT, _corpus("synthetic:reber?length=3000", "seed")) is None
    text, _ = make_synthetic("markov", {"length": "3000"})
    words = " ".join(text[i : i + 3] for i in range(0, 3000, 3))
    data = DataConfig(source="synthetic:markov?length=3000", clean="none", level="word")
    assert known_optimum(NEXT, vectorize(words, data)) is None
    assert known_optimum(get_task("fill-blank"), _corpus("synthetic:reber?length=3000")) is None


def test_oracle_vocabulary_lacking_a_symbol_gives_it_to_unk() -> None:
    data = DataConfig(source="synthetic:copy?lag=3&length=2300", clean="none", context_len=8)
    text, _ = make_synthetic("copy", {"lag": "3", "length": "2300"})
    corpus = vectorize(text, data.model_copy(update={"max_vocab": 9}))  # one letter -> <unk>
    assert len(corpus.vocab.symbols) == 9
    optimum = known_optimum(NEXT, corpus)
    assert optimum is not None and math.isfinite(optimum.baseline.test.bpc)


# ---- bad parameters ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "params", "fragments"),
    [
        ("copy", {"lag": "0"}, ["synthetic:copy", "lag='0'"]),
        ("copy", {"lag": "10001"}, ["synthetic:copy", "lag='10001'"]),
        ("copy", {"lag": "500", "length": "1000"}, ["lag=500", "length=1000", MIN_EPISODES]),
        ("copy", {"episodes": "3"}, ["'episodes'", "known: lag, length, seed, symbols"]),
        ("copy", {"symbols": "0"}, ["synthetic:copy", "symbols='0'"]),
        ("reber", {"depth": "2"}, ["'depth'", "known: length, seed"]),
        ("reber", {"length": "0"}, ["length='0'"]),
    ],
)
def test_bad_parameters_are_one_line_errors(
    name: str, params: dict[str, str], fragments: list[str]
) -> None:
    with pytest.raises(ConfigError) as err:
        make_synthetic(name, params)
    message = str(err.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_unknown_synthetic_name_lists_reber_and_copy() -> None:
    with pytest.raises(ConfigError, match=r"unknown synthetic source 'lorenz'; known: ") as err:
        make_synthetic("lorenz", {})
    known = str(err.value).split("known: ")[1].split(", ")
    assert {"copy", "markov", "reber"} <= set(known)


def test_cli_refuses_a_bad_lag_in_one_line() -> None:
    result = run_cli("data", "inspect", "synthetic:copy?lag=0")
    assert_one_line_error(result, "synthetic:copy", "lag")


# ---- end to end ----------------------------------------------------------------------
@pytest.mark.slow
def test_run_on_reber_has_an_oracle_row_and_parent_metrics(
    prefect_server: str, tracking_uri: str, tmp_path: Path
) -> None:
    result = run_cli(
        "run",
        "--data",
        "synthetic:reber?length=4000",
        "--clean",
        "none",
        "--models",
        "ngram",
        "--tracking-uri",
        tracking_uri,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "oracle on these test positions" in result.stdout
    assert "gap" in result.stdout and "exact law" in result.stdout
    match = re.search(r"MLflow parent run: ([0-9a-f]{32})", result.stdout)
    assert match is not None
    client = MlflowClient(tracking_uri)
    parent = client.get_run(match.group(1))
    metrics = parent.data.metrics
    assert metrics["source_entropy_rate_bits"] == pytest.approx(7 / 12)
    assert {"oracle_test_bpc", "oracle_val_bpc"} <= set(metrics)
    printed = re.search(r"oracle on these test positions: ([0-9.]+) bpc", result.stdout)
    assert printed is not None
    assert float(printed.group(1)) == pytest.approx(metrics["oracle_test_bpc"], abs=5e-5)
    board_path = client.download_artifacts(parent.info.run_id, "leaderboard.csv", str(tmp_path))
    board = pd.read_csv(board_path).set_index("model")
    assert board.loc[ORACLE, "plugin"] == "baseline"
    assert board.loc[ORACLE, "test_bpc"] == pytest.approx(metrics["oracle_test_bpc"])
    assert board.loc["ngram", "gap_bpc"] == pytest.approx(
        board.loc["ngram", "test_bpc"] - metrics["oracle_test_bpc"]
    )
    assert board.loc["ngram", "gap_bpc"] > -0.05
