"""Tokenizers, vocabulary, integer encoding, contiguous splits and lazy windows.

The corpus becomes one integer array (the smallest unsigned dtype that fits) and a
vocabulary; splits are contiguous slices (the tail is the test set, so no test token
leaks into training); windows are strided *views* of that array, never copies and
never one-hot.

``<unk>`` policy, shared by every plugin: id 0 is always ``<unk>``. Vocabularies are
built from the *training split only* (a test symbol must not be known in advance): the
character vocabulary holds every symbol of the training text, the word vocabulary the
words seen there at least ``min_freq`` times (and at most ``max_vocab`` of them, most
frequent first); everything else maps to ``<unk>``, and the corpus keeps the original
spelling of every ``<unk>`` position so that scoring can charge it (open-vocabulary
evaluation, :mod:`pipeline_core.spelling`). Every model predicts over all ids, ``<unk>``
included.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from pipeline_core.config import DataConfig, Level
from pipeline_core.errors import DataError

UNK = "<unk>"
SPECIALS: tuple[str, ...] = (UNK,)
SPLIT_NAMES: tuple[str, str, str] = ("train", "val", "test")
_WORD_RE = re.compile(r"\w+|[^\w\s]")
#: above this share of ``<unk>`` tokens a warning is logged whatever its cause
UNK_WARN_SHARE = 0.5
log = logging.getLogger("seqlab.data")


def tokenize(text: str, level: Level) -> tuple[list[str], np.ndarray]:
    """Tokens and the character offset where each starts (for bpc over characters)."""
    if level == "char":
        return list(text), np.arange(len(text), dtype=np.int64)
    matches = list(_WORD_RE.finditer(text))
    starts = np.fromiter((m.start() for m in matches), dtype=np.int64, count=len(matches))
    return [m.group() for m in matches], starts


def detokenize(tokens: Iterable[str], level: Level) -> str:
    """Inverse of :func:`tokenize` up to whitespace (words are joined by one space)."""
    return "".join(tokens) if level == "char" else " ".join(tokens)


def smallest_uint_dtype(n_values: int) -> np.dtype[Any]:
    """The narrowest unsigned dtype holding ids in [0, n_values)."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if n_values - 1 <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.uint64)


@dataclass(frozen=True)
class Vocabulary:
    """Tokens in a stable order: specials first, then symbols (chars sorted by code
    point; words by falling frequency, ties alphabetical)."""

    tokens: tuple[str, ...]
    specials: tuple[str, ...] = SPECIALS
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(set(self.tokens)) != len(self.tokens):
            raise DataError("vocabulary has duplicate tokens")
        object.__setattr__(self, "_index", {t: i for i, t in enumerate(self.tokens)})

    @classmethod
    def build(
        cls, tokens: Sequence[str], level: Level, min_freq: int = 1, max_size: int | None = None
    ) -> Vocabulary:
        return cls.from_counts(Counter(tokens), level, min_freq, max_size)

    @classmethod
    def from_counts(
        cls, counts: Counter[str], level: Level, min_freq: int = 1, max_size: int | None = None
    ) -> Vocabulary:
        """:meth:`build` from token counts (a corpus too large for a list of its tokens)."""
        counts = Counter(counts)
        for special in SPECIALS:
            counts.pop(special, None)
        kept = [(t, c) for t, c in counts.items() if c >= min_freq]
        if level == "char":
            kept.sort(key=lambda tc: tc[0])
        else:
            kept.sort(key=lambda tc: (-tc[1], tc[0]))
        if max_size is not None:
            kept = sorted(kept, key=lambda tc: (-tc[1], tc[0]))[:max_size]
            if level == "char":
                kept.sort(key=lambda tc: tc[0])
        return cls(SPECIALS + tuple(t for t, _ in kept))

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def unk_id(self) -> int:
        return self._index[UNK]

    @property
    def symbols(self) -> tuple[str, ...]:
        """The corpus's own tokens, without the specials."""
        return tuple(t for t in self.tokens if t not in self.specials)

    def id_of(self, token: str) -> int:
        return self._index.get(token, self._index[UNK])

    def encode(self, tokens: Iterable[str]) -> np.ndarray:
        ids = [self._index.get(t, 0) for t in tokens]
        return np.asarray(ids, dtype=smallest_uint_dtype(len(self.tokens)))

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.tokens[int(i)] for i in ids]

    def to_json(self) -> str:
        return json.dumps({"tokens": list(self.tokens), "specials": list(self.specials)})

    @classmethod
    def from_json(cls, text: str) -> Vocabulary:
        raw = json.loads(text)
        return cls(tuple(raw["tokens"]), tuple(raw["specials"]))

    def save(self, path: str | Path) -> Path:
        out = Path(path)
        out.write_text(self.to_json(), encoding="utf-8")
        return out


@dataclass(frozen=True)
class EncodedCorpus:
    """A vocabulary and the corpus as one id array with contiguous split bounds."""

    vocab: Vocabulary
    ids: np.ndarray
    bounds: tuple[int, int]  # train = [0, b0), val = [b0, b1), test = [b1, N)
    split_chars: dict[str, int]  # characters of text each split covers (for bpc)
    level: Level
    text_sha256: str
    config: DataConfig
    #: how :func:`vectorize_cached` got it: hit, miss or refreshed ("" when built
    #: directly); logged on the comparison's parent run, not part of the corpus's identity
    cache: str = field(default="", compare=False, repr=False)
    #: position in ``ids`` -> the original token, for every ``<unk>`` position (the
    #: spelling that scoring charges an ``<unk>`` target, and the OOV rates)
    unk_spellings: Mapping[int, str] = field(default_factory=dict, compare=False, repr=False)

    def span(self, split: str) -> tuple[int, int]:
        b0, b1 = self.bounds
        return {"train": (0, b0), "val": (b0, b1), "test": (b1, len(self.ids))}[split]

    def split(self, split: str) -> np.ndarray:
        start, stop = self.span(split)
        return self.ids[start:stop]

    @property
    def train(self) -> np.ndarray:
        return self.split("train")

    @property
    def val(self) -> np.ndarray:
        return self.split("val")

    @property
    def test(self) -> np.ndarray:
        return self.split("test")

    def split_sizes(self) -> dict[str, int]:
        return {name: len(self.split(name)) for name in SPLIT_NAMES}

    def oov_rates(self) -> dict[str, float]:
        """Share of each split's tokens outside the training vocabulary (``<unk>``)."""
        return {
            name: float(np.count_nonzero(self.split(name) == 0)) / max(len(self.split(name)), 1)
            for name in SPLIT_NAMES
        }

    def scoring_positions(self, split: str) -> np.ndarray:
        """Indices into ``ids`` of the tokens scored for ``split``: all of them, each with
        a full context (earlier splits may lend context tokens, never labels)."""
        start, stop = self.span(split)
        return np.arange(max(start, self.config.context_len), stop, dtype=np.int64)

    def contexts_at(self, positions: np.ndarray) -> np.ndarray:
        """Contexts (B, context_len) preceding each position, from a strided view."""
        windows = sliding_windows(self.ids, self.config.context_len)
        return windows[positions - self.config.context_len].astype(np.int64)


def sliding_windows(ids: np.ndarray, length: int) -> np.ndarray:
    """All windows of ``length`` consecutive ids, as a read-only view (no copy)."""
    if len(ids) < length:
        return np.empty((0, length), dtype=ids.dtype)
    return np.lib.stride_tricks.sliding_window_view(ids, length)


def iter_batches(
    ids: np.ndarray, window: int, step: int, batch_size: int, rng: np.random.Generator | None
) -> Iterator[np.ndarray]:
    """Batches (B, window) of windows starting every ``step`` ids; shuffled with ``rng``.

    Only the starting offsets are materialised; each batch gathers its rows from a view.
    """
    views = sliding_windows(ids, window)
    starts = np.arange(0, len(views), step, dtype=np.int64)
    if rng is not None:
        rng.shuffle(starts)
    for i in range(0, len(starts), batch_size):
        yield views[starts[i : i + batch_size]].astype(np.int64)


def count_windows(n_ids: int, window: int, step: int) -> int:
    n = n_ids - window + 1
    return 0 if n <= 0 else (n + step - 1) // step


def split_bounds(n_tokens: int, fractions: Sequence[float]) -> tuple[int, int]:
    b0 = round(n_tokens * fractions[0])
    b1 = round(n_tokens * (fractions[0] + fractions[1]))
    return b0, b1


#: characters converted to code points at a time by :func:`encode_chars`
_CHAR_CHUNK = 1 << 20
_N_CODE_POINTS = 0x110000


def _code_points(text: str, start: int, stop: int) -> Iterator[tuple[int, np.ndarray]]:
    """(offset, code points) of ``text[start:stop]``, a chunk at a time."""
    for i in range(start, stop, _CHAR_CHUNK):
        chunk = text[i : min(i + _CHAR_CHUNK, stop)].encode("utf-32-le", "surrogatepass")
        yield i, np.frombuffer(chunk, dtype=np.uint32)


def encode_chars(text: str, b0: int, config: DataConfig) -> tuple[Vocabulary, np.ndarray]:
    """The character vocabulary of ``text[:b0]`` and the ids of all of ``text``: what
    :meth:`Vocabulary.build` and :meth:`Vocabulary.encode` give on ``list(text)``,
    without that list (8 bytes a character, plus a list of ids as long): the memory is
    the id array and one chunk, so a 100 MB corpus fits in a few hundred MB."""
    counts = np.zeros(_N_CODE_POINTS, dtype=np.int64)
    for _, points in _code_points(text, 0, b0):
        seen = np.bincount(points)
        counts[: len(seen)] += seen
    present = np.flatnonzero(counts)
    vocab = Vocabulary.from_counts(
        Counter({chr(p): int(counts[p]) for p in present}),
        "char",
        config.min_freq,
        config.max_vocab,
    )
    dtype = smallest_uint_dtype(len(vocab))
    lookup = np.zeros(_N_CODE_POINTS, dtype=dtype)  # 0: <unk>
    for i, token in enumerate(vocab.tokens):
        if token not in vocab.specials:
            lookup[ord(token)] = i
    ids = np.empty(len(text), dtype=dtype)
    for start, points in _code_points(text, 0, len(text)):
        ids[start : start + len(points)] = lookup[points]
    return vocab, ids


def vectorize(text: str, config: DataConfig, windows: bool = True) -> EncodedCorpus:
    """Tokenize, cut contiguous splits, build the vocabulary from the training split
    alone (so val/test symbols are not known in advance) and encode; the spelling of
    every ``<unk>`` position is kept for scoring. ``windows``: refuse splits shorter than
    one window (False for tasks that read whole examples, whose own checks say more).
    Characters are encoded without a list of tokens (:func:`encode_chars`)."""
    if config.level == "char":
        b0, b1 = split_bounds(len(text), config.splits)
        if windows:
            check_long_enough(len(text), (b0, b1), config)
        vocab, ids = encode_chars(text, b0, config)
        unk_spellings = {int(i): text[i] for i in np.flatnonzero(ids == 0)}
        check_not_all_unk(ids, b0, config)
        split_chars = {"train": b0, "val": b1 - b0, "test": len(text) - b1}
    else:
        tokens, starts = tokenize(text, config.level)
        b0, b1 = split_bounds(len(tokens), config.splits)
        if windows:
            check_long_enough(len(tokens), (b0, b1), config)
        vocab = Vocabulary.build(tokens[:b0], config.level, config.min_freq, config.max_vocab)
        ids = vocab.encode(tokens)
        unk_spellings = {int(i): tokens[i] for i in np.flatnonzero(ids == 0)}
        check_not_all_unk(ids, b0, config)
        char_at = np.append(starts, len(text))
        split_chars = {
            "train": int(char_at[b0] - char_at[0]) if b0 else 0,
            "val": int(char_at[b1] - char_at[b0]),
            "test": int(len(text) - char_at[b1]),
        }
    return EncodedCorpus(
        vocab=vocab,
        ids=ids,
        bounds=(b0, b1),
        split_chars=split_chars,
        level=config.level,
        text_sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(),
        config=config,
        unk_spellings=unk_spellings,
    )


def check_long_enough(n_tokens: int, bounds: tuple[int, int], config: DataConfig) -> None:
    """Every split needs more tokens than one window, or nothing can be trained or scored."""
    b0, b1 = bounds
    sizes = {"train": b0, "val": b1 - b0, "test": n_tokens - b1}
    need = config.context_len + 1
    short = [f"{name}={size}" for name, size in sizes.items() if size < need]
    if short:
        raise DataError(
            f"corpus too short: {n_tokens} {config.level} tokens give splits "
            f"{', '.join(short)}, each needs at least context_len + 1 = {need} tokens; "
            "use a longer text, a smaller context_len, or other splits"
        )


@dataclass(frozen=True)
class UnkReport:
    """How much of the corpus the vocabulary maps to ``<unk>`` (id 0)."""

    tokens: int
    total: int

    @property
    def share(self) -> float:
        return self.tokens / self.total if self.total else 0.0


def _vocab_policy(config: DataConfig) -> str:
    return f"data.min_freq={config.min_freq}, data.max_vocab={config.max_vocab}"


def check_not_all_unk(ids: np.ndarray, b0: int, config: DataConfig) -> None:
    """A vocabulary that maps every training token to ``<unk>`` can only learn that
    ``<unk>`` follows ``<unk>`` (bpc 0, accuracy 1): refused, naming the settings."""
    if b0 and not np.any(ids[:b0]):
        unk = UnkReport(int(np.count_nonzero(ids == 0)), len(ids))
        raise DataError(
            f"every one of the {b0:,} train tokens is <unk> ({unk.share:.1%} of all "
            f"{unk.total:,} {config.level} tokens): {_vocab_policy(config)} keep no token "
            "of the training text; lower data.min_freq or raise data.max_vocab"
        )


def unk_report(corpus: EncodedCorpus) -> UnkReport:
    return UnkReport(int(np.count_nonzero(corpus.ids == 0)), len(corpus.ids))


def warn_unk(corpus: EncodedCorpus) -> UnkReport:
    """Log (logger ``seqlab.data``) how much of the text became ``<unk>``: a WARNING when
    ``max_vocab`` capped the vocabulary or more than half the tokens are ``<unk>``."""
    unk = unk_report(corpus)
    if not unk.tokens:
        return unk
    config = corpus.config
    message = (
        f"{unk.share:.1%} of the {unk.total:,} {corpus.level} tokens "
        f"({unk.tokens:,}) became <unk> under {_vocab_policy(config)}"
    )
    if config.max_vocab is not None or unk.share > UNK_WARN_SHARE:
        log.warning("%s; raise data.max_vocab or lower data.min_freq to keep more", message)
    else:
        log.info(message)
    return unk


def cache_root() -> Path:
    """``$SEQLAB_CACHE_DIR`` or ``~/.cache/seqlab``: downloads and encoded corpora."""
    import os

    return Path(os.environ.get("SEQLAB_CACHE_DIR", Path.home() / ".cache" / "seqlab"))


def corpus_key(text: str, config: DataConfig) -> str:
    """Cache key: the text's sha256 and the config that shapes the encoding."""
    payload = json.dumps(
        {
            "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
            # entries encoded with a whole-corpus vocabulary (no such key) are not reused
            "vocab_from": "train",
            **config.model_dump(mode="json"),
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def save_corpus(corpus: EncodedCorpus, folder: Path, overwrite: bool = False) -> None:
    """Write ids (.npy), vocabulary (JSON) and metadata; atomically, via a temp folder.

    An existing entry is kept (another process cached the same corpus first) unless
    ``overwrite``: then it is moved aside and the new one renamed in its place."""
    import contextlib
    import shutil
    import tempfile

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".tmp-"))
    np.save(tmp / "ids.npy", corpus.ids)
    corpus.vocab.save(tmp / "vocab.json")
    meta = {
        "bounds": list(corpus.bounds),
        "split_chars": corpus.split_chars,
        "level": corpus.level,
        "text_sha256": corpus.text_sha256,
        "config": corpus.config.model_dump(mode="json"),
    }
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    unk = {
        "positions": list(corpus.unk_spellings),
        "spellings": list(corpus.unk_spellings.values()),
    }
    (tmp / "unk.json").write_text(json.dumps(unk), encoding="utf-8")
    old = None
    if overwrite and folder.exists():
        old = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".old-"))
        with contextlib.suppress(OSError):  # gone meanwhile: nothing to replace
            folder.rename(old / folder.name)
    try:
        tmp.rename(folder)
    except OSError:  # another process cached the same corpus first
        shutil.rmtree(tmp, ignore_errors=True)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def load_corpus(folder: Path) -> EncodedCorpus:
    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    unk = json.loads((folder / "unk.json").read_text(encoding="utf-8"))
    return EncodedCorpus(
        vocab=Vocabulary.from_json((folder / "vocab.json").read_text(encoding="utf-8")),
        ids=np.load(folder / "ids.npy"),
        bounds=(int(meta["bounds"][0]), int(meta["bounds"][1])),
        split_chars={k: int(v) for k, v in meta["split_chars"].items()},
        level=meta["level"],
        text_sha256=meta["text_sha256"],
        config=DataConfig.model_validate(meta["config"]),
        unk_spellings=dict(zip(map(int, unk["positions"]), unk["spellings"], strict=True)),
    )


def vectorize_cached(
    text: str,
    config: DataConfig,
    cache_dir: Path | None = None,
    refresh: bool = False,
    windows: bool = True,
) -> tuple[EncodedCorpus, bool]:
    """:func:`vectorize`, reusing an earlier result for the same text and config (every
    plugin of a comparison, and every later run with the same inputs, reads one entry).

    ``refresh`` (``seqlab run --refresh``) recomputes and overwrites the entry. Returns
    the corpus and whether it came from the cache; ``corpus.cache`` says hit, miss or
    refreshed.
    """
    folder = (cache_dir or cache_root() / "vectorized") / corpus_key(text, config)
    if not refresh and (folder / "meta.json").is_file():
        try:
            cached = load_corpus(folder)
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache entry is rebuilt below
        else:
            log.info("vectorized data from the cache: %s", folder)
            if windows:
                check_long_enough(len(cached.ids), cached.bounds, config)
            warn_unk(cached)
            return replace(cached, cache="hit"), True
    stale = refresh or folder.exists()  # refreshed, or a damaged entry to replace
    corpus = vectorize(text, config, windows=False)  # the entry serves every task
    if windows:
        check_long_enough(len(corpus.ids), corpus.bounds, config)
    warn_unk(corpus)
    save_corpus(corpus, folder, overwrite=stale)
    log.info("vectorized data %s: %s", "refreshed" if refresh else "cached", folder)
    return replace(corpus, cache="refreshed" if refresh else "miss"), False


def corpus_text(texts: Iterable[str]) -> str:
    """Documents joined into one stream; a blank line marks each document boundary."""
    return "\n\n".join(texts)
