"""Labelled examples for sequence-level tasks (``classify``): reading and splitting.

Two layouts, told apart by the source itself:

* a directory: one folder per label, every (non-hidden) file inside one example, its
  whole text (a final newline dropped);
* anything else ``data.source`` accepts (a file, a glob, a URL, ``synthetic:parity``):
  UTF-8 text of ``text<TAB>label`` lines, the label after the last tab; blank lines are
  skipped.

The texts are read raw (``data.clean`` shapes the corpus vocabulary only), so a label
never leaks into an example. Splits are per example: shuffled with a seed, then cut by
``data.splits``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline_core.config import DecodeErrors
from pipeline_core.errors import DataError, SourceError
from pipeline_core.vectorize import SPLIT_NAMES


@dataclass(frozen=True)
class Example:
    """One labelled sequence and where it came from (for error messages)."""

    text: str
    label: str
    where: str


def tsv_examples(text: str, name: str) -> list[Example]:
    """The ``text<TAB>label`` lines of ``text``; a line without a label, or with an
    empty text, is a DataError naming ``name`` and the line."""
    out = []
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.rstrip("\r")
        if not line.strip():
            continue
        body, tab, label = line.rpartition("\t")
        where = f"{name} line {number}"
        if not tab or not label.strip():
            raise DataError(f"{where}: no label (expected text<TAB>label)")
        if not body:
            raise DataError(f"{where}: empty text before the tab")
        out.append(Example(body, label.strip(), where))
    return out


def _visible(names: Sequence[str]) -> list[str]:
    return sorted(n for n in names if not n.startswith("."))


def folder_examples(root: Path, errors: DecodeErrors = "strict") -> list[Example]:
    """One folder per label under ``root``, each file in it one example; an empty
    label folder or a file outside any label folder is a DataError naming it."""
    from pipeline_core.sources import decode_text

    entries = _visible(os.listdir(root))
    stray = [n for n in entries if not (root / n).is_dir()]
    if stray:
        raise DataError(
            f"{root / stray[0]}: a file outside any label folder (classify reads one folder "
            "per label, each file one example)"
        )
    if not entries:
        raise DataError(f"{root}: no label folders (one folder per label, each file one example)")
    out = []
    for label in entries:
        folder = root / label
        files = [
            Path(dirpath) / f
            for dirpath, dirnames, filenames in sorted(os.walk(folder))
            for f in _visible(filenames)
            if not any(part.startswith(".") for part in Path(dirpath).relative_to(folder).parts)
        ]
        if not files:
            raise DataError(f"{folder}: empty label folder (each label needs an example file)")
        for path in files:
            try:
                data = path.read_bytes()
            except OSError as err:
                raise SourceError(f"cannot read {path}: {err.strerror or err}") from None
            text = decode_text(data, str(path), errors)
            text = text[:-1] if text.endswith("\n") else text
            if not text:
                raise DataError(f"{path}: empty example")
            out.append(Example(text, label, str(path)))
    return out


def read_examples(source: str, errors: DecodeErrors = "strict") -> list[Example]:
    """Every example of ``source`` (a label-folder directory, or tab-separated text
    from any other source); fewer than two distinct labels is a DataError."""
    from pipeline_core.sources import load_documents

    path = Path(source).expanduser()
    if "://" not in source and path.is_dir():
        examples = folder_examples(path, errors)
    else:
        docs = load_documents(source, errors=errors)
        examples = [
            ex
            for doc_id, text in zip(docs["doc_id"], docs["text"], strict=True)
            for ex in tsv_examples(str(text), str(doc_id))
        ]
    labels = sorted({ex.label for ex in examples})
    if len(labels) < 2:
        only = f" ({labels[0]!r})" if labels else ""
        raise DataError(
            f"{source}: only {len(labels)} distinct label{only}; classification needs at least two"
        )
    return examples


def split_examples(n: int, fractions: Sequence[float], seed: int) -> dict[str, np.ndarray]:
    """Indices of the train / val / test examples: a seeded shuffle cut by ``fractions``
    (each split at least one example, else a DataError with the numbers)."""
    order = np.random.default_rng(seed).permutation(n)
    n_val = round(n * fractions[1])
    n_test = round(n * fractions[2])
    n_train = n - n_val - n_test
    if min(n_train, n_val, n_test) < 1:
        raise DataError(
            f"{n} labelled example(s) cannot fill the splits {tuple(fractions)}: train, val "
            f"and test get {n_train}, {n_val}, {n_test}; give more examples"
        )
    cuts = np.cumsum([n_train, n_val])
    parts = np.split(order, cuts)
    return dict(zip(SPLIT_NAMES, parts, strict=True))
