"""The fill-blank task: its batches, positions, refusals and scoring, the n-gram's exact
two-sided Bayes, and the point of the task on real text: the right context buys bits
(a bidirectional RNN beats a next-token model of the same size scored from the left, on
the same blanks; the n-gram's two-sided score beats its own left-only one)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch

from pipeline_core.cleaning import seed_clean
from pipeline_core.config import DataConfig, TrainConfig
from pipeline_core.contract import FitData, TaskKind
from pipeline_core.errors import ConfigError, DataError, PluginError, PluginOutputError
from pipeline_core.metrics import summarize, target_scores
from pipeline_core.tasks import get_task, known_tasks
from pipeline_core.tasks.fill_blank import (
    FillBlankTask,
    blank_chars,
    blank_contexts,
    blank_positions,
)
from pipeline_core.training import fit_model
from pipeline_core.vectorize import EncodedCorpus, count_windows, vectorize
from plugins.birnn import BiRNNModel
from plugins.lstm import LSTMModel
from plugins.ngram import NGramModel
from seqlab.testing import KitCase, parametrize_with_checks
from tests.conftest_data import data_file

CONTEXT = 10


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def corpus() -> EncodedCorpus:
    """The first 20k characters of Alice, cleaned as the tutorial does (~16k train)."""
    raw = Path(data_file("wonderland.txt")).read_text(encoding="utf-8")[:20000]
    return vectorize(seed_clean(raw), DataConfig(context_len=CONTEXT))


def fit_data(corpus: EncodedCorpus) -> FitData:
    return FitData(corpus.train, corpus.val, len(corpus.vocab), corpus.config.context_len)


def left_only_bpc(model: Any, corpus: EncodedCorpus, positions: np.ndarray) -> float:
    """The model's next-token score of the blanks at ``positions``, from the left only."""
    scores = target_scores(model.log_proba(corpus.contexts_at(positions)), corpus.ids[positions])
    return summarize(scores, len(positions)).bpc


# ---- the task's shape --------------------------------------------------------------------
def test_registered_with_typed_options() -> None:
    task = get_task("fill-blank")
    assert isinstance(task, FillBlankTask) and "fill-blank" in known_tasks()
    assert task.method == "fill_blank_log_proba" and task.options.max_positions is None
    assert get_task("fill-blank", {"max_positions": 5}).options.max_positions == 5
    for bad in ({"max_positions": 0}, {"no_such": 1}):
        with pytest.raises(ConfigError):
            get_task("fill-blank", bad)


class TransduceOnly(NGramModel):
    task_kinds: ClassVar[frozenset[TaskKind]] = frozenset({"transduce"})


def test_who_runs_it_and_how_they_train_and_are_labelled() -> None:
    task = get_task("fill-blank")
    assert task.accepts(frozenset({"fill-blank"})) and task.accepts(frozenset({"next-token"}))
    assert not task.accepts(frozenset({"transduce"}))
    task.check_plugin(LSTMModel, "lstm")  # a left-only model is scored, not refused
    with pytest.raises(PluginError, match="does not support the fill-blank task") as err:
        task.check_plugin(TransduceOnly, "t")
    assert "\n" not in str(err.value)
    assert task.training_task(BiRNNModel) is task
    assert task.training_task(LSTMModel).name == "next-token"
    assert task.scoring_label(BiRNNModel, False) == "left+right"
    assert task.scoring_label(NGramModel, False) == "left+right"
    assert task.scoring_label(LSTMModel, True) == "left only"


def test_batches_are_whole_windows_shuffled_per_epoch() -> None:
    task = get_task("fill-blank")
    train = np.arange(100, dtype=np.int64)  # every id names its position
    cfg = TrainConfig(batch_size=4, seed=3, progress=False)
    window, n_windows = 2 * 5 + 1, count_windows(100, 11, 2)
    assert task.n_batches(train, 5, 2, cfg) == -(-n_windows // 4)
    first = list(task.batches(train, 5, 2, cfg, epoch=1))
    starts = []
    for batch in first:
        assert batch.inputs.shape[1] == window and not batch.carry
        assert np.array_equal(batch.targets, batch.inputs)  # every position is a blank
        assert (np.diff(batch.inputs, axis=1) == 1).all()  # contiguous windows
        starts += batch.inputs[:, 0].tolist()
    assert sorted(starts) == list(range(0, 90, 2))
    again = list(task.batches(train, 5, 2, cfg, epoch=1))
    assert all(np.array_equal(a.inputs, b.inputs) for a, b in zip(first, again, strict=True))
    other = next(iter(task.batches(train, 5, 2, cfg, epoch=2)))
    assert not np.array_equal(other.inputs, first[0].inputs)
    capped = cfg.model_copy(update={"max_batches_per_epoch": 3})
    assert len(list(task.batches(train, 5, 2, capped, epoch=1))) == 3


def test_refusals_name_the_numbers() -> None:
    task = get_task("fill-blank")
    cfg = TrainConfig(batch_size=8, progress=False)
    with pytest.raises(DataError, match=r"10 tokens.*2 \* context_len \+ 1 = 11"):
        task.n_batches(np.arange(10), 5, 1, cfg)
    with pytest.raises(DataError, match=r"batch_size=8.*30 tokens give 6 fill-blank windows"):
        task.check_fill(np.arange(30), 12, 1, cfg)
    with pytest.raises(ConfigError, match="bptt"):
        task.n_batches(np.arange(100), 5, 1, cfg.model_copy(update={"bptt": "stateful"}))


def test_forward_is_the_models_fill_blank_logits() -> None:
    model = BiRNNModel.create(6, {"embedding_dim": 4, "hidden_size": 5}, seed=0).eval()
    batch = next(iter(get_task("fill-blank").batches(np.arange(30) % 6, 3, 1, TrainConfig(), 1)))
    with torch.no_grad():
        logits, state = get_task("fill-blank").forward(model, batch, None, 0.0)
        assert state is None
        assert torch.equal(logits, model.fill_blank_logits(torch.from_numpy(batch.inputs)))


# ---- positions and contexts --------------------------------------------------------------
def test_positions_have_full_contexts_inside_the_split(corpus: EncodedCorpus) -> None:
    assert np.array_equal(blank_positions(100, 150, 10), np.arange(110, 140))
    some = blank_positions(100, 150, 10, max_positions=7)
    assert len(some) == 7 and some[0] == 110 and some[-1] == 139
    assert np.ptp(np.diff(some)) <= 1  # evenly spaced
    assert np.array_equal(blank_positions(100, 150, 10, max_positions=99), np.arange(110, 140))
    start, stop = corpus.span("val")
    positions = get_task("fill-blank").positions(corpus, "val")
    assert positions[0] == start + CONTEXT and positions[-1] == stop - CONTEXT - 1
    assert len(positions) == stop - start - 2 * CONTEXT


def test_blank_contexts_and_a_bad_position() -> None:
    ids = np.arange(20)
    left, right = blank_contexts(ids, 5, 3)
    assert left.tolist() == [[2, 3, 4]] and right.tolist() == [[6, 7, 8]]
    assert blank_contexts(ids, 0, 3)[0].shape == (1, 0)
    assert blank_contexts(ids, 19, 3)[1].shape == (1, 0)
    for bad in (20, -1):
        with pytest.raises(ConfigError, match=rf"position {bad} .*20 tokens") as err:
            blank_contexts(ids, bad, 3)
        assert "\n" not in str(err.value)


def test_bpc_counts_the_blanks_characters() -> None:
    """Char level: one per blank. Word level: each word's characters plus its space; an
    <unk> blank the split's mean characters per token."""
    words = "the cat sat on the mat and the dog sat on a log then the cat ran off home"
    corpus = vectorize(words, DataConfig(level="word", context_len=1, min_freq=2))
    positions = get_task("fill-blank").positions(corpus, "train")
    start, stop = corpus.span("train")
    mean = corpus.split_chars["train"] / (stop - start)
    want = sum(
        mean if t == "<unk>" else len(t) + 1 for t in corpus.vocab.decode(corpus.ids[positions])
    )
    assert "<unk>" in corpus.vocab.decode(corpus.ids[positions])
    assert blank_chars(corpus, "train", positions) == round(want)
    chars = vectorize(words, DataConfig(context_len=2))
    assert blank_chars(chars, "val", np.arange(5)) == 5


def test_score_refuses_a_split_without_blanks_and_a_broken_plugin() -> None:
    corpus = vectorize("abcdefghij" * 20, DataConfig(context_len=15))
    model = BiRNNModel.create(len(corpus.vocab), {"embedding_dim": 4, "hidden_size": 5})
    with pytest.raises(DataError, match=r"val split has 20 tokens.*context_len=15.*31 needed"):
        get_task("fill-blank").score(model, corpus, "val", False)

    class Unnormalised(BiRNNModel):
        def fill_blank_log_proba(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
            return np.zeros((len(left), self.vocab_size))

    broken = Unnormalised.create(len(corpus.vocab), {"embedding_dim": 4, "hidden_size": 5})
    with pytest.raises(PluginOutputError, match="not 1"):
        get_task("fill-blank").score(broken, corpus, "train", False)


# ---- the n-gram's two-sided Bayes ---------------------------------------------------------
def brute_force(model: NGramModel, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """log p(w | left, right) by scoring left + [w] + right token by token, per w."""
    out = np.empty(model.vocab_size)
    for w in range(model.vocab_size):
        seq = np.concatenate([left, [w], right]).astype(np.int64)
        total = model.log_proba(left[None])[0, w]
        for j in range(len(right)):
            at = len(left) + 1 + j
            total += model.log_proba(seq[None, :at])[0, seq[at]]
        out[w] = total
    return out - np.logaddexp.reduce(out)


@pytest.mark.parametrize("smoothing", ["kneser_ney", "stupid_backoff", "lidstone"])
def test_ngram_fill_blank_is_exact_bayes(corpus: EncodedCorpus, smoothing: str) -> None:
    model = NGramModel(len(corpus.vocab), {"order": 3, "smoothing": smoothing})
    model.fit(fit_data(corpus))
    ids = corpus.val.astype(np.int64)
    for p, (n_left, n_right) in zip(
        (15, 300, 777, 1200), ((10, 10), (1, 1), (0, 4), (5, 0)), strict=True
    ):
        left, right = ids[p - n_left : p], ids[p + 1 : p + 1 + n_right]
        got = model.fill_blank_log_proba(left[None], right[None])
        assert got.shape == (1, model.vocab_size) and got.dtype == np.float64
        assert np.abs(got[0] - brute_force(model, left, right)).max() < 1e-9
    batch = np.stack([ids[p - 10 : p] for p in (15, 300)])
    after = np.stack([ids[p + 1 : p + 11] for p in (15, 300)])
    rows = model.fill_blank_log_proba(batch, after)
    for i in range(2):  # a batch equals its rows alone
        assert (
            np.abs(rows[i] - model.fill_blank_log_proba(batch[i : i + 1], after[i : i + 1])).max()
            < 1e-12
        )


def test_ngram_fill_blank_refuses_bad_input_and_gives_no_nan(corpus: EncodedCorpus) -> None:
    model = NGramModel(len(corpus.vocab), {"order": 3})
    with pytest.raises(PluginError, match="fit"):  # NotFittedError
        model.fill_blank_log_proba(np.array([[1]]), np.array([[2]]))
    model.fit(fit_data(corpus))
    with pytest.raises(DataError, match="as many rows"):
        model.fill_blank_log_proba(np.array([[1], [2]]), np.array([[2]]))
    with pytest.raises(DataError, match="token ids"):
        model.fill_blank_log_proba(np.array([[1]]), np.array([[len(corpus.vocab)]]))
    mle = NGramModel(5, {"order": 2, "smoothing": "mle"})
    mle.fit(FitData(np.tile([1, 2, 3], 20), None, 5, 4))
    with np.errstate(all="raise"):  # after "1" comes only "2", and "2" is never before "1"
        row = mle.fill_blank_log_proba(np.array([[1], [1]]), np.array([[1], [3]]))
    assert np.isneginf(row[0]).all()  # no candidate fits: -inf, not NaN
    assert row[1, 2] == 0.0 and np.isneginf(np.delete(row[1], 2)).all()


@parametrize_with_checks([NGramModel, KitCase(NGramModel, {"order": 5})])
def test_ngram_conforms(plugin: KitCase, check: Any) -> None:
    check(plugin)


def test_ngram_right_context_buys_bits(corpus: EncodedCorpus) -> None:
    model = NGramModel(len(corpus.vocab), {"order": 5})
    model.fit(fit_data(corpus))
    task = get_task("fill-blank")
    both = task.score(model, corpus, "test", False)
    positions = task.positions(corpus, "test")
    assert both.n_tokens == len(positions) == both.n_chars
    left = left_only_bpc(model, corpus, positions)
    assert both.bpc < left - 0.8, (both.bpc, left)


# ---- the point of the task: a bidirectional RNN ------------------------------------------
@pytest.fixture(scope="module")
def trained(corpus: EncodedCorpus) -> dict[str, Any]:
    """A tiny birnn trained on fill-blank and an LSTM of the same sizes on next-token
    (what the fill-blank task trains a left-only plugin as), the same batches' budget."""
    params = {"embedding_dim": 16, "hidden_size": 48}
    settings = TrainConfig(
        epochs=1,
        batch_size=32,
        lr=1e-2,
        seed=0,
        progress=False,
        num_threads=1,
        max_batches_per_epoch=120,
    )
    task = get_task("fill-blank", {"max_positions": 800})
    models: dict[str, Any] = {"task": task}
    for name, cls in (("birnn", BiRNNModel), ("lstm", LSTMModel)):
        model = cls.create(len(corpus.vocab), params, seed=0)
        fit_model(model, fit_data(corpus), settings, task=task, validate=lambda m: float("nan"))
        models[name] = model
    return models


def test_birnn_beats_a_left_only_model_on_the_same_blanks(
    corpus: EncodedCorpus, trained: dict[str, Any]
) -> None:
    task = trained["task"]
    bi = task.score(trained["birnn"], corpus, "val", False)
    uni = task.score(trained["lstm"], corpus, "val", False)
    assert bi.n_tokens == uni.n_tokens == 800 and bi.n_chars == uni.n_chars == 800
    assert bi.bpc < uni.bpc - 0.5, (bi.bpc, uni.bpc)
    assert bi.acc1 > uni.acc1


def test_trained_birnn_reads_the_right_context(
    corpus: EncodedCorpus, trained: dict[str, Any]
) -> None:
    """The same left context with another right one gives another distribution, and the
    blank's own token is never read: filling "x" or "y" at the blank changes nothing."""
    model = trained["birnn"]
    ids = corpus.val.astype(np.int64)
    positions = np.arange(20, 820, 40)
    left = np.stack([ids[p - CONTEXT : p] for p in positions])
    right = np.stack([ids[p + 1 : p + 1 + CONTEXT] for p in positions])
    lp = model.fill_blank_log_proba(left, right)
    moved = model.fill_blank_log_proba(left, np.roll(right, 1, axis=0))
    assert np.abs(np.exp(lp) - np.exp(moved)).sum(axis=1).min() > 0.05  # total variation
    target = ids[positions]
    assert (
        lp[np.arange(len(positions)), target] > moved[np.arange(len(positions)), target]
    ).mean() >= 0.6
    window = np.concatenate([left, target[:, None], right], axis=1)
    with torch.no_grad():
        logits = model.fill_blank_logits(torch.from_numpy(window))[:, CONTEXT]
        window[:, CONTEXT] = (window[:, CONTEXT] + 1) % len(corpus.vocab)
        assert torch.equal(model.fill_blank_logits(torch.from_numpy(window))[:, CONTEXT], logits)
    assert np.abs(torch.log_softmax(logits.double(), -1).numpy() - lp).max() < 1e-5
