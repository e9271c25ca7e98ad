"""Cleaning presets: how loaded text becomes the text models see.

* ``none``: identity, for symbol streams where every byte matters (DNA, ABC music).
* ``seed``: the tutorial's loop, byte for byte, so its numbers can be reproduced.
* ``text``: a sane default for prose: Unicode-normalised, no BOM, no Project Gutenberg
  licence boilerplate, tidy whitespace, case kept.

Each step is a small function with one job, so a new preset is a new composition.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

import pandas as pd

from pipeline_core.errors import ConfigError, DataError
from pipeline_core.schemas import validate_documents

PRESETS: dict[str, str] = {
    "none": "identity: the text exactly as loaded",
    "seed": "the tutorial's: per line of the UTF-8 bytes strip, lowercase ASCII, drop"
    " non-ASCII bytes, drop empty lines, join with one space",
    "text": "NFKC, no BOM, no Project Gutenberg header/footer, runs of spaces one space,"
    " 3+ newlines one paragraph break, lines stripped; case kept",
}

# Project Gutenberg boilerplate. The body starts after the *last line* of the header
# marker and ends before the first footer marker. Modern files use "*** START OF THE
# PROJECT GUTENBERG EBOOK ... ***"; older ones "THIS" or "*END*THE SMALL PRINT!...".
_GUTENBERG_START = re.compile(
    r"^[ \t]*\*{3}[ \t]*START OF (?:THE |THIS )?PROJECT GUTENBERG E-?(?:BOOK|TEXT).*$"
    r"|^[ \t]*\*END\*?[ \t]*THE SMALL PRINT.*$",
    re.IGNORECASE | re.MULTILINE,
)
_GUTENBERG_END = re.compile(
    r"^[ \t]*\*{3}[ \t]*END OF (?:THE |THIS )?PROJECT GUTENBERG E-?(?:BOOK|TEXT).*$"
    r"|^[ \t]*End of (?:the )?Project Gutenberg(?:'s)?\b.*$",
    re.IGNORECASE | re.MULTILINE,
)
_HORIZONTAL_SPACE = re.compile(r"[^\S\n]+")  # any whitespace but a newline
_MANY_NEWLINES = re.compile(r"\n{3,}")


# --------------------------------------------------------------------------- seed


def seed_clean_bytes(data: bytes) -> str:
    """The tutorial's loop on a file's bytes, exactly.

    ``for line in open(f, 'rb')`` splits after each b"\\n"; ``bytes.strip()`` and
    ``bytes.lower()`` touch ASCII only; non-ASCII bytes are then dropped by decoding
    ASCII with errors="ignore", so whitespace next to them survives the strip.
    """
    lines = []
    for raw in data.split(b"\n"):
        line = raw.strip().lower().decode("ascii", "ignore")
        if len(line) == 0:
            continue
        lines.append(line)
    return " ".join(lines)


def seed_clean(text: str) -> str:
    """The tutorial's cleaning of a decoded document.

    Decoding valid UTF-8 and encoding it again gives the same bytes, so this equals
    :func:`seed_clean_bytes` on the file. (With ``errors="ignore"`` the dropped bytes
    are gone before the strip; use :func:`seed_clean_bytes` on raw bytes if that matters.)
    """
    return seed_clean_bytes(text.encode("utf-8"))


# --------------------------------------------------------------------------- text


def remove_bom(text: str) -> str:
    """Drop U+FEFF: a BOM at the start, or invisible debris where files were concatenated."""
    return text.replace("\ufeff", "")


def normalize_newlines(text: str) -> str:
    """CRLF and CR become LF, so later steps see one kind of line end."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def strip_gutenberg(text: str) -> str:
    """The book between Project Gutenberg's header and footer markers (unchanged if none)."""
    starts = list(_GUTENBERG_START.finditer(text))
    # "*** START OF ..." is the last line of the header; prefer it over the older
    # "*END*THE SMALL PRINT" line that can precede it in the same file.
    modern = [m for m in starts if "START" in m.group(0).upper()]
    chosen = modern or starts
    begin = chosen[0].end() if chosen else 0
    end_match = _GUTENBERG_END.search(text, begin)
    end = end_match.start() if end_match else len(text)
    return text[begin:end]


def nfkc(text: str) -> str:
    """NFKC folds compatibility forms (ligatures, full-width letters, NBSP) into plain ones."""
    return unicodedata.normalize("NFKC", text)


def normalize_whitespace(text: str) -> str:
    """Runs of spaces/tabs one space, lines stripped, 3+ newlines one paragraph break."""
    lines = (_HORIZONTAL_SPACE.sub(" ", line).strip() for line in text.split("\n"))
    return _MANY_NEWLINES.sub("\n\n", "\n".join(lines)).strip("\n")


def text_clean(text: str) -> str:
    """The ``text`` preset: prose as a person would read it, case kept."""
    text = normalize_newlines(remove_bom(text))
    return normalize_whitespace(nfkc(strip_gutenberg(text)))


# --------------------------------------------------------------------------- API

_CLEANERS: dict[str, Callable[[str], str]] = {
    "none": lambda text: text,
    "seed": seed_clean,
    "text": text_clean,
}


def _cleaner(preset: str) -> Callable[[str], str]:
    if preset not in _CLEANERS:
        known = ", ".join(PRESETS)
        raise ConfigError(f"clean: unknown preset {preset!r}; known: {known}")
    return _CLEANERS[preset]


def clean_text(text: str, preset: str) -> str:
    """``text`` cleaned by the named preset (see :data:`PRESETS`)."""
    return _cleaner(preset)(text)


def clean_documents(docs: pd.DataFrame, preset: str) -> pd.DataFrame:
    """A validated Documents table with every text cleaned; emptied documents dropped."""
    cleaner = _cleaner(preset)
    texts = [cleaner(t) for t in docs["text"]]
    keep = [bool(t.strip()) for t in texts]
    if not any(keep):
        where = ", ".join(sorted(set(docs["source"]))) or "no documents"
        raise DataError(f"cleaning with preset {preset!r} left no text (source: {where})")
    out = docs.loc[keep, ["doc_id", "source"]].reset_index(drop=True)
    out["text"] = pd.Series([t for t, k in zip(texts, keep, strict=True) if k], dtype=str)
    out["n_chars"] = out["text"].str.len().astype("int64")
    return validate_documents(out)
