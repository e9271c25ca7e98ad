"""The order ``make test`` hands test files to its workers (tests/conftest.py)."""

from __future__ import annotations

from tests.conftest import HEAVIEST_FILES, REPO


def test_every_heavy_file_named_exists_once() -> None:
    """A renamed or misspelt file would silently fall back to the end of the run."""
    assert len(set(HEAVIEST_FILES)) == len(HEAVIEST_FILES)
    missing = [name for name in HEAVIEST_FILES if not (REPO / "tests" / name).is_file()]
    assert not missing


def test_make_test_keeps_the_collection_order() -> None:
    """xdist's default reorders files by their number of tests, undoing the order."""
    makefile = (REPO / "Makefile").read_text()
    assert "--dist loadfile --no-loadscope-reorder" in makefile
