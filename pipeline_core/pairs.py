"""Pair sets for the transduce task, built from any corpus at char or word level.

A pair is ``(source, target)``: two 1-D arrays of token ids of the corpus vocabulary.
Three kinds of set:

* ``noisy`` (spelling correction): the target is a clean segment of the text, cut at
  word boundaries, of at most ``max_len`` tokens (each segment's budget is drawn in
  ``[ceil(max_len / 2), max_len]``; a word longer than the budget is skipped); the
  source is the target with per-token noise: deletion, substitution by a random
  vocabulary token other than ``<unk>`` and the original, and insertion of a random
  token after it, with the given probabilities (so the lengths differ);
* ``reverse``: a phrase of ``2..words`` consecutive words (at most ``max_len`` tokens),
  the target the same words in reverse order;
* ``tsv``: the user's pairs, one ``source<TAB>target`` per line of a UTF-8 file (blank
  lines skipped), encoded with the corpus vocabulary (unknown symbols become ``<unk>``
  and are counted) and split 80/10/10 in file order.

Words: at word level every token is a word; at char level a word is a maximal run of
non-whitespace characters, and the phrases of ``reverse`` are joined by the
vocabulary's space (its first whitespace token when it has no space). A corpus without
whitespace (DNA, say) has no words at char level: every token then counts as a word.

Built-in sets are made from each split's own ids (train pairs from the train split, and
so on), so no test text reaches training; each split draws from its own random stream,
``default_rng([seed, kind, split])``, so the sets are deterministic under the seed and
one split's pairs do not depend on another's. ``max_pairs`` keeps a seeded sample of a
split's pairs, in text order.

**Real strings of ``<unk>`` targets** (:attr:`PairSet.spellings`): scoring charges an
``<unk>`` target its spelling and compares text against the real target, so the string
behind each ``<unk>`` of a target travels with the pairs. ``tsv`` pairs take it from the
file's text; built-in pairs take it from ``unk_spellings`` (the corpus's strings at that
split's positions) when the caller has them: the split's ``<unk>`` ids are first tagged
``-1 - position`` (:func:`tag_unknowns`), the builders only cut, join and reorder ids, and
the tags become ``<unk>`` again, with their strings, before any noise is drawn, so the
pairs themselves are the same with or without strings. Pairs handed in with
:meth:`PairSet.of` know no strings (``spellings`` None) and are scored as ids, as before.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from pipeline_core.errors import DataError
from pipeline_core.vectorize import SPLIT_NAMES, UNK, Vocabulary, tokenize

PairKind = Literal["noisy", "reverse", "tsv"]
PAIR_KINDS: tuple[PairKind, ...] = ("noisy", "reverse", "tsv")
#: train, val and test shares of a TSV file's pairs, in file order
TSV_SPLITS = (0.8, 0.1, 0.1)
log = logging.getLogger("seqlab.data")
#: the real strings of one target's ``<unk>`` tokens, in order (None: not known)
Spellings = tuple[str | None, ...]


@dataclass(frozen=True)
class PairSet:
    """Sources and targets of one split, as 1-D int64 id arrays, and the real strings
    of the targets' ``<unk>`` tokens where known (None: none known)."""

    sources: tuple[np.ndarray, ...]
    targets: tuple[np.ndarray, ...]
    spellings: tuple[Spellings, ...] | None = None

    def __post_init__(self) -> None:
        if len(self.sources) != len(self.targets):
            raise ValueError("a PairSet needs as many sources as targets")
        if self.spellings is None:
            return
        if len(self.spellings) != len(self.targets) or any(
            len(s) != np.count_nonzero(t == 0)
            for s, t in zip(self.spellings, self.targets, strict=True)
        ):
            raise ValueError("a PairSet needs one spelling per <unk> of each target")

    def __len__(self) -> int:
        return len(self.sources)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return iter(zip(self.sources, self.targets, strict=True))

    @classmethod
    def of(
        cls, pairs: Sequence[tuple[Sequence[int] | np.ndarray, Sequence[int] | np.ndarray]]
    ) -> PairSet:
        """From ``[(source ids, target ids), ...]``."""
        return cls(
            tuple(np.asarray(s, dtype=np.int64).reshape(-1) for s, _ in pairs),
            tuple(np.asarray(t, dtype=np.int64).reshape(-1) for _, t in pairs),
        )

    def subset(self, keep: np.ndarray) -> PairSet:
        spellings = None if self.spellings is None else tuple(self.spellings[i] for i in keep)
        return PairSet(
            tuple(self.sources[i] for i in keep), tuple(self.targets[i] for i in keep), spellings
        )

    def spelled(self, i: int) -> Spellings:
        """The real strings of target ``i``'s ``<unk>`` tokens (None each where unknown)."""
        if self.spellings is None:
            return (None,) * int(np.count_nonzero(self.targets[i] == 0))
        return self.spellings[i]

    @property
    def longest_target(self) -> int:
        return max((len(t) for t in self.targets), default=0)


@dataclass(frozen=True)
class PairSets:
    """The three splits of a pair set, and how many ``<unk>`` a TSV file produced."""

    splits: dict[str, PairSet]
    kind: str  # a PairKind, or "given" for pairs handed to the task
    unknown: int = 0
    origin: str = field(default="")

    def __getitem__(self, split: str) -> PairSet:
        return self.splits[split]


# ---- words --------------------------------------------------------------------------
def space_ids(vocab: Vocabulary, level: str) -> np.ndarray:
    """Ids of whitespace tokens (char level); empty at word level."""
    if level != "char":
        return np.empty(0, dtype=np.int64)
    return np.array([i for i, t in enumerate(vocab.tokens) if t.isspace()], dtype=np.int64)


def separator_id(vocab: Vocabulary, level: str) -> int | None:
    """The token joining words in built phrases: ``" "`` (else the first whitespace
    token) at char level; None at word level or when the vocabulary has no whitespace."""
    spaces = space_ids(vocab, level)
    if not spaces.size:
        return None
    return vocab.id_of(" ") if " " in vocab.tokens else int(spaces[0])


def split_words(ids: np.ndarray, spaces: np.ndarray) -> list[np.ndarray]:
    """The words of ``ids``: runs between whitespace ids (every token when none)."""
    ids = np.asarray(ids, dtype=np.int64)
    if not spaces.size:
        return [ids[i : i + 1] for i in range(len(ids))]
    is_space = np.isin(ids, spaces)
    step = np.diff(np.concatenate([[0], (~is_space).astype(np.int8), [0]]))
    starts, stops = np.flatnonzero(step == 1), np.flatnonzero(step == -1)
    return [ids[a:b] for a, b in zip(starts, stops, strict=True)]


def join_words(words: Sequence[np.ndarray], sep: int | None) -> np.ndarray:
    parts: list[np.ndarray] = []
    for i, word in enumerate(words):
        if i and sep is not None:
            parts.append(np.array([sep], dtype=np.int64))
        parts.append(word)
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)


def _rng(seed: int, kind: PairKind, split: str) -> np.random.Generator:
    return np.random.default_rng([seed, PAIR_KINDS.index(kind), SPLIT_NAMES.index(split)])


def tag_unknowns(ids: np.ndarray, unk_spellings: Mapping[int, str] | None) -> np.ndarray:
    """``ids`` with each ``<unk>`` at position ``p`` as ``-1 - p`` (unchanged without
    strings), so the builders carry where every ``<unk>`` came from."""
    if unk_spellings is None:
        return ids
    tagged = np.asarray(ids, dtype=np.int64).copy()
    unk = np.flatnonzero(tagged == 0)
    tagged[unk] = -1 - unk
    return tagged


def untag(pairs: PairSet, unk_spellings: Mapping[int, str] | None) -> PairSet:
    """Tags back to ``<unk>``, the targets' strings looked up (no-op without strings)."""
    if unk_spellings is None:
        return pairs
    spellings = tuple(
        tuple(unk_spellings.get(int(-1 - tag)) for tag in t[t < 0].tolist()) for t in pairs.targets
    )
    sources = tuple(np.maximum(s, 0) for s in pairs.sources)
    return PairSet(sources, tuple(np.maximum(t, 0) for t in pairs.targets), spellings)


def _cap(pairs: PairSet, max_pairs: int | None, rng: np.random.Generator) -> PairSet:
    if max_pairs is None or len(pairs) <= max_pairs:
        return pairs
    keep = np.sort(rng.choice(len(pairs), size=max_pairs, replace=False))
    return pairs.subset(keep)


# ---- built-in sets --------------------------------------------------------------------
def segments(
    words: list[np.ndarray], sep: int | None, max_len: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Consecutive groups of whole words, each at most a drawn budget of tokens."""
    low = math.ceil(max_len / 2)
    gap = 0 if sep is None else 1
    out: list[np.ndarray] = []
    group: list[np.ndarray] = []
    size = 0
    budget = int(rng.integers(low, max_len + 1))
    for word in words:
        extra = len(word) + (gap if group else 0)
        if group and size + extra > budget:
            out.append(join_words(group, sep))
            group, size = [], 0
            budget = int(rng.integers(low, max_len + 1))
            extra = len(word)
        if len(word) > budget:  # a word longer than any segment may be: skipped
            continue
        group.append(word)
        size += extra
    if group:
        out.append(join_words(group, sep))
    return out


def add_noise(
    target: np.ndarray,
    vocab_size: int,
    rng: np.random.Generator,
    deletion: float,
    insertion: float,
    substitution: float,
) -> np.ndarray:
    """``target`` with each token deleted, substituted (by a token other than ``<unk>``
    and itself) or followed by an inserted random token, with these probabilities."""
    if deletion + insertion + substitution > 1.0 + 1e-12:
        raise DataError(
            f"noise probabilities sum to {deletion + insertion + substitution:g}, above 1"
        )
    out: list[int] = []
    symbols = max(vocab_size - 1, 1)  # ids 1..V-1 (never <unk>)
    for token in target.tolist():
        u = rng.random()
        if u < deletion:
            continue
        if u < deletion + substitution:
            if token == 0 and symbols >= 1:
                out.append(int(rng.integers(1, vocab_size)))
            elif symbols >= 2:
                new = int(rng.integers(1, vocab_size - 1))  # 1..V-2, then skip `token`
                out.append(new + 1 if new >= token else new)
            else:
                out.append(token)
            continue
        out.append(token)
        if u < deletion + substitution + insertion:
            out.append(int(rng.integers(1, vocab_size)) if vocab_size > 1 else token)
    return np.array(out, dtype=np.int64)


def noisy_pairs(
    ids: np.ndarray,
    vocab: Vocabulary,
    level: str,
    *,
    max_len: int,
    seed: int,
    split: str = "train",
    deletion: float = 1 / 30,
    insertion: float = 1 / 30,
    substitution: float = 1 / 30,
    max_pairs: int | None = None,
    unk_spellings: Mapping[int, str] | None = None,
) -> PairSet:
    """Spelling correction pairs from one split's ids: (noisy segment, clean segment);
    ``unk_spellings``: the string of each ``<unk>`` of ``ids`` by position, if known."""
    rng = _rng(seed, "noisy", split)
    sep = separator_id(vocab, level)
    tagged = tag_unknowns(ids, unk_spellings)
    targets = segments(split_words(tagged, space_ids(vocab, level)), sep, max_len, rng)
    clean = PairSet(tuple(targets), tuple(targets))
    clean = untag(_cap(clean, max_pairs, rng), unk_spellings)
    sources = tuple(
        add_noise(t, len(vocab), rng, deletion, insertion, substitution) for t in clean.targets
    )
    return PairSet(sources, clean.targets, clean.spellings)


def reverse_pairs(
    ids: np.ndarray,
    vocab: Vocabulary,
    level: str,
    *,
    max_len: int,
    seed: int,
    split: str = "train",
    words: int = 3,
    max_pairs: int | None = None,
    unk_spellings: Mapping[int, str] | None = None,
) -> PairSet:
    """Word reversal pairs from one split's ids: (phrase, its words in reverse order);
    ``unk_spellings``: the string of each ``<unk>`` of ``ids`` by position, if known."""
    rng = _rng(seed, "reverse", split)
    sep = separator_id(vocab, level)
    all_words = split_words(tag_unknowns(ids, unk_spellings), space_ids(vocab, level))
    low = min(2, words)
    pairs: list[tuple[np.ndarray, np.ndarray]] = []
    i = 0
    while i < len(all_words):
        n = int(rng.integers(low, words + 1))
        group = all_words[i : i + n]
        i += n
        if len(group) < low:
            break
        source = join_words(group, sep)
        if len(source) > max_len:
            continue
        pairs.append((source, join_words(group[::-1], sep)))
    return untag(_cap(PairSet.of(pairs), max_pairs, rng), unk_spellings)


# ---- user pairs -----------------------------------------------------------------------
def read_tsv(path: str | Path) -> list[tuple[str, str]]:
    """``(source, target)`` strings of a UTF-8 TSV file; blank lines skipped; a line
    without exactly two columns is a DataError naming the file and its line."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"task_options.tsv: file not found: {p}")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        line = text_line_of(p.read_bytes(), err.start)
        raise DataError(f"{p}:{line}: not valid UTF-8") from None
    rows: list[tuple[str, str]] = []
    for number, row in enumerate(text.splitlines(), start=1):
        if not row.strip():
            continue
        columns = row.split("\t")
        if len(columns) != 2:
            raise DataError(
                f"{p} line {number}: expected 2 tab-separated columns (source<TAB>target), "
                f"found {len(columns)}"
            )
        rows.append((columns[0], columns[1]))
    return rows


def text_line_of(data: bytes, offset: int) -> int:
    return data[:offset].count(b"\n") + 1


def encode_text(text: str, vocab: Vocabulary, level: str) -> tuple[np.ndarray, int]:
    """Ids of ``text`` under ``vocab`` and how many of its tokens are unknown."""
    ids, unknown, _ = encode_spelled(text, vocab, level)
    return ids, unknown


def encode_spelled(text: str, vocab: Vocabulary, level: str) -> tuple[np.ndarray, int, Spellings]:
    """:func:`encode_text`, plus the string behind each ``<unk>`` id, in order."""
    tokens, _ = tokenize(text, level)  # type: ignore[arg-type]
    ids = np.array([vocab.id_of(t) for t in tokens], dtype=np.int64)
    unk = vocab.unk_id
    behind = [t for t, i in zip(tokens, ids.tolist(), strict=True) if i == unk]
    return ids, sum(1 for t in behind if t != UNK), tuple(behind)


def tsv_pairs(
    path: str | Path, vocab: Vocabulary, level: str, max_pairs: int | None = None
) -> PairSets:
    """The file's pairs encoded with ``vocab``, split 80/10/10 in file order (each split
    capped at its first ``max_pairs``)."""
    rows = read_tsv(path)
    n = len(rows)
    b0 = round(n * TSV_SPLITS[0])
    b1 = round(n * (TSV_SPLITS[0] + TSV_SPLITS[1]))
    if b0 < 1 or b1 - b0 < 1 or n - b1 < 1:
        raise DataError(
            f"{path}: {n} pair(s) cannot be split 80/10/10 into non-empty train, val and "
            "test sets; give at least 10 pairs"
        )
    unknown = 0
    encoded: list[tuple[np.ndarray, np.ndarray, Spellings]] = []
    for source, target in rows:
        s, us = encode_text(source, vocab, level)
        t, ut, spelled = encode_spelled(target, vocab, level)
        unknown += us + ut
        encoded.append((s, t, spelled))
    if unknown:
        log.warning("%s: %d token(s) outside the corpus vocabulary became <unk>", path, unknown)
    parts = {"train": encoded[:b0], "val": encoded[b0:b1], "test": encoded[b1:]}
    splits = {name: _spelled_set(part[:max_pairs]) for name, part in parts.items()}
    return PairSets(splits, "tsv", unknown, str(path))


def _spelled_set(rows: Sequence[tuple[np.ndarray, np.ndarray, Spellings]]) -> PairSet:
    return PairSet(
        tuple(s for s, _, _ in rows), tuple(t for _, t, _ in rows), tuple(u for _, _, u in rows)
    )


def built_in_pairs(
    kind: PairKind,
    ids: np.ndarray,
    vocab: Vocabulary,
    level: str,
    *,
    split: str,
    max_len: int,
    seed: int,
    noise: float = 0.1,
    words: int = 3,
    max_pairs: int | None = None,
    unk_spellings: Mapping[int, str] | None = None,
) -> PairSet:
    """One split's pairs of a built-in kind from that split's ids; ``noise`` is the
    per-token probability of an edit, shared equally by deletion, insertion and
    substitution; ``unk_spellings`` (position in ``ids`` -> string) makes the targets
    carry the real strings of their ``<unk>`` tokens."""
    if kind == "noisy":
        return noisy_pairs(
            ids,
            vocab,
            level,
            max_len=max_len,
            seed=seed,
            split=split,
            deletion=noise / 3,
            insertion=noise / 3,
            substitution=noise / 3,
            max_pairs=max_pairs,
            unk_spellings=unk_spellings,
        )
    if kind == "reverse":
        return reverse_pairs(
            ids,
            vocab,
            level,
            max_len=max_len,
            seed=seed,
            split=split,
            words=words,
            max_pairs=max_pairs,
            unk_spellings=unk_spellings,
        )
    raise DataError(f"'{kind}' pairs are read from a file, not built from a split")
