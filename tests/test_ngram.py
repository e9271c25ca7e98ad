"""The n-gram plugin on its own: config errors, the contract, textbook formulas, persistence.

NLTK equality lives in ``test_ngram_nltk.py``, ARPA export in ``test_ngram_arpa.py``.
Here the default (textbook) smoothings are checked against a from-the-formulas Python
reference, so a vectorisation bug cannot hide behind agreement with itself.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, get_args

import numpy as np
import pytest
import torch

from pipeline_core.contract import FitData, NotFittedError
from pipeline_core.errors import ConfigError, DataError
from plugins.ngram import NGramConfig, NGramModel, Smoothing

ALL = list(get_args(Smoothing))  # every smoothing the config accepts
SMOOTHED = [s for s in ALL if s != "mle"]


def fit(stream: Any, vocab_size: int, val: Any = None, **params: Any) -> NGramModel:
    model = NGramModel(vocab_size, params)
    val_arr = None if val is None else np.asarray(val)
    model.fit(FitData(np.asarray(stream), val_arr, vocab_size, 4))
    return model


def random_stream(n: int = 400, vocab_size: int = 9, seed: int = 0) -> np.ndarray:
    """A skewed stream over ids 1..V-3: id 0 (<unk>) and the last two ids never occur."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, vocab_size - 2)
    return rng.choice(np.arange(1, vocab_size - 2), size=n, p=p / p.sum())


# ---------------------------------------------------------------- config errors


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"order": 0}, "order"),
        ({"order": -2}, "order"),
        ({"k": 0}, "k"),
        ({"k": -0.5}, "k"),
        ({"discount": 0}, "discount"),
        ({"discount": 1}, "discount"),
        ({"discount": 1.5}, "discount"),
        ({"backoff_alpha": 0}, "backoff_alpha"),
        ({"smoothing": "good_turing"}, "smoothing"),
        ({"smoothing": "laplace", "k": 0.5}, "k"),
        ({"smoothing": "modified_kneser_ney", "nltk_compat": True}, "nltk_compat"),
        ({"ordre": 3}, "ordre"),
    ],
)
def test_bad_config_is_a_one_line_config_error_naming_the_field(params, field):
    with pytest.raises(ConfigError) as err:
        NGramModel(10, params)
    msg = str(err.value)
    assert f"NGramModel.{field}" in msg
    assert "\n" not in msg


def test_defaults_and_test_params():
    cfg = NGramConfig()
    assert (cfg.order, cfg.smoothing, cfg.k, cfg.discount, cfg.backoff_alpha) == (
        5,
        "kneser_ney",
        1.0,
        0.75,
        0.4,
    )
    assert cfg.nltk_compat is False
    small = NGramModel.make_config(NGramModel.test_params)
    assert isinstance(small, NGramConfig) and small.order == 3
    assert "next-token" in NGramModel.task_kinds


# ---------------------------------------------------------------- contract


def test_scoring_before_fit_raises_not_fitted():
    model = NGramModel(5, {"order": 2})
    assert not model.is_fitted
    ctx = np.zeros((1, 1), dtype=np.int64)
    for call in (
        lambda: model.log_proba(ctx),
        lambda: model.score(ctx, np.zeros(1, dtype=np.int64)),
        model.get_state,
    ):
        with pytest.raises(NotFittedError):
            call()


def test_bad_ids_and_data_are_data_errors():
    model = fit([1, 2, 3, 1, 2], 5, order=2)
    with pytest.raises(DataError, match=r"\[0, 5\)"):
        model.log_proba(np.array([[5]]))
    with pytest.raises(DataError, match=r"\[0, 5\)"):
        model.log_proba(np.array([[-1]]))
    with pytest.raises(DataError, match="2-D"):
        model.log_proba(np.array([1, 2]))
    with pytest.raises(DataError, match="empty"):
        fit([], 5)
    with pytest.raises(DataError, match="vocab_size"):
        NGramModel(5).fit(FitData(np.array([1, 2]), None, 6, 4))
    with pytest.raises(DataError, match="train"):
        fit([1, 7], 5)


@pytest.mark.parametrize("smoothing", SMOOTHED)
@pytest.mark.parametrize("order", [1, 2, 4])
def test_rows_are_distributions_for_every_context_length(smoothing, order):
    stream = random_stream()
    model = fit(stream, 9, order=order, smoothing=smoothing)
    rng = np.random.default_rng(1)
    for T in range(0, order + 2):
        ctx = rng.integers(0, 9, size=(7, T))
        ctx[:3] = np.lib.stride_tricks.sliding_window_view(stream, T)[[0, 50, 99]]
        lp = model.log_proba(ctx)
        assert lp.shape == (7, 9) and lp.dtype == np.float64
        assert np.isfinite(lp).all()  # <unk> and never-seen ids 7, 8 included
        np.testing.assert_allclose(np.exp(lp).sum(axis=1), 1.0, rtol=0, atol=1e-12)


@pytest.mark.parametrize("smoothing", ALL)
def test_long_contexts_use_their_last_order_minus_one_tokens(smoothing):
    stream = random_stream()
    model = fit(stream, 9, order=3, smoothing=smoothing)
    win = np.lib.stride_tricks.sliding_window_view(stream, 6)[:40]
    np.testing.assert_array_equal(model.log_proba(win), model.log_proba(win[:, -2:]))
    assert not np.array_equal(model.log_proba(win[:, -1:]), model.log_proba(win[:, -2:]))


@pytest.mark.parametrize("smoothing", ALL)
@pytest.mark.parametrize("T", [0, 1, 3])
def test_score_equals_log_proba_at_the_target(smoothing, T):
    stream = random_stream()
    model = fit(stream, 9, order=3, smoothing=smoothing)
    win = np.lib.stride_tricks.sliding_window_view(stream, T + 1)[:200]
    ctx, tgt = win[:, :T], win[:, T]
    expected = model.log_proba(ctx)[np.arange(len(tgt)), tgt]
    np.testing.assert_allclose(model.score(ctx, tgt), expected, rtol=1e-13, atol=0)


def test_mle_gives_minus_inf_in_log_proba_and_score_refuses_zero_probability():
    model = fit([1, 2, 1, 2, 1, 3], 5, order=2, smoothing="mle")
    lp = model.log_proba(np.array([[1], [4]]))
    assert lp[0, 2] == pytest.approx(math.log(2 / 3)) and lp[0, 3] == pytest.approx(math.log(1 / 3))
    assert lp[0, 1] == -np.inf and lp[0, 0] == -np.inf  # unseen bigram
    assert (lp[1] == -np.inf).all()  # unseen context: NLTK's freq gives 0 everywhere
    assert np.isfinite(model.score(np.array([[1], [2]]), np.array([2, 1]))).all()
    with pytest.raises(DataError, match=r"mle n-gram gives zero probability to token id 1 "):
        model.score(np.array([[1], [1]]), np.array([2, 1]))


def test_stupid_backoff_scores_are_raw_and_log_proba_renormalises():
    model = fit([1, 2, 1, 2, 1, 3], 5, order=2, smoothing="stupid_backoff")
    raw = model.scores(np.array([[1]]))[0]
    # seen bigrams: relative frequency; others: 0.4 * unigram, or 0.4 * 0.4 / V if unseen
    np.testing.assert_allclose(raw[[2, 3]], [2 / 3, 1 / 3])
    np.testing.assert_allclose(raw[[1, 0, 4]], [0.4 * 3 / 6, 0.4 * 0.4 / 5, 0.4 * 0.4 / 5])
    assert raw.sum() > 1
    np.testing.assert_allclose(model.log_proba(np.array([[1]]))[0], np.log(raw / raw.sum()))


def test_nltk_compat_gives_unseen_tokens_zero_and_default_gives_mass():
    stream = random_stream()
    compat = fit(stream, 9, order=3, smoothing="kneser_ney", nltk_compat=True)
    default = fit(stream, 9, order=3, smoothing="kneser_ney")
    ctx = stream[None, 10:12]
    assert compat.log_proba(ctx)[0, 0] == -np.inf and compat.log_proba(ctx)[0, 8] == -np.inf
    assert np.isfinite(default.log_proba(ctx)).all()
    with pytest.raises(DataError, match=r"kneser_ney \(nltk_compat\) n-gram gives zero"):
        compat.score(ctx, np.array([0]))


# ---------------------------------------------------------------- textbook reference


def reference_prob(
    stream: list[int], V: int, N: int, smoothing: str, D: float, w: int, context: tuple
) -> float:
    """Interpolated smoothing straight from the formulas, with dicts of tuples."""
    counts = {
        k: Counter(tuple(stream[i : i + k]) for i in range(len(stream) - k + 1))
        for k in range(1, N + 1)
    }
    kn = smoothing in ("kneser_ney", "modified_kneser_ney")

    def level_counts(k: int) -> Counter:
        if not kn or k == N:
            return counts[k]
        return Counter(g[1:] for g in counts[k + 1])  # distinct left extensions

    def discounts(k: int) -> tuple[float, float, float]:
        coc = Counter(level_counts(k).values())
        n1, n2, n3, n4 = (coc[i] for i in (1, 2, 3, 4))
        if min(n1, n2, n3, n4) == 0:
            return (D, D, D)
        y = n1 / (n1 + 2 * n2)
        ds = (1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3 - 4 * y * n4 / n3)
        return ds if min(ds) > 0 else (D, D, D)

    def p(ctx: tuple) -> float:
        k = len(ctx) + 1
        follow = {g[-1]: c for g, c in level_counts(k).items() if g[:-1] == ctx}
        total = sum(follow.values())
        lower = p(ctx[1:]) if ctx else 1.0 / V
        if total == 0:
            return lower
        c = follow.get(w, 0)
        if smoothing == "witten_bell":
            gamma = len(follow) / (len(follow) + total)
            return (1 - gamma) * c / total + gamma * lower
        if smoothing == "modified_kneser_ney":
            d1, d2, d3 = discounts(k)

            def disc(x: int) -> float:
                return 0.0 if x == 0 else d1 if x == 1 else d2 if x == 2 else d3

            gamma = sum(disc(x) for x in follow.values()) / total
            return (c - disc(c)) / total + gamma * lower
        return max(c - D, 0) / total + D * len(follow) / total * lower

    return p(tuple(context[max(0, len(context) - N + 1) :]) if N > 1 else ())


@pytest.mark.parametrize(
    "smoothing", ["absolute", "witten_bell", "kneser_ney", "modified_kneser_ney"]
)
@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_default_interpolated_smoothing_matches_the_textbook_reference(smoothing, order):
    V = 9
    stream = random_stream(n=300, vocab_size=V, seed=order).tolist()
    model = fit(stream, V, order=order, smoothing=smoothing, discount=0.6)
    rng = np.random.default_rng(order)
    contexts = [tuple(stream[i - order + 1 : i]) for i in (order + 3, 50, 120)]
    contexts += [tuple(rng.integers(0, V, size=order - 1).tolist())]  # likely unseen
    contexts += [tuple(stream[:j]) for j in range(order - 1)]  # short contexts
    for ctx in contexts:
        got = np.exp(model.log_proba(np.array(ctx, dtype=np.int64).reshape(1, len(ctx))))[0]
        want = [reference_prob(stream, V, order, smoothing, 0.6, w, ctx) for w in range(V)]
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=0, err_msg=str(ctx))


def test_modified_kneser_ney_discounts_follow_chen_and_goodman():
    stream = random_stream(n=3000, vocab_size=40, seed=3).tolist()
    model = fit(stream, 40, order=3, smoothing="modified_kneser_ney")
    top = Counter(zip(stream, stream[1:], stream[2:], strict=False)).values()
    coc = Counter(top)
    n1, n2, n3, n4 = (coc[i] for i in (1, 2, 3, 4))
    y = n1 / (n1 + 2 * n2)
    want = (1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3 - 4 * y * n4 / n3)
    np.testing.assert_allclose(model.discounts_[3], want, rtol=1e-14)
    assert all(0 < d < i for i, d in enumerate(want, start=1))
    # the lower level's discounts come from continuation counts N1+(. a b)
    trigrams = set(zip(stream, stream[1:], stream[2:], strict=False))
    cont = Counter(Counter(g[1:] for g in trigrams).values())
    n1, n2, n3, n4 = (cont[i] for i in (1, 2, 3, 4))
    y = n1 / (n1 + 2 * n2)
    want2 = (1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3 - 4 * y * n4 / n3)
    np.testing.assert_allclose(model.discounts_[2], want2, rtol=1e-14)
    assert want2 != want
    # a tiny corpus has no 4-times-seen trigram: the configured discount is used
    tiny = fit([1, 2, 3, 1, 2, 4], 6, order=3, smoothing="modified_kneser_ney", discount=0.5)
    assert tiny.discounts_[3] == (0.5, 0.5, 0.5)


# ---------------------------------------------------------------- generation, fit, persistence

SENTENCES = (
    "the cat sat on the mat . the dog saw the cat . a dog sat on a log . "
    "the cat saw the dog on the mat ."
)
WORDS = SENTENCES.split()


@pytest.mark.parametrize("smoothing", ["mle", "laplace", "witten_bell", "kneser_ney"])
def test_greedy_unigram_generation_repeats_the_most_frequent_word(smoothing):
    vocab = ["<unk>", *sorted(set(WORDS))]
    ids = [vocab.index(w) for w in WORDS]
    assert Counter(WORDS).most_common(1)[0][0] == "the"

    def greedy(model: NGramModel, n: int = 6) -> str:
        seq = [vocab.index("cat")]
        for _ in range(n):
            seq.append(int(model.log_proba(np.array([seq]))[0].argmax()))
        return " ".join(vocab[i] for i in seq[1:])

    assert greedy(fit(ids, len(vocab), order=1, smoothing=smoothing)) == "the the the the the the"
    # with one token of context the model no longer repeats itself
    assert greedy(fit(ids, len(vocab), order=2, smoothing=smoothing)) != "the the the the the the"


def test_fit_reports_one_epoch_with_train_and_val_nll():
    stream = random_stream()
    seen: list = []
    model = NGramModel(9, {"order": 3})
    history = model.fit(FitData(stream[:300].astype(np.uint8), stream[300:], 9, 4), seen.append)
    assert len(history) == 1 and seen == history and model.is_fitted
    rec = history[0]
    train = stream[:300]
    want = -np.mean(
        [model.score(train[None, max(0, i - 2) : i], train[i : i + 1])[0] for i in range(300)]
    )
    assert rec.train_nll == pytest.approx(want, rel=1e-12)
    assert np.isfinite(rec.val_nll) and rec.val_nll > rec.train_nll
    assert rec.epoch == 1 and rec.tokens_per_s > 0


@pytest.mark.parametrize("smoothing", ALL)
def test_checkpoint_round_trip_gives_identical_log_proba(tmp_path, smoothing):
    stream = random_stream()
    model = fit(stream, 9, order=4, smoothing=smoothing)
    state = model.get_state()
    assert all(isinstance(t, torch.Tensor) and t.dtype == torch.int64 for t in state.values())
    path = model.save(tmp_path / "ngram.pt", vocab=[str(i) for i in range(9)], plugin="ngram")
    loaded = NGramModel.load(path, vocab=[str(i) for i in range(9)])
    assert loaded.is_fitted and loaded.config == model.config
    ctx = np.lib.stride_tricks.sliding_window_view(stream, 3)[:100]
    np.testing.assert_array_equal(loaded.log_proba(ctx), model.log_proba(ctx))
    np.testing.assert_array_equal(loaded.log_proba(ctx[:, :0]), model.log_proba(ctx[:, :0]))


def test_set_state_refuses_another_order():
    state = fit(random_stream(), 9, order=4).get_state()
    with pytest.raises(DataError, match="order/vocab_size"):
        NGramModel(9, {"order": 4, "smoothing": "laplace"}).set_state(
            {**state, "shape": torch.tensor([3, 9])}
        )
    with pytest.raises(DataError, match=r"missing (keys|counts)_5"):
        NGramModel(9, {"order": 5}).set_state({**state, "shape": torch.tensor([5, 9])})


def test_big_vocabulary_keys_do_not_overflow():
    """Trie keys are prefix_index * V + token, so V**N never appears."""
    V = 2_000_000
    rng = np.random.default_rng(0)
    stream = rng.integers(1, V, size=5000)
    stream[::7] = 5  # some repetition
    model = fit(stream, V, order=5, smoothing="witten_bell")
    assert model.score(stream[None, 100:104], stream[104:105])[0] > math.log(1 / V)
