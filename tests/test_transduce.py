"""The transduce task and its pair sets: built from any corpus (char and word level),
deterministic under the seed, never crossing splits; TSV pairs and their errors; the
batches' id conventions; scoring (exact match, CER, target nll/bpc) and the copy
baseline."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch

from pipeline_core.config import DataConfig, TrainConfig
from pipeline_core.contract import FitData, PluginConfig, SequenceModel
from pipeline_core.errors import ConfigError, DataError, PluginOutputError
from pipeline_core.pairs import (
    PairSet,
    add_noise,
    noisy_pairs,
    read_tsv,
    reverse_pairs,
    split_words,
    tsv_pairs,
)
from pipeline_core.spelling import SpellingModel
from pipeline_core.tasks import IGNORE, get_task, known_tasks
from pipeline_core.tasks.transduce import (
    Codec,
    TransduceTask,
    copy_scores,
    edit_distance,
    make_batch,
    score_pairs,
)
from pipeline_core.training import fit_model
from pipeline_core.vectorize import EncodedCorpus, detokenize, vectorize

WONDERLAND = Path(__file__).resolve().parents[2] / "shared" / "data" / "wonderland.txt"


def corpus_of(text: str, level: str = "char", **data: Any) -> EncodedCorpus:
    return vectorize(text, DataConfig(level=level, context_len=4, **data))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def wonderland() -> str:
    return WONDERLAND.read_text(encoding="utf-8")[:30_000].lower()


@pytest.fixture(scope="module", params=["char", "word"])
def corpus(request: pytest.FixtureRequest, wonderland: str) -> EncodedCorpus:
    return corpus_of(wonderland, request.param)


def texts(pairs: PairSet, corpus: EncodedCorpus) -> list[tuple[str, str]]:
    codec = Codec(corpus.vocab, corpus.level)
    return [(codec.text(s), codec.text(t)) for s, t in pairs]


def normalised(text: str) -> str:
    return " ".join(text.split())


# ---- options -------------------------------------------------------------------------
def test_the_task_is_registered_with_its_options() -> None:
    assert "transduce" in known_tasks()
    task = get_task("transduce")
    assert isinstance(task, TransduceTask)
    assert (task.name, task.method, task.rank_metric) == ("transduce", "transduce", "cer")
    assert task.scoring_label(object, False) == "greedy"
    assert get_task("transduce", {"beam_size": 4}).scoring_label(object, False) == "beam 4"
    assert task.accepts(frozenset({"transduce"})) and not task.accepts(frozenset({"next-token"}))


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"pairs": "tsv"}, "task_options.tsv"),
        ({"tsv": "pairs.tsv"}, "task_options.tsv"),
        ({"pairs": "shuffle"}, "task_options.pairs"),
        ({"noise": 1.5}, "task_options.noise"),
        ({"max_len": 0}, "task_options.max_len"),
        ({"beam_size": 0}, "task_options.beam_size"),
        ({"max_pairs": 0}, "task_options.max_pairs"),
        ({"nosie": 0.1}, "task_options.nosie"),
    ],
)
def test_bad_options_are_one_line_config_errors(options: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        get_task("transduce", options)
    assert fragment in str(err.value) and "\n" not in str(err.value)


# ---- built-in pair sets ---------------------------------------------------------------
@pytest.mark.parametrize("kind", ["noisy", "reverse"])
def test_pairs_are_deterministic_under_the_seed(corpus: EncodedCorpus, kind: str) -> None:
    def build(seed: int) -> list[tuple[list[int], list[int]]]:
        task = TransduceTask({"pairs": kind, "seed": seed, "max_len": 20, "noise": 0.3})
        return [(s.tolist(), t.tolist()) for s, t in task.split_pairs(corpus, "train")]

    first = build(0)
    assert len(first) > 50
    assert build(0) == first
    assert build(1) != first  # the noise (or the phrase lengths) follow the seed


@pytest.mark.parametrize("kind", ["noisy", "reverse"])
def test_pairs_come_from_their_own_split(corpus: EncodedCorpus, kind: str) -> None:
    """Every target (noisy) or source (reverse) is text of its own split, so nothing of
    val or test reaches training; val pairs do not depend on the other splits."""
    task = TransduceTask({"pairs": kind, "max_len": 24, "max_pairs": None})
    split_text = {
        split: normalised(detokenize(corpus.vocab.decode(corpus.split(split)), corpus.level))
        for split in ("train", "val", "test")
    }
    for split, text in split_text.items():
        pairs = texts(task.split_pairs(corpus, split), corpus)
        assert pairs
        for source, target in pairs:
            clean = target if kind == "noisy" else source
            assert normalised(clean) in text
    lone = task.pairs_of(corpus.val.copy(), "val")
    again = TransduceTask({"pairs": kind, "max_len": 24, "max_pairs": None})
    again.prepare(corpus)
    assert [t.tolist() for t in lone.targets] == [
        t.tolist() for t in again.split_pairs(corpus, "val").targets
    ]


def test_noisy_pairs_are_segments_with_noise(corpus: EncodedCorpus) -> None:
    pairs = noisy_pairs(corpus.train, corpus.vocab, corpus.level, max_len=16, seed=0)
    assert all(1 <= len(t) <= 16 for t in pairs.targets)
    if corpus.level == "char":  # cut at word boundaries: no segment starts or ends in space
        for _, target in texts(pairs, corpus):
            assert target == target.strip()
    differ = sum(not np.array_equal(s, t) for s, t in pairs)
    lengths = sum(len(s) != len(t) for s, t in pairs)
    assert differ > len(pairs) // 10 and lengths > 0
    clean = noisy_pairs(
        corpus.train,
        corpus.vocab,
        corpus.level,
        max_len=16,
        seed=0,
        deletion=0,
        insertion=0,
        substitution=0,
    )
    assert all(np.array_equal(s, t) for s, t in clean)


def test_each_kind_of_noise() -> None:
    rng = np.random.default_rng(0)
    target = rng.integers(1, 9, size=200)
    target[::17] = 0  # a few <unk> in the clean text
    assert len(add_noise(target, 9, rng, 1.0, 0.0, 0.0)) == 0
    sub = add_noise(target, 9, rng, 0.0, 0.0, 1.0)
    assert len(sub) == len(target) and (sub != target).all() and (sub != 0).all()
    ins = add_noise(target, 9, rng, 0.0, 1.0, 0.0)
    assert len(ins) == 2 * len(target) and np.array_equal(ins[::2], target)
    assert (ins[1::2] != 0).all()  # inserted tokens are never <unk>
    with pytest.raises(DataError):
        add_noise(target, 9, rng, 0.5, 0.5, 0.5)


def test_reverse_pairs_reverse_the_words(corpus: EncodedCorpus) -> None:
    pairs = reverse_pairs(corpus.train, corpus.vocab, corpus.level, max_len=30, seed=0, words=4)
    assert len(pairs) > 50
    for source, target in texts(pairs, corpus):
        assert 2 <= len(source.split()) <= 4 and len(source) <= (
            30 if corpus.level == "char" else 999
        )
        assert target.split() == source.split()[::-1]


def test_a_corpus_without_whitespace_counts_every_token_as_a_word() -> None:
    dna = corpus_of("".join(np.random.default_rng(0).choice(list("acgt"), size=600)))
    pairs = reverse_pairs(dna.train, dna.vocab, "char", max_len=8, seed=0, words=3)
    assert pairs and all(np.array_equal(s[::-1], t) for s, t in pairs)
    noisy = noisy_pairs(dna.train, dna.vocab, "char", max_len=8, seed=0)
    assert all(4 <= len(t) <= 8 for t in noisy.targets[:-1])
    assert split_words(np.array([1, 2]), np.empty(0, dtype=np.int64))[1].tolist() == [2]


def test_max_pairs_caps_each_split_with_a_seeded_sample(corpus: EncodedCorpus) -> None:
    full = TransduceTask({"pairs": "reverse", "max_pairs": None}).split_pairs(corpus, "train")
    capped = TransduceTask({"pairs": "reverse", "max_pairs": 25}).split_pairs(corpus, "train")
    assert len(capped) == 25 < len(full)
    rest = iter(zip(full.sources, full.targets, strict=True))
    for source, target in capped:  # a subsequence of the full set: kept in text order
        assert any(np.array_equal(s, source) and np.array_equal(t, target) for s, t in rest)


# ---- TSV ------------------------------------------------------------------------------
def write(tmp_path: Path, lines: Sequence[str], name: str = "pairs.tsv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def tiny_corpus() -> EncodedCorpus:
    return corpus_of("the cat sat on the mat with a hat. " * 20)


def test_tsv_pairs_split_in_file_order(tmp_path: Path) -> None:
    lines = [f"cat {i}\tthe cat" if i % 2 else f"hat{i}\tta h" for i in range(20)]
    lines.insert(3, "")
    lines.insert(8, "   ")
    path = write(tmp_path, lines)
    corpus = tiny_corpus()
    sets = tsv_pairs(path, corpus.vocab, "char")
    assert [len(sets[s]) for s in ("train", "val", "test")] == [16, 2, 2]
    codec = Codec(corpus.vocab, "char")
    assert codec.text(sets["train"].sources[0]) == "hat<unk>"  # '0' is not in the vocabulary
    assert codec.text(sets["test"].targets[-1]) == "the cat"
    assert sets.unknown == 10 * 1 + 10 * 2  # one <unk> per digit (lines 0-9, 10-19)
    task = TransduceTask({"pairs": "tsv", "tsv": str(path)})
    assert len(task.split_pairs(corpus, "val")) == 2
    capped = TransduceTask({"pairs": "tsv", "tsv": str(path), "max_pairs": 3})
    assert len(capped.split_pairs(corpus, "train")) == 3


@pytest.mark.parametrize(
    ("lines", "fragment"),
    [
        (
            ["a\tb", "", "a\tb\tc"],
            " line 3: expected 2 tab-separated columns (source<TAB>target), found 3",
        ),
        (
            ["a\tb", "just one column"],
            " line 2: expected 2 tab-separated columns (source<TAB>target), found 1",
        ),
        (["a\tb"] * 5, "5 pair(s) cannot be split 80/10/10"),
    ],
)
def test_tsv_errors_name_the_file_and_line(tmp_path: Path, lines: list[str], fragment: str) -> None:
    path = write(tmp_path, lines)
    with pytest.raises(DataError) as err:
        TransduceTask({"pairs": "tsv", "tsv": str(path)}).prepare(tiny_corpus())
    assert str(path) in str(err.value) and fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_tsv_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="file not found"):
        read_tsv(tmp_path / "missing.tsv")
    bad = tmp_path / "latin1.tsv"
    bad.write_bytes(b"a\tb\ncaf\xe9\tx\n")
    with pytest.raises(DataError, match=r"latin1.tsv:2: not valid UTF-8"):
        read_tsv(bad)


# ---- batches ----------------------------------------------------------------------------
def test_batches_follow_the_id_conventions() -> None:
    batch = make_batch([np.array([1, 2, 3]), np.array([4])], [np.array([5]), np.array([2, 1])], 6)
    assert batch.source is not None
    assert batch.source.tolist() == [[1, 2, 3], [4, 6, 6]]  # padded with V
    assert batch.inputs.tolist() == [[6, 5, 6], [6, 2, 1]]  # V starts, V pads
    assert batch.targets.tolist() == [[5, 6, IGNORE], [2, 1, 6]]  # V ends
    assert batch.n_targets == 5


def test_training_batches_and_their_errors(wonderland: str) -> None:
    corpus = corpus_of(wonderland)
    task = TransduceTask({"pairs": "reverse", "max_pairs": 100})
    settings = TrainConfig(batch_size=32, progress=False)
    with pytest.raises(RuntimeError, match="prepare"):
        task.n_batches(corpus.train, 4, 1, settings)
    task.prepare(corpus)
    assert task.n_batches(corpus.train, 4, 1, settings) == 4
    epoch1 = list(task.batches(corpus.train, 4, 1, settings, 1))
    assert [len(b.inputs) for b in epoch1] == [32, 32, 32, 4]
    again = list(task.batches(corpus.train, 4, 1, settings, 1))
    assert all(np.array_equal(a.inputs, b.inputs) for a, b in zip(epoch1, again, strict=True))
    epoch2 = list(task.batches(corpus.train, 4, 1, settings, 2))
    assert not np.array_equal(epoch1[0].inputs, epoch2[0].inputs)  # reshuffled per epoch
    assert (
        task.n_batches(corpus.train, 4, 1, settings.model_copy(update={"max_batches_per_epoch": 2}))
        == 2
    )
    with pytest.raises(DataError, match=r"train\.batch_size=200 cannot be filled"):
        task.check_fill(corpus.train, 4, 1, settings.model_copy(update={"batch_size": 200}))
    with pytest.raises(ConfigError, match="bptt"):
        task.check_fill(corpus.train, 4, 1, settings.model_copy(update={"bptt": "stateful"}))
    with pytest.raises(DataError, match="built no reverse pairs"):
        task.n_batches(corpus.train[:3], 4, 1, settings)


# ---- scoring ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("a", "b"), [("kitten", "sitting"), ("", "abc"), ("abc", ""), ("flaw", "lawn"), ("é∂x", "∂x")]
)
def test_edit_distance(a: str, b: str) -> None:
    def reference(x: str, y: str) -> int:
        row = list(range(len(y) + 1))
        for i, cx in enumerate(x, 1):
            prev, row[0] = row[0], i
            for j, cy in enumerate(y, 1):
                prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (cx != cy))
        return row[-1]

    assert edit_distance(a, b) == reference(a, b)
    rng = np.random.default_rng(0)
    for _ in range(50):
        x = "".join(rng.choice(list("abc "), size=rng.integers(0, 9)))
        y = "".join(rng.choice(list("abc "), size=rng.integers(0, 9)))
        assert edit_distance(x, y) == reference(x, y)


class LookupConfig(PluginConfig):
    pass


class Oracle(SequenceModel):
    """A count-free transduce plugin that answers from a table (or garbles, for tests)."""

    config_class: ClassVar[type[PluginConfig]] = LookupConfig
    task_kinds: ClassVar[frozenset[Any]] = frozenset({"transduce"})
    answers: ClassVar[dict[tuple[int, ...], np.ndarray]] = {}
    garble: ClassVar[str] = ""

    def fit(self, data: FitData, on_epoch: Any = None) -> list[Any]:
        return []

    def log_proba(self, contexts: np.ndarray) -> np.ndarray:
        return np.full((len(contexts), self.vocab_size), -np.log(self.vocab_size))

    @property
    def is_fitted(self) -> bool:
        return True

    def get_state(self) -> dict[str, torch.Tensor]:
        return {}

    def set_state(self, state: Mapping[str, torch.Tensor]) -> None:
        pass

    def transduce(
        self, sources: Sequence[np.ndarray], max_len: int, beam_size: int = 1
    ) -> list[np.ndarray]:
        out = [self.answers[tuple(s.tolist())][:max_len] for s in sources]
        if self.garble == "range":
            out[0] = np.array([self.vocab_size])
        if self.garble == "count":
            out = out[:-1]
        return out

    def target_log_proba(
        self, sources: Sequence[np.ndarray], targets: Sequence[np.ndarray]
    ) -> list[np.ndarray]:
        rows = [np.full(len(t) + 1, np.log(0.5)) for t in targets]
        if self.garble == "logp":
            rows[0] = rows[0][:-1]
        return rows


def test_scores_of_a_perfect_plugin_and_of_copying(corpus: EncodedCorpus) -> None:
    """Perfect at char level (no unknown test characters); at word level the test
    split's unknown words are compared and charged as their real strings."""
    task = TransduceTask({"pairs": "reverse", "max_pairs": 40})
    pairs = task.split_pairs(corpus, "test")
    Oracle.answers = {tuple(s.tolist()): t for s, t in pairs}
    perfect = task.score(Oracle(len(corpus.vocab)), corpus, "test", carry_state=False)
    real = [task.codec.text(t, pairs.spelled(i)) for i, t in enumerate(pairs.targets)]
    said = [t for _, t in texts(pairs, corpus)]
    chars = sum(len(t) for t in real)
    tokens = sum(len(t) + 1 for t in pairs.targets)
    fallback = SpellingModel.fit(corpus)
    spelling = sum(fallback.bits(w) for i in range(len(pairs)) for w in pairs.spelled(i) if w)
    if corpus.level == "char":
        assert spelling == 0 and perfect.exact_match == 1.0 and perfect.cer == 0.0
    else:  # saying <unk> for an unknown word is not the word
        assert spelling > 0 and 0 < perfect.exact_match < 1 and perfect.cer > 0
    assert perfect.exact_match == np.mean([a == b for a, b in zip(said, real, strict=True)])
    assert perfect.cer == pytest.approx(sum(map(edit_distance, said, real)) / chars)
    assert perfect.n_tokens == tokens and perfect.n_chars == chars
    assert perfect.bpc == pytest.approx((tokens + spelling) / chars)
    assert perfect.nll == pytest.approx(np.log(2) + spelling * np.log(2) / tokens)
    assert np.isnan(perfect.acc1)  # no distributions from a plugin without pair_logits
    (copy,) = task.baselines(corpus)
    assert (copy.label, copy.scoring) == ("copy", "copy")
    sources = [s for s, _ in texts(pairs, corpus)]
    expected = sum(map(edit_distance, sources, real)) / chars
    assert copy.test.cer == pytest.approx(expected) and 0 < copy.test.cer < 1.5
    assert copy.test.exact_match < 0.2 and np.isnan(copy.test.nll)
    metrics = copy.test.as_metrics("test")
    assert "test_cer" in metrics and "test_nll" not in metrics


@pytest.mark.parametrize("garble", ["range", "count", "logp"])
def test_answers_that_break_the_contract_fail_scoring(corpus: EncodedCorpus, garble: str) -> None:
    task = TransduceTask({"pairs": "reverse", "max_pairs": 10})
    pairs = task.split_pairs(corpus, "val")
    Oracle.answers = {tuple(s.tolist()): t for s, t in pairs}
    Oracle.garble = garble
    try:
        with pytest.raises(PluginOutputError):
            task.score(Oracle(len(corpus.vocab)), corpus, "val", carry_state=False)
    finally:
        Oracle.garble = ""


def test_noisy_copy_baseline_is_close_to_the_noise_rate(wonderland: str) -> None:
    corpus = corpus_of(wonderland)
    low, high = (TransduceTask({"noise": n}).baselines(corpus)[0].val.cer for n in (0.05, 0.3))
    assert 0 < low < high and low < 0.12


def test_a_trained_seq2seq_is_scored_end_to_end(wonderland: str) -> None:
    from plugins.seq2seq import Seq2SeqModel

    corpus = corpus_of(wonderland, "word", max_vocab=40)
    task = TransduceTask({"pairs": "reverse", "max_len": 4, "max_pairs": 300, "beam_size": 2})
    task.prepare(corpus)
    model = Seq2SeqModel.create(len(corpus.vocab), {"embedding_dim": 16, "hidden_size": 32}, seed=0)
    data = FitData(train=corpus.train, val=None, vocab_size=len(corpus.vocab), context_len=4)
    settings = TrainConfig(epochs=4, batch_size=32, lr=1e-2, progress=False, num_threads=1)
    fit_model(model, data, settings, task=task)
    scores = task.score(model, corpus, "val", carry_state=False)
    copy = task.baselines(corpus)[0].val
    # most words are <unk> under max_vocab=40: the reversal is learnt in id space (the
    # targets read as ids), while against the real words saying <unk> is an error
    val = task.split_pairs(corpus, "val")
    as_ids = PairSet(val.sources, val.targets), Codec(corpus.vocab, corpus.level)
    learnt = score_pairs(model, *as_ids, 4, beam_size=2)
    assert learnt.cer < copy_scores(*as_ids).cer, (learnt.cer, copy_scores(*as_ids).cer)
    assert scores.cer > learnt.cer and scores.bpc * scores.n_chars > learnt.bpc * learnt.n_chars
    assert 0 <= scores.acc1 <= scores.acc5 <= 1 and scores.ppl == pytest.approx(np.exp(scores.nll))
    direct = score_pairs(model, task.split_pairs(corpus, "val"), task.codec, 4, beam_size=2)
    assert direct == scores
    assert copy_scores(task.split_pairs(corpus, "val"), task.codec) == copy
    with pytest.raises(DataError, match="ids"):
        task.score(Seq2SeqModel(len(corpus.vocab) + 1, {"hidden_size": 4}), corpus, "val", False)
    # the bound corpus travels with the task (Dask pickles it)
    import pickle

    clone = pickle.loads(pickle.dumps(task))
    assert clone.n_batches(corpus.train, 4, 1, TrainConfig(batch_size=32)) == task.n_batches(
        corpus.train, 4, 1, TrainConfig(batch_size=32)
    )
    assert list(itertools.islice(clone.batches(corpus.train, 4, 1, TrainConfig(), 1), 1))
