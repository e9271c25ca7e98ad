"""The seq2seq plugin: the conformance kit (next-token and transduce rules), its config,
the decoder as a language model, scheduled sampling, greedy and beam decoding, and that
it learns word reversal of wonderland phrases with and without attention."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from pipeline_core.config import DataConfig, TrainConfig
from pipeline_core.contract import FitData
from pipeline_core.errors import ConfigError, DataError
from pipeline_core.tasks import get_task
from pipeline_core.tasks.transduce import TransduceTask
from pipeline_core.testing import KitCase, parametrize_with_checks
from pipeline_core.training import fit_model
from pipeline_core.vectorize import EncodedCorpus, vectorize
from plugins.seq2seq import Seq2SeqModel

WONDERLAND = Path(__file__).resolve().parents[2] / "shared" / "data" / "wonderland.txt"
SMALL = {"embedding_dim": 8, "hidden_size": 16}


@parametrize_with_checks(
    [
        ("seq2seq", Seq2SeqModel),
        KitCase(
            Seq2SeqModel,
            {"embedding_dim": 8, "hidden_size": 32, "attention": True, "cell": "lstm"},
            name="seq2seq",
        ),
    ]
)
def test_seq2seq_conforms(plugin: KitCase, check: Any) -> None:
    check(plugin)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("hidden_size", 0),
        ("num_layers", 0),
        ("dropout", 1.0),
        ("cell", "transformer"),
        ("input", "bytes"),
        ("teacher_forcing", 1.5),
        ("tf_final", -0.1),
        ("tf_schedule", "cosine"),
        ("beam_size", 0),
        ("max_len", 0),
    ],
)
def test_bad_config_values_are_one_line_errors(field: str, value: Any) -> None:
    with pytest.raises(ConfigError) as err:
        Seq2SeqModel(7, {field: value})
    assert field in str(err.value) and "\n" not in str(err.value)


def model(vocab: int = 6, seed: int = 0, **params: Any) -> Seq2SeqModel:
    built = Seq2SeqModel.create(vocab, {**SMALL, **params}, seed=seed)
    assert isinstance(built, Seq2SeqModel)
    return built


# ---- the decoder as a language model ---------------------------------------------------
@pytest.mark.parametrize("attention", [False, True])
def test_next_token_is_the_decoder_over_an_empty_source(attention: bool) -> None:
    """forward(x)[t] = pair_logits(empty source, [V, x])[t + 1] without the end class."""
    m = model(attention=attention).eval()
    x = torch.tensor([[1, 2, 3, 0, 5], [4, 4, 1, 2, 3]])
    logits, _ = m(x)
    source = torch.empty((2, 0), dtype=torch.long)
    inputs = torch.cat([torch.full((2, 1), 6), x], dim=1)
    with torch.no_grad():
        pair = m.pair_logits(source, inputs)
    assert logits.shape == (2, 5, 6) and pair.shape == (2, 6, 7)
    assert torch.allclose(logits, pair[:, 1:, :6], atol=1e-6)
    lp = m.log_proba(x.numpy())
    assert np.allclose(np.exp(lp).sum(axis=1), 1.0)
    # the empty source also decodes: transduce([]) is the language model's greedy text
    assert m.transduce([np.empty(0, dtype=np.int64)], 4)[0].shape[0] <= 4


# ---- scheduled sampling ----------------------------------------------------------------
def test_teacher_forcing_schedules_decay_from_start_to_final() -> None:
    for schedule in ("linear", "inverse_sigmoid"):
        m = model(teacher_forcing=0.9, tf_final=0.1, tf_schedule=schedule)
        ratios = [m.teacher_forcing_ratio(p) for p in np.linspace(0, 1, 11)]
        assert ratios[0] == pytest.approx(0.9) and ratios[-1] == pytest.approx(0.1)
        assert all(a > b for a, b in itertools.pairwise(ratios))
        assert ratios[5] == pytest.approx(0.5)  # both are symmetric about the midpoint
    sig = model(tf_schedule="inverse_sigmoid")
    lin = model(tf_schedule="linear")
    assert sig.teacher_forcing_ratio(0.1) > lin.teacher_forcing_ratio(0.1)  # slow start
    const = model(teacher_forcing=0.7, tf_final=0.0)
    assert {const.teacher_forcing_ratio(p) for p in (0.0, 0.5, 1.0)} == {0.7}


def test_without_teacher_forcing_the_decoder_reads_its_own_predictions() -> None:
    torch.manual_seed(0)
    source = torch.tensor([[1, 2, 3], [4, 6, 6]])  # row 1 padded with V = 6
    target_in = torch.tensor([[6, 1, 2, 3, 4], [6, 5, 5, 1, 6]])
    other_in = torch.tensor([[6, 4, 4, 4, 4], [6, 2, 3, 0, 1]])
    free = model(teacher_forcing=0.0, tf_final=0.0).train()
    a = free.pair_logits(source, target_in, progress=0.3)
    b = free.pair_logits(source, other_in, progress=0.3)
    assert torch.equal(a, b)  # the true previous tokens are never read
    # ... they are the logits of a teacher-forced pass over its own argmax tokens
    own = torch.cat([target_in[:, :1], a[:, :-1, :6].argmax(-1)], dim=1)
    with torch.no_grad():
        forced = free.eval().pair_logits(source, own)
    assert torch.allclose(a, forced, atol=1e-5)
    teacher = model(teacher_forcing=1.0).train()
    assert not torch.equal(
        teacher.pair_logits(source, target_in), teacher.pair_logits(source, other_in)
    )
    # in eval mode the model always teacher-forces (scoring reads exact probabilities)
    with torch.no_grad():
        free.eval()
        assert not torch.equal(
            free.pair_logits(source, target_in), free.pair_logits(source, other_in)
        )


def test_the_trainer_drives_the_schedule_by_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    m = model(teacher_forcing=1.0, tf_final=0.0, tf_schedule="linear")
    task = TransduceTask({"pairs": "reverse", "max_pairs": None})
    kit_pairs = [((1, 2), (2, 1)), ((3, 4, 5), (5, 4, 3)), ((2,), (2,)), ((5, 1), (1, 5))] * 4
    from pipeline_core.pairs import PairSet
    from pipeline_core.vectorize import Vocabulary

    pairs = PairSet.of(kit_pairs)
    task.use(Vocabulary(("<unk>", "a", "b", "c", "d", "e")), "char", {"train": pairs})
    seen: list[float] = []
    original = m.pair_logits

    def spy(source: torch.Tensor, target_in: torch.Tensor, progress: float = 1.0) -> torch.Tensor:
        seen.append(m.teacher_forcing_ratio(progress))
        return original(source, target_in, progress)

    monkeypatch.setattr(m, "pair_logits", spy)
    data = FitData(train=np.arange(40) % 6, val=None, vocab_size=6, context_len=4)
    settings = TrainConfig(epochs=4, batch_size=4, progress=False, num_threads=1)
    fit_model(m, data, settings, task=task)
    assert len(seen) == 16 and seen[0] == 1.0
    assert all(a > b for a, b in itertools.pairwise(seen)) and seen[-1] < 0.1


# ---- decoding --------------------------------------------------------------------------
def total_logp(m: Seq2SeqModel, sources: list[np.ndarray], outputs: list[np.ndarray]) -> np.ndarray:
    return np.array([row.sum() for row in m.target_log_proba(sources, outputs)])


def test_beam_search_is_never_less_probable_than_greedy() -> None:
    m = model(vocab=8, seed=3, hidden_size=32)
    rng = np.random.default_rng(0)
    sources = [rng.integers(0, 8, size=n) for n in rng.integers(0, 7, size=24)]
    greedy = m.transduce(sources, 6, beam_size=1)
    for k in (2, 4):
        beam = m.transduce(sources, 6, beam_size=k)
        assert all(len(b) <= 6 and (b < 8).all() for b in beam)
        assert (total_logp(m, sources, beam) >= total_logp(m, sources, greedy) - 1e-9).all()
    assert any(not np.array_equal(g, b) for g, b in zip(greedy, beam, strict=True))
    assert all(
        np.array_equal(a, b)
        for a, b in zip(greedy, m.transduce(sources, 6, beam_size=1), strict=True)
    )


def test_a_wide_beam_finds_the_most_probable_sequence() -> None:
    """With as many beams as sequences, beam search is exhaustive: it must find the
    argmax over every output of at most max_len tokens (V = 3, max_len = 3: 40 of them)."""
    m = model(vocab=3, seed=5, hidden_size=16)
    every = [
        np.array(s, dtype=np.int64) for n in range(4) for s in itertools.product(range(3), repeat=n)
    ]
    for source in (np.array([1, 2]), np.array([0, 0, 2, 1]), np.empty(0, dtype=np.int64)):
        scores = total_logp(m, [source] * len(every), every)
        best = every[int(np.argmax(scores))]
        found = m._beam([source], 3, 40)[0]
        assert np.array_equal(found, best), (found, best)


def test_transduce_refuses_bad_sources() -> None:
    m = model()
    for bad in ([np.array([1, 6])], [np.array([[1, 2]])], [np.array([-1])], [np.array([0.5])]):
        with pytest.raises(DataError):
            m.transduce(bad, 4)
    with pytest.raises(DataError):
        m.target_log_proba([np.array([1])], [np.array([1]), np.array([2])])
    with pytest.raises(DataError):
        m.pair_logits(torch.tensor([[7]]), torch.tensor([[6]]))


# ---- learning word reversal ------------------------------------------------------------
@pytest.fixture(scope="module")
def wonderland_corpus() -> EncodedCorpus:
    text = WONDERLAND.read_text(encoding="utf-8")[:40_000].lower()
    return vectorize(text, DataConfig(level="char", context_len=8))


@pytest.mark.parametrize("attention", [False, True], ids=["plain", "attention"])
def test_learns_word_reversal_better_than_copying(
    wonderland_corpus: EncodedCorpus, attention: bool
) -> None:
    corpus = wonderland_corpus
    task = get_task("transduce", {"pairs": "reverse", "words": 2, "max_len": 16, "max_pairs": 600})
    assert isinstance(task, TransduceTask)
    task.prepare(corpus)
    m = Seq2SeqModel.create(
        len(corpus.vocab), {"embedding_dim": 16, "hidden_size": 64, "attention": attention}, seed=0
    )
    data = FitData(train=corpus.train, val=None, vocab_size=len(corpus.vocab), context_len=8)
    settings = TrainConfig(epochs=8, batch_size=32, lr=1e-2, progress=False, num_threads=1)
    fit_model(m, data, settings, task=task)
    scores = task.score(m, corpus, "val", carry_state=False)
    (copy,) = task.baselines(corpus)
    assert copy.label == "copy" and copy.val.cer > 0.5
    assert scores.cer < copy.val.cer - 0.1, (scores.cer, copy.val.cer)
    assert scores.bpc == scores.bpc and scores.acc1 > 0.5  # real probabilities, unlike copy
