"""ARPA back-off files (the SRILM / KenLM text format): writing, reading, scoring.

Why: an n-gram model exported as ARPA can be queried by KenLM, SRILM or any toolkit,
and reading it back proves the export is the model.

Format::

    \\data\\
    ngram 1=<count>
    ...
    \\1-grams:
    <log10 p>\\t<w1>\\t<log10 backoff>
    ...
    \\N-grams:
    <log10 p>\\t<w1 ... wN>
    \\end\\

Scoring (standard back-off semantics): ``p(w|h) = p(hw)`` when ``hw`` is listed, else
``bow(h) * p(w|h')`` with ``h'`` = ``h`` without its first token and ``bow(h) = 1`` when
``h`` is not listed. A zero probability is written as SRILM's ``-99``. Numbers are printed
with 10 decimals, so a read-back probability is exact to ~1e-10 relative.

**Token escaping**: ARPA separates fields by whitespace, so a token may not contain any.
A space is written ``<sp>`` and any other whitespace character ``<U+XXXX>`` (its code
point in hex, e.g. a newline is ``<U+000A>``); the reader undoes both. A token that
already reads like an escape (e.g. the literal text ``<sp>``) cannot be written
unambiguously and is refused, as is an empty token.

**Sentence markers**: KenLM refuses an ARPA file without the unigrams ``<s>`` and ``</s>``
(``SpecialWordMissingException``) and SRILM expects them too, so every export lists them,
after the model's own tokens (which keep their id order). seqlab's models read one stream
with no sentence boundaries, so the markers say nothing the model knows:

* ``<s>`` is only ever a context, never predicted: log10 p = ``-99`` (SRILM's zero, the
  usual value) and log10 backoff ``0``, so after ``<s>`` (KenLM's ``bos=True``) the first
  token gets the model's empty-context (unigram) probability;
* ``</s>`` gets log10 p = ``-99`` (p = 1e-99), backoff ``0``: the model never ends a
  sentence. Every real token keeps exactly the model's probability, and each context's
  distribution over the tokens plus ``</s>`` sums to 1 + b * 1e-99, with b the product of
  the backoffs on the way down to the unigrams: 1 to double precision.

KenLM itself checks no normalisation when it loads a file (it loads unnormalised ones);
``tests/test_ngram_arpa.py`` checks it through KenLM's own scores instead. KenLM needs an
order of at least 2: it refuses an order-1 export, which SRILM and :func:`read_arpa` read.

A model token spelled ``<s>`` or ``</s>`` would collide with a marker and is refused.
:func:`read_arpa` keeps the markers' entries but leaves them out of
:attr:`ArpaModel.vocab`, which is the model's vocabulary in id order.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seqlab.api import DataError

_UNESCAPE = re.compile(r"<sp>|<U\+([0-9A-F]{4,6})>")
_HEADER = re.compile(r"ngram\s+(\d+)\s*=\s*(\d+)$")
_SECTION = re.compile(r"\\(\d+)-grams:$")
#: sentence start / end: written as unigrams only, for KenLM and SRILM (module docstring)
BOS, EOS = "<s>", "</s>"
MARKERS: tuple[str, str] = (BOS, EOS)
#: log10 probability of both markers: SRILM's zero
MARKER_LOG10_PROB = -99.0


def escape_token(token: str) -> str:
    """ARPA spelling of a token: whitespace characters become ``<sp>`` / ``<U+XXXX>``."""
    return "".join(
        "<sp>" if ch == " " else f"<U+{ord(ch):04X}>" if ch.isspace() else ch for ch in token
    )


def unescape_token(text: str) -> str:
    """Inverse of :func:`escape_token`."""
    return _UNESCAPE.sub(lambda m: " " if m.group(1) is None else chr(int(m.group(1), 16)), text)


@dataclass(frozen=True)
class ArpaTable:
    """One order's section: token ids (n, k), log10 probabilities, log10 backoffs."""

    tokens: np.ndarray
    log10_prob: np.ndarray
    log10_backoff: np.ndarray | None


def _escaped_vocab(vocab: Sequence[str]) -> np.ndarray:
    escaped = []
    for i, tok in enumerate(vocab):
        esc = escape_token(tok)
        if not tok or unescape_token(esc) != tok:
            raise DataError(f"vocab id {i}: token {tok!r} cannot be written to ARPA unambiguously")
        if tok in MARKERS:
            raise DataError(
                f"vocab id {i}: token {tok!r} cannot be written to ARPA unambiguously "
                "(it is a sentence marker there)"
            )
        escaped.append(esc)
    if len(set(escaped)) != len(escaped):
        raise DataError("vocab has duplicate tokens; ARPA needs each token once")
    return np.array(escaped, dtype=object)


def check_writable(path: str | Path) -> Path:
    """``path`` as a Path once its folder exists and takes a new file; otherwise one
    DataError naming it (a folder under a regular file, /proc, an existing directory)."""
    out = Path(path)
    if out.is_dir():
        raise DataError(f"cannot write the ARPA file {out}: it is a directory")
    above = next((p for p in (out.parent, *out.parent.parents) if p.exists()), None)
    if above is not None and not above.is_dir():
        raise DataError(f"cannot write the ARPA file {out}: {above} is a file, not a folder")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out.parent, prefix=".arpa-probe-"):
            pass
    except OSError as err:
        raise DataError(f"cannot write the ARPA file {out}: {err.strerror or err}") from None
    return out


def write_arpa(path: str | Path, tables: Sequence[ArpaTable], vocab: Sequence[str]) -> Path:
    """Write ``tables`` (orders 1..N) as an ARPA file, tokens named by ``vocab``: under a
    temporary name renamed at the end, so a failed write leaves no partial file."""
    esc = _escaped_vocab(vocab)
    out = check_writable(path)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        _write_tables(tmp, tables, esc)
        os.replace(tmp, out)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise DataError(f"cannot write the ARPA file {out}: {err.strerror or err}") from None
    return out


def _write_tables(out: Path, tables: Sequence[ArpaTable], esc: np.ndarray) -> None:
    with out.open("w", encoding="utf-8", newline="\n") as fh:
        fh.write("\\data\\\n")
        for k, table in enumerate(tables, start=1):
            fh.write(f"ngram {k}={len(table.tokens) + (len(MARKERS) if k == 1 else 0)}\n")
        for k, table in enumerate(tables, start=1):
            fh.write(f"\n\\{k}-grams:\n")
            words = esc[table.tokens[:, 0]]
            for col in range(1, k):
                words = words + " " + esc[table.tokens[:, col]]
            probs = [f"{x:.10f}" for x in table.log10_prob.tolist()]
            if table.log10_backoff is None:
                fh.writelines(f"{p}\t{w}\n" for p, w in zip(probs, words, strict=True))
            else:
                bows = [f"{x:.10f}" for x in table.log10_backoff.tolist()]
                fh.writelines(
                    f"{p}\t{w}\t{b}\n" for p, w, b in zip(probs, words, bows, strict=True)
                )
            if k == 1:
                bow = "" if table.log10_backoff is None else f"\t{0.0:.10f}"
                fh.writelines(f"{MARKER_LOG10_PROB:.10f}\t{m}{bow}\n" for m in MARKERS)
        fh.write("\n\\end\\\n")


class ArpaModel:
    """A back-off model read from an ARPA file, scored with the standard semantics."""

    def __init__(
        self,
        order: int,
        vocab: list[str],
        log10_probs: dict[tuple[str, ...], float],
        log10_backoffs: dict[tuple[str, ...], float],
        unk: str = "<unk>",
    ):
        self.order = order
        self.vocab = vocab
        self.log10_probs = log10_probs
        self.log10_backoffs = log10_backoffs
        self.unk = unk

    def _known(self, token: str) -> str:
        if (token,) in self.log10_probs:
            return token
        if (self.unk,) in self.log10_probs:
            return self.unk
        raise DataError(f"token {token!r} is not in the ARPA vocabulary and it has no {self.unk}")

    def log10_prob(self, word: str, context: Sequence[str] = ()) -> float:
        """log10 p(word | context), backing off as ARPA prescribes."""
        ctx = tuple(self._known(t) for t in context)
        ctx = ctx[len(ctx) - self.order + 1 :] if self.order > 1 else ()
        word = self._known(word)
        backoff = 0.0
        for s in range(len(ctx) + 1):
            history = ctx[s:]
            lp = self.log10_probs.get((*history, word))
            if lp is not None:
                return backoff + lp
            backoff += self.log10_backoffs.get(history, 0.0)
        raise AssertionError("unreachable: every known word has a unigram")

    def log_proba(self, context: Sequence[str] = ()) -> np.ndarray:
        """Natural-log p(w | context) for every w of :attr:`vocab` (file order)."""
        return np.array([self.log10_prob(w, context) for w in self.vocab]) * math.log(10.0)


def read_arpa(path: str | Path, unk: str = "<unk>") -> ArpaModel:
    """Parse an ARPA file (one-line DataError if malformed); tokens are unescaped."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"ARPA file not found: {p}")
    declared: dict[int, int] = {}
    probs: dict[tuple[str, ...], float] = {}
    bows: dict[tuple[str, ...], float] = {}
    seen: dict[int, int] = {}
    vocab: list[str] = []
    section = 0  # 0: before \data\, -1: header, k: inside \k-grams:, -2: after \end\
    with p.open(encoding="utf-8") as fh:
        for lineno, raw in enumerate(fh, start=1):
            line = raw.strip()
            if not line or section == -2:
                continue
            if line == "\\data\\":
                section = -1
                continue
            if line == "\\end\\":
                section = -2
                continue
            m = _SECTION.match(line)
            if m:
                section = int(m.group(1))
                if section not in declared:
                    raise DataError(f"{p} line {lineno}: \\{section}-grams: not declared")
                continue
            if section == -1:
                h = _HEADER.match(line)
                if not h:
                    raise DataError(f"{p} line {lineno}: expected 'ngram k=count'")
                declared[int(h.group(1))] = int(h.group(2))
                continue
            if section <= 0:
                raise DataError(f"{p} line {lineno}: text outside a section")
            parts = line.split()
            k = section
            if len(parts) not in (k + 1, k + 2):
                raise DataError(f"{p} line {lineno}: expected {k} token(s) after the log10 prob")
            try:
                logp = float(parts[0])
                bow = float(parts[k + 1]) if len(parts) == k + 2 else None
            except ValueError:
                raise DataError(f"{p} line {lineno}: not a number") from None
            gram = tuple(unescape_token(t) for t in parts[1 : k + 1])
            probs[gram] = logp
            if bow is not None:
                bows[gram] = bow
            if k == 1 and gram[0] not in MARKERS:
                vocab.append(gram[0])
            seen[k] = seen.get(k, 0) + 1
    if section != -2:
        raise DataError(f"{p}: no \\end\\ (truncated ARPA file?)")
    for k, n in declared.items():
        if seen.get(k, 0) != n:
            raise DataError(f"{p}: header declares {n} {k}-grams, the file has {seen.get(k, 0)}")
    return ArpaModel(max(declared, default=1), vocab, probs, bows, unk)


__all__ = [
    "BOS",
    "EOS",
    "MARKERS",
    "ArpaModel",
    "ArpaTable",
    "escape_token",
    "read_arpa",
    "unescape_token",
    "write_arpa",
]
