"""Ingest: every source kind, the download cache, and one-line errors for bad input."""

from __future__ import annotations

import hashlib
import json
import os
import socket
from pathlib import Path

import pandas as pd
import pytest

from pipeline_core.errors import ConfigError, DataError, SourceError
from pipeline_core.schemas import make_documents, validate_documents
from pipeline_core.sources import (
    KNOWN_SCHEMES,
    cache_paths,
    load_documents,
    load_raw_bytes,
    text_sha256,
)
from tests.conftest_data import Route, data_file, local_http_server

BOOK = b"Once upon a time.\nThe end.\n"


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test touches ~/.cache, and a user's proxy never intercepts 127.0.0.1."""
    monkeypatch.setenv("SEQLAB_CACHE_DIR", str(tmp_path / "env-cache"))
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.delenv("SEQLAB_GUTENBERG_MIRROR", raising=False)
    monkeypatch.delenv("SEQLAB_DOWNLOAD_TIMEOUT", raising=False)


def _one_line_source_error(excinfo: pytest.ExceptionInfo[BaseException]) -> str:
    assert excinfo.type is SourceError
    message = str(excinfo.value)
    assert "\n" not in message
    return message


# --------------------------------------------------------------------------- files


def test_file_is_loaded_as_read_bom_kept() -> None:
    path = data_file("wonderland.txt")
    docs = load_documents(str(path))
    assert list(docs.columns) == ["doc_id", "source", "text", "n_chars"]
    assert len(docs) == 1
    row = docs.iloc[0]
    raw = path.read_bytes()
    assert row["text"].startswith("\ufeffALICE'S ADVENTURES")
    assert row["text"].encode("utf-8") == raw  # nothing changed, so seed cleaning is exact
    assert row["n_chars"] == len(row["text"]) == 144_429
    assert row["doc_id"] == row["source"] == str(path)


def test_path_object_and_crlf_kept(tmp_path: Path) -> None:
    f = tmp_path / "crlf.txt"
    f.write_bytes(b"a\r\nb\r\n")
    assert load_documents(f).iloc[0]["text"] == "a\r\nb\r\n"


def test_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.txt"
    with pytest.raises(SourceError) as excinfo:
        load_documents(str(missing))
    assert _one_line_source_error(excinfo) == f"{missing}: no such file or directory"


def test_empty_file(tmp_path: Path) -> None:
    f = tmp_path / "empty.txt"
    f.write_bytes(b"")
    with pytest.raises(SourceError) as excinfo:
        load_documents(str(f))
    assert _one_line_source_error(excinfo) == f"{f} is empty"


def test_whitespace_only_file(tmp_path: Path) -> None:
    f = tmp_path / "blank.txt"
    f.write_bytes(b" \n\t\n")
    with pytest.raises(SourceError, match="contains only whitespace") as excinfo:
        load_documents(str(f))
    assert str(f) in _one_line_source_error(excinfo)


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (b"PK\x03\x04\x00\x00some zip", "NUL bytes"),
        (bytes(range(1, 256)) * 8, "are not text"),  # no NUL, but mostly non-text
    ],
)
def test_binary_file(tmp_path: Path, payload: bytes, why: str) -> None:
    f = tmp_path / "data.bin"
    f.write_bytes(payload)
    with pytest.raises(SourceError) as excinfo:
        load_documents(str(f))
    message = _one_line_source_error(excinfo)
    assert message.startswith(f"{f} looks binary (")
    assert why in message


def test_latin1_is_not_binary_but_not_utf8_strict(tmp_path: Path) -> None:
    f = tmp_path / "latin1.txt"
    f.write_bytes("caf\u00e9 au lait\n".encode("latin-1"))  # é = 0xE9 at byte 3
    with pytest.raises(SourceError) as excinfo:
        load_documents(str(f))
    assert _one_line_source_error(excinfo) == (
        f"{f}: not valid UTF-8 at byte 3; pass --errors ignore to drop undecodable bytes,"
        " as the tutorial does"
    )


def test_errors_ignore_drops_undecodable_bytes(tmp_path: Path) -> None:
    f = tmp_path / "latin1.txt"
    f.write_bytes(b"caf\xe9 ok \xc3\xa9\n")
    docs = load_documents(str(f), errors="ignore")
    assert docs.iloc[0]["text"] == "caf ok \u00e9\n"  # valid UTF-8 (é) is kept
    assert docs.iloc[0]["n_chars"] == 9


def test_bad_errors_value_is_a_config_error(tmp_path: Path) -> None:
    f = tmp_path / "a.txt"
    f.write_text("hello")
    with pytest.raises(ConfigError, match=r"^errors: must be 'strict' or 'ignore'"):
        load_documents(str(f), errors="replace")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- directories


def _tree(root: Path) -> None:
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / ".git").mkdir()
    (root / "b.txt").write_text("bee\n")
    (root / "a.md").write_text("ay\n")
    (root / "sub" / "c.txt").write_text("sea\n")
    (root / "sub" / "deeper" / "d.txt").write_text("dee\n")
    (root / ".hidden.txt").write_text("hidden\n")
    (root / ".git" / "config").write_text("[core]\n")
    (root / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    (root / "empty.txt").write_bytes(b"")


def test_directory_recursive_sorted_skips_hidden_binary_empty(tmp_path: Path) -> None:
    _tree(tmp_path)
    docs = load_documents(str(tmp_path))
    rel = [Path(d).relative_to(tmp_path).as_posix() for d in docs["doc_id"]]
    assert rel == ["a.md", "b.txt", "sub/c.txt", "sub/deeper/d.txt"]
    assert set(docs["source"]) == {str(tmp_path)}
    assert docs["text"].tolist() == ["ay\n", "bee\n", "sea\n", "dee\n"]


def test_directory_without_text_files(tmp_path: Path) -> None:
    (tmp_path / ".notes.txt").write_text("hidden text does not count")
    (tmp_path / "blob.bin").write_bytes(b"\x00\x01\x02")
    with pytest.raises(SourceError) as excinfo:
        load_documents(str(tmp_path))
    message = _one_line_source_error(excinfo)
    assert message.startswith(f"directory {tmp_path} contains no text files")


def test_directory_member_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    (tmp_path / "good.txt").write_text("fine")
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"abcd\xff")
    with pytest.raises(SourceError, match=rf"^{bad}: not valid UTF-8 at byte 4;"):
        load_documents(str(tmp_path))


def test_glob(tmp_path: Path) -> None:
    _tree(tmp_path)
    docs = load_documents(str(tmp_path / "**" / "*.txt"))
    rel = sorted(Path(d).relative_to(tmp_path).as_posix() for d in docs["doc_id"])
    assert rel == ["b.txt", "sub/c.txt", "sub/deeper/d.txt"]  # empty.txt, .hidden skipped
    assert set(docs["source"]) == {str(tmp_path / "**" / "*.txt")}


def test_glob_matching_nothing(tmp_path: Path) -> None:
    pattern = str(tmp_path / "*.txt")
    with pytest.raises(SourceError) as excinfo:
        load_documents(pattern)
    assert _one_line_source_error(excinfo) == f"glob {pattern!r} matched no files"


def test_shared_data_directory() -> None:
    data_file("wonderland.txt")
    docs = load_documents(str(data_file("wonderland.txt").parent))
    names = [Path(d).name for d in docs["doc_id"]]
    assert "wonderland.txt" in names and names == sorted(names)


# --------------------------------------------------------------------------- schemes


@pytest.mark.parametrize(
    ("source", "scheme"), [("ftp://x", "ftp"), ("s3://bucket/key", "s3"), ("foo:bar", "foo")]
)
def test_unknown_scheme(source: str, scheme: str) -> None:
    with pytest.raises(SourceError) as excinfo:
        load_documents(source)
    assert _one_line_source_error(excinfo) == (
        f"unknown source scheme {scheme!r} in {source!r}; known: {KNOWN_SCHEMES}"
    )
    assert KNOWN_SCHEMES == (
        "file path, directory, glob, http(s)://, gutenberg:<id>, synthetic:<name>"
    )


def test_existing_path_with_colon_is_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("foo:bar").write_text("a file, not a scheme")
    assert load_documents("foo:bar").iloc[0]["text"] == "a file, not a scheme"


def test_synthetic_source_is_canonical() -> None:
    docs = load_documents("synthetic:markov?seed=3&length=500&order=1&alphabet=4")
    row = docs.iloc[0]
    canonical = "synthetic:markov?alphabet=4&concentration=0.5&length=500&order=1&seed=3"
    assert row["source"] == row["doc_id"] == canonical
    assert row["n_chars"] == 500 and set(row["text"]) <= set("abcd")
    again = load_documents(canonical).iloc[0]
    assert again["text"] == row["text"]


def test_synthetic_default() -> None:
    row = load_documents("synthetic:markov").iloc[0]
    assert row["n_chars"] == 60_000
    assert set(row["text"]) == set("abcdef")


def test_synthetic_unknown_name_lists_known() -> None:
    with pytest.raises(ConfigError, match=r"unknown synthetic source 'nope'; known: .*markov"):
        load_documents("synthetic:nope")


def test_synthetic_bad_parameter_is_named() -> None:
    with pytest.raises(ConfigError, match=r"synthetic:markov: invalid parameter order='x'"):
        load_documents("synthetic:markov?order=x")
    with pytest.raises(ConfigError, match=r"parameter 'order' given twice"):
        load_documents("synthetic:markov?order=1&order=2")
    with pytest.raises(ConfigError, match=r"unknown parameter 'colour'"):
        load_documents("synthetic:markov?colour=red")


def test_text_sha256() -> None:
    assert text_sha256("abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )
    assert text_sha256("\u00e9") == hashlib.sha256(b"\xc3\xa9").hexdigest()


def test_raw_bytes_are_the_file_bytes() -> None:
    path = data_file("wonderland.txt")
    (raw,) = load_raw_bytes(str(path))
    assert raw.data == path.read_bytes()


# --------------------------------------------------------------------------- schema


def test_documents_schema_errors_are_one_line() -> None:
    good = make_documents([("a", "s", "hello"), ("b", "s", " x ")])
    assert good["n_chars"].tolist() == [5, 3]
    cases = {
        "duplicate": (good.assign(doc_id=["a", "a"]), "column 'doc_id' failed field_uniqueness"),
        "blank": (good.assign(text=["hello", "   "], n_chars=[5, 3]), "column 'text' failed"),
        "stale n_chars": (good.assign(n_chars=[5, 4]), "check n_chars_is_len_text failed"),
        "extra column": (good.assign(extra=1), "unexpected column 'extra'"),
    }
    for label, (df, expected) in cases.items():
        with pytest.raises(DataError) as excinfo:
            validate_documents(df)
        message = str(excinfo.value)
        assert message.startswith("invalid Documents table: "), label
        assert expected in message, (label, message)
        assert "\n" not in message
    with pytest.raises(DataError, match="missing column 'n_chars'"):
        validate_documents(pd.DataFrame({"doc_id": ["a"], "source": ["s"], "text": ["t"]}))


# --------------------------------------------------------------------------- downloads


def test_url_downloaded_once_with_sidecar(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with local_http_server({"/book.txt": Route(BOOK)}) as server:
        url = server.url("/book.txt")
        first = load_documents(url, cache_dir=cache)
        second = load_documents(url, cache_dir=cache)
        assert server.hits["/book.txt"] == 1
    assert first.equals(second)
    assert first.iloc[0]["text"] == BOOK.decode()
    assert first.iloc[0]["source"] == first.iloc[0]["doc_id"] == url
    data_path, meta_path = cache_paths(url, cache)
    assert data_path.name == hashlib.sha256(url.encode()).hexdigest() + ".data"
    assert data_path.read_bytes() == BOOK
    meta = json.loads(meta_path.read_text())
    assert meta["url"] == url
    assert meta["sha256"] == hashlib.sha256(BOOK).hexdigest()
    assert meta["size"] == len(BOOK)
    assert meta["downloaded_at"].startswith("20")
    assert not [p for p in cache.iterdir() if p.name.startswith(".tmp-")]


def test_url_cache_dir_defaults_to_env(tmp_path: Path) -> None:
    with local_http_server({"/b.txt": Route(BOOK)}) as server:
        load_documents(server.url("/b.txt"))
        load_documents(server.url("/b.txt"))
        assert server.hits["/b.txt"] == 1
        data_path, _ = cache_paths(server.url("/b.txt"), Path(os.environ["SEQLAB_CACHE_DIR"]))
    assert data_path.read_bytes() == BOOK


def test_corrupted_cache_is_downloaded_again(tmp_path: Path) -> None:
    with local_http_server({"/b.txt": Route(BOOK)}) as server:
        url = server.url("/b.txt")
        load_documents(url, cache_dir=tmp_path)
        data_path, _ = cache_paths(url, tmp_path)
        data_path.write_bytes(b"tampered")
        docs = load_documents(url, cache_dir=tmp_path)
        assert server.hits["/b.txt"] == 2
    assert docs.iloc[0]["text"] == BOOK.decode()


def test_http_error_names_url_and_status(tmp_path: Path) -> None:
    with local_http_server({}) as server:
        url = server.url("/missing.txt")
        with pytest.raises(SourceError) as excinfo:
            load_documents(url, cache_dir=tmp_path)
    assert _one_line_source_error(excinfo) == f"download failed: {url}: HTTP 404 Not Found"
    assert [p.name for p in tmp_path.iterdir()] == []  # nothing half-written is cached


def test_download_timeout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEQLAB_DOWNLOAD_TIMEOUT", "0.2")
    with local_http_server({"/slow.txt": Route(BOOK, delay_s=1.0)}) as server:
        url = server.url("/slow.txt")
        with pytest.raises(SourceError) as excinfo:
            load_documents(url, cache_dir=tmp_path)
    assert _one_line_source_error(excinfo) == f"download timed out after 0.2 s: {url}"


def test_bad_timeout_setting_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEQLAB_DOWNLOAD_TIMEOUT", "soon")
    with pytest.raises(ConfigError, match="SEQLAB_DOWNLOAD_TIMEOUT"):
        load_documents("http://127.0.0.1:9/x.txt", cache_dir=tmp_path)


def test_connection_refused(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nobody listens
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/x.txt"
    with pytest.raises(SourceError) as excinfo:
        load_documents(url, cache_dir=tmp_path)
    assert _one_line_source_error(excinfo).startswith(f"download failed: {url}: ")


def test_downloaded_binary_and_empty_are_named_by_url(tmp_path: Path) -> None:
    routes = {"/e.txt": Route(b""), "/z.bin": Route(b"\x00\x01binary")}
    with local_http_server(routes) as server:
        with pytest.raises(SourceError, match=rf"^{server.url('/e.txt')} is empty$"):
            load_documents(server.url("/e.txt"), cache_dir=tmp_path)
        with pytest.raises(SourceError, match=rf"^{server.url('/z.bin')} looks binary"):
            load_documents(server.url("/z.bin"), cache_dir=tmp_path)


def test_gutenberg_goes_through_the_download_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with local_http_server({"/11/pg11.txt": Route(BOOK)}) as server:
        monkeypatch.setenv("SEQLAB_GUTENBERG_MIRROR", server.url("/"))
        docs = load_documents("gutenberg:11", cache_dir=tmp_path)
        again = load_documents("gutenberg:011", cache_dir=tmp_path)
        assert server.hits["/11/pg11.txt"] == 1
    assert docs.iloc[0]["source"] == docs.iloc[0]["doc_id"] == "gutenberg:11"
    assert again.iloc[0]["source"] == "gutenberg:11"
    assert docs.iloc[0]["text"] == BOOK.decode()
    assert cache_paths(server.url("/11/pg11.txt"), tmp_path)[0].is_file()


def test_gutenberg_missing_book_names_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with local_http_server({}) as server:
        monkeypatch.setenv("SEQLAB_GUTENBERG_MIRROR", server.base_url)
        with pytest.raises(SourceError) as excinfo:
            load_documents("gutenberg:99999", cache_dir=tmp_path)
    expected = f"download failed: {server.url('/99999/pg99999.txt')}: HTTP 404"
    assert _one_line_source_error(excinfo).startswith(expected)


@pytest.mark.parametrize("source", ["gutenberg:abc", "gutenberg:", "gutenberg:1.5", "gutenberg:-3"])
def test_gutenberg_invalid_id(source: str, tmp_path: Path) -> None:
    with pytest.raises(SourceError) as excinfo:
        load_documents(source, cache_dir=tmp_path)
    message = _one_line_source_error(excinfo)
    assert message.startswith("invalid Gutenberg id ") and repr(source) in message
