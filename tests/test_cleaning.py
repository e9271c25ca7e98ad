"""Cleaning presets: the tutorial's exactly, a prose default, and identity."""

from __future__ import annotations

import io
import re
import unicodedata
from pathlib import Path
from typing import Any

import pytest

from pipeline_core.cleaning import (
    PRESETS,
    clean_documents,
    clean_text,
    normalize_whitespace,
    seed_clean_bytes,
    strip_gutenberg,
)
from pipeline_core.errors import ConfigError, DataError
from pipeline_core.schemas import make_documents
from pipeline_core.sources import load_documents
from tests.conftest_data import data_file


def tutorial_cleaning(file: Any) -> str:
    """The tutorial's loop, verbatim except that it reads from an open binary stream."""
    lines = []
    for line in file:
        line = line.strip().lower()
        line = line.decode("ascii", "ignore")
        if len(line) == 0:
            continue
        lines.append(line)
    return " ".join(lines)


# --------------------------------------------------------------------------- seed


def test_seed_on_wonderland_matches_the_tutorial() -> None:
    path = data_file("wonderland.txt")
    with open(path, "rb") as file:  # as the tutorial does
        expected = tutorial_cleaning(file)
    docs = clean_documents(load_documents(str(path)), "seed")
    text = docs.iloc[0]["text"]
    assert text == expected
    assert len(text) == 142_644
    assert len(set(text)) == 44
    assert docs.iloc[0]["n_chars"] == 142_644
    assert text.startswith("alice's adventures in wonderland lewis carroll")


@pytest.mark.parametrize(
    "raw",
    [
        b"  Hello World \r\n\n\tSecond\tLine\x0b\n",
        b"caf\xc3\xa9 \xe2\x80\x94\nEND \xc3\x89T\xc3\x89 \n\xe2\x80\x99\n  \xef\xbb\xbfBOM\n",
        b"no newline at end",
        b"\xc3\x84\xc3\x96 \n\n \n",  # only non-ASCII: every line becomes empty
        b"A\rB\nC",  # a lone CR does not split a line in a binary file
    ],
)
def test_seed_edge_cases_match_the_tutorial(raw: bytes) -> None:
    assert seed_clean_bytes(raw) == tutorial_cleaning(io.BytesIO(raw))
    text = raw.decode("utf-8")
    assert clean_text(text, "seed") == tutorial_cleaning(io.BytesIO(raw))


def test_seed_keeps_space_before_a_dropped_non_ascii_byte() -> None:
    # strip runs on bytes before non-ASCII is dropped, so "caf " keeps its trailing space
    assert clean_text("caf\u00e9 \u2014\nNext", "seed") == "caf  next"


# --------------------------------------------------------------------------- text


def test_text_on_wonderland_removes_bom_keeps_case() -> None:
    path = data_file("wonderland.txt")
    raw = load_documents(str(path)).iloc[0]["text"]
    assert raw.startswith("\ufeff")  # the file has a BOM and no Gutenberg boilerplate
    assert "PROJECT GUTENBERG" not in raw.upper()
    text = clean_documents(load_documents(str(path)), "text").iloc[0]["text"]
    assert text.startswith("ALICE'S ADVENTURES IN WONDERLAND\n\nLewis Carroll\n\n")
    assert "\ufeff" not in text
    assert "Alice was beginning to get very tired" in text
    assert text.endswith("happy summer days.\n\nTHE END")  # indentation stripped
    assert "\n\n\n" not in text and "  " not in text and "\t" not in text
    assert all(line == line.strip() for line in text.split("\n"))
    assert text == unicodedata.normalize("NFKC", text)


GUTENBERG_MODERN = """\ufeffThe Project Gutenberg eBook of Alice's Adventures in Wonderland

This ebook is for the use of anyone anywhere in the United States.

Title: Alice's Adventures in Wonderland

*** START OF THE PROJECT GUTENBERG EBOOK ALICE'S ADVENTURES IN WONDERLAND ***
\r
CHAPTER I.\r
Down the Rabbit-Hole\r
\r
Alice was beginning to get very tired.\r
\r
*** END OF THE PROJECT GUTENBERG EBOOK ALICE'S ADVENTURES IN WONDERLAND ***

Updated editions will replace the previous one.
"""

GUTENBERG_2008 = """The Project Gutenberg EBook of Alice's Adventures in Wonderland

*** START OF THIS PROJECT GUTENBERG EBOOK ALICE'S ADVENTURES IN WONDERLAND ***

CHAPTER I.
Down the Rabbit-Hole

Alice was beginning to get very tired.

End of Project Gutenberg's Alice's Adventures in Wonderland, by Lewis Carroll

*** END OF THIS PROJECT GUTENBERG EBOOK ALICE'S ADVENTURES IN WONDERLAND ***
"""

GUTENBERG_1990S = """Project Gutenberg's Etext of Alice

**Welcome To The World of Free Plain Vanilla Electronic Texts**

*END*THE SMALL PRINT! FOR PUBLIC DOMAIN ETEXTS*Ver.04.29.93*END*

CHAPTER I.
Down the Rabbit-Hole

Alice was beginning to get very tired.

End of the Project Gutenberg Etext of Alice
"""

GUTENBERG_2000S = """The Project Gutenberg EBook of Alice

*END*THE SMALL PRINT! FOR PUBLIC DOMAIN EBOOKS*Ver.02/11/02*END*

Produced-by notes and more licence text that is not the book.

***START OF THE PROJECT GUTENBERG EBOOK ALICE***

CHAPTER I.
Down the Rabbit-Hole

Alice was beginning to get very tired.

***END OF THE PROJECT GUTENBERG EBOOK ALICE***
"""


@pytest.mark.parametrize(
    "raw", [GUTENBERG_MODERN, GUTENBERG_2008, GUTENBERG_2000S, GUTENBERG_1990S]
)
def test_text_removes_gutenberg_header_and_footer(raw: str) -> None:
    text = clean_text(raw, "text")
    assert text == "CHAPTER I.\nDown the Rabbit-Hole\n\nAlice was beginning to get very tired."


def test_strip_gutenberg_leaves_other_text_alone() -> None:
    plain = "Not a Gutenberg book.\nIt mentions the Project Gutenberg EBOOK in passing.\n"
    assert strip_gutenberg(plain) == plain


def test_text_normalises_unicode_and_whitespace() -> None:
    raw = "\ufeff\uff21 \ufb01ne\u00a0day\t\t here  \r\n\n\n\n\nnext   \nline\n\n"
    assert clean_text(raw, "text") == "A fine day here\n\nnext\nline"


def test_normalize_whitespace_keeps_single_blank_lines() -> None:
    assert normalize_whitespace("a\n\nb\n\n\nc") == "a\n\nb\n\nc"


# --------------------------------------------------------------------------- none, API


def test_none_is_identity() -> None:
    raw = "\ufeff  Mixed CASE\r\n\n\n\ttabs \u00e9 \x1b\n"
    assert clean_text(raw, "none") == raw
    docs = make_documents([("d", "s", raw)])
    assert clean_documents(docs, "none").equals(docs)


def test_presets_are_listed_with_descriptions() -> None:
    assert list(PRESETS) == ["none", "seed", "text"]
    assert all(desc and "\n" not in desc for desc in PRESETS.values())


def test_unknown_preset_names_clean_and_the_known_ones() -> None:
    with pytest.raises(ConfigError) as excinfo:
        clean_text("x", "lowercase")
    assert str(excinfo.value) == "clean: unknown preset 'lowercase'; known: none, seed, text"
    with pytest.raises(ConfigError, match=r"^clean: unknown preset"):
        clean_documents(make_documents([("d", "s", "x")]), "lowercase")


def test_clean_documents_drops_emptied_documents_and_revalidates() -> None:
    docs = make_documents(
        [("a", "src", "Hello\nWorld\n"), ("b", "src", "\u00c4\u00d6\u00dc\n"), ("c", "src", "Z")]
    )
    out = clean_documents(docs, "seed")
    assert out["doc_id"].tolist() == ["a", "c"]
    assert out["text"].tolist() == ["hello world", "z"]
    assert out["n_chars"].tolist() == [11, 1]
    assert list(out.index) == [0, 1]


def test_clean_documents_all_empty_is_one_line_error() -> None:
    docs = make_documents([("a", "src.txt", "\u00e9\u00e9\n"), ("b", "src.txt", "\u2014")])
    with pytest.raises(DataError) as excinfo:
        clean_documents(docs, "seed")
    message = str(excinfo.value)
    assert message == "cleaning with preset 'seed' left no text (source: src.txt)"


def test_clean_documents_on_several_files(tmp_path: Path) -> None:
    (tmp_path / "one.txt").write_text("First  LINE\n\n\n\nsecond")
    (tmp_path / "two.txt").write_text("  Two  ")
    out = clean_documents(load_documents(str(tmp_path)), "text")
    assert out["text"].tolist() == ["First LINE\n\nsecond", "Two"]
    assert all(re.fullmatch(r"\S(.*\S)?", t, re.DOTALL) for t in out["text"])
