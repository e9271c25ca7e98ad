"""Ingest: turn a source string into a validated Documents table.

A source is one string so that configs, the CLI and MLflow params can all name the data
the same way: a file path, a directory (every text file in it, recursively), a glob, an
http(s) URL or ``gutenberg:<id>`` (downloaded once into a checksummed cache), or
``synthetic:<name>?k=v`` (a generator of known entropy). Every way a source can be
unusable is one :class:`~pipeline_core.errors.SourceError` line naming the file or URL.

Text is decoded as UTF-8 and otherwise kept exactly as read (a BOM, CRLF line ends):
cleaning is :mod:`pipeline_core.cleaning`'s job, and because valid UTF-8 round-trips,
the tutorial's byte-level cleaning can be reproduced from the decoded text.
:func:`load_raw_bytes` gives the undecoded bytes for code that needs them.
"""

from __future__ import annotations

import copy
import functools
import glob
import hashlib
import http.client
import json
import os
import re
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline_core.config import DecodeErrors
from pipeline_core.errors import ConfigError, SourceError
from pipeline_core.schemas import make_documents
from pipeline_core.synthetic import check_synthetic, make_synthetic

KNOWN_SCHEMES = "file path, directory, glob, http(s)://, gutenberg:<id>, synthetic:<name>"
DEFAULT_GUTENBERG_MIRROR = "https://www.gutenberg.org/cache/epub"
BINARY_SAMPLE_BYTES = 8192
MAX_NON_TEXT_FRACTION = 0.3
_CHUNK = 1 << 16
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]+):")  # 2+ chars: "C:\x" is a path
_GLOB_CHARS = re.compile(r"[*?\[]")
_ALLOWED_CONTROLS = set("\t\n\r\f\v\b\x1b")


@dataclass(frozen=True)
class RawDocument:
    """One document's undecoded bytes, before any text-level processing."""

    doc_id: str
    source: str
    data: bytes


# --------------------------------------------------------------------------- helpers


def text_sha256(text: str) -> str:
    """Hex sha256 of the UTF-8 encoding: the data hash runs and caches are keyed on."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def binary_reason(data: bytes) -> str | None:
    """Why ``data`` looks binary (NUL bytes, mostly non-text), or None if it looks like text.

    Only a prefix is inspected: enough to tell text from an image or an archive, cheap on
    large corpora. Latin-1 text is not "binary": it fails later as "not valid UTF-8".
    """
    sample = data[:BINARY_SAMPLE_BYTES]
    if b"\x00" in sample:
        return "contains NUL bytes"
    decoded = sample.decode("utf-8", errors="replace")
    bad = sum(1 for c in decoded if c == "\ufffd" or (c < " " and c not in _ALLOWED_CONTROLS))
    if decoded and bad / len(decoded) > MAX_NON_TEXT_FRACTION:
        return f"{bad / len(decoded):.0%} of its first bytes are not text"
    return None


def check_text_bytes(data: bytes, name: str) -> bytes:
    """``data`` unchanged if it can be a text document, else a SourceError naming ``name``."""
    if not data:
        raise SourceError(f"{name} is empty")
    reason = binary_reason(data)
    if reason is not None:
        raise SourceError(f"{name} looks binary ({reason})")
    if not data.strip():
        raise SourceError(f"{name} contains only whitespace")
    return data


def decode_text(data: bytes, name: str, errors: DecodeErrors = "strict") -> str:
    """UTF-8 text of ``data``; strict names the first bad byte, ignore drops bad bytes."""
    if errors == "ignore":
        text = data.decode("utf-8", errors="ignore")
        if not text.strip():
            raise SourceError(f"{name}: no text left after dropping undecodable bytes")
        return text
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise SourceError(
            f"{name}: not valid UTF-8 at byte {err.start}; pass --errors ignore to drop"
            " undecodable bytes, as the tutorial does"
        ) from None


# --------------------------------------------------------------------------- files


def _read_bytes(path: Path, name: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise SourceError(f"cannot read {name}: {err.strerror or err}") from None


def _is_text(data: bytes) -> bool:
    """Directory and glob members: what is empty, blank or binary is skipped, not fatal."""
    return bool(data.strip()) and binary_reason(data) is None


def _hidden(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts)


def _files_under(root: Path) -> list[Path]:
    """Every non-hidden file below ``root``, sorted by relative path (stable doc order)."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found.extend(Path(dirpath) / f for f in filenames if not f.startswith("."))
    return sorted((p for p in found if p.is_file()), key=lambda p: p.relative_to(root).as_posix())


def _text_files(paths: list[Path], source: str) -> list[RawDocument]:
    """The members of ``paths`` that look like text, each read once."""
    raws = (RawDocument(str(p), source, _read_bytes(p, str(p))) for p in paths)
    return [r for r in raws if _is_text(r.data)]


def _from_file(path: Path, source: str) -> list[RawDocument]:
    data = check_text_bytes(_read_bytes(path, source), source)
    return [RawDocument(source, source, data)]


def _from_directory(root: Path, source: str) -> list[RawDocument]:
    files = _files_under(root)
    texts = _text_files(files, source)
    if not texts:
        skipped = f" ({len(files)} binary or empty files skipped)" if files else ""
        raise SourceError(f"directory {source} contains no text files{skipped}")
    return texts


def _from_glob(pattern: str) -> list[RawDocument]:
    matches = sorted(Path(p) for p in glob.glob(os.path.expanduser(pattern), recursive=True))
    files = [p for p in matches if p.is_file()]
    if not files:
        raise SourceError(f"glob {pattern!r} matched no files")
    texts = _text_files(files, pattern)
    if not texts:
        raise SourceError(
            f"glob {pattern!r} matched no text files ({len(files)} binary or empty files)"
        )
    return texts


# --------------------------------------------------------------------------- downloads


def default_cache_dir() -> Path:
    """``$SEQLAB_CACHE_DIR`` or ``~/.cache/seqlab/downloads``."""
    env = os.environ.get("SEQLAB_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "seqlab" / "downloads"


def download_timeout_s() -> float:
    """Seconds a download may wait on each connect or read: ``$SEQLAB_DOWNLOAD_TIMEOUT``
    if set, else ``$SEQLAB_NETWORK_TIMEOUT`` (default 30), the bound on every network
    wait; a stalled server must not hang a run."""
    raw = os.environ.get("SEQLAB_DOWNLOAD_TIMEOUT")
    if raw is None:
        from pipeline_core.network import network_timeout_s

        return network_timeout_s()
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ConfigError(f"SEQLAB_DOWNLOAD_TIMEOUT must be a positive number (got {raw!r})")
    return value


def cache_paths(url: str, cache_dir: Path | None = None) -> tuple[Path, Path]:
    """Where ``url``'s content and its sidecar JSON live: named by the URL's sha256."""
    root = cache_dir if cache_dir is not None else default_cache_dir()
    key = hashlib.sha256(url.encode("utf-8")).hexdigest()
    return root / f"{key}.data", root / f"{key}.json"


def _cache_hit(url: str, data_path: Path, meta_path: Path) -> bool:
    """A cached copy counts only if its sidecar names this URL and its checksum matches."""
    if not (data_path.is_file() and meta_path.is_file()):
        return False
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (
        isinstance(meta, dict)
        and meta.get("url") == url
        and meta.get("sha256") == _file_sha256(data_path)
    )


def _write_json_atomically(path: Path, payload: dict[str, object]) -> None:
    """Replace ``path`` in one step so a crash never leaves a half-written sidecar."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(payload, fh, indent=2)
    os.replace(tmp, path)


def _fetch(url: str, dest_dir: Path) -> tuple[Path, str, int]:
    """Stream ``url`` into a temporary file in ``dest_dir``: (path, sha256, size)."""
    timeout = download_timeout_s()
    request = urllib.request.Request(url, headers={"User-Agent": "seqlab"})
    fd, tmp_name = tempfile.mkstemp(dir=dest_dir, prefix=".tmp-")
    tmp = Path(tmp_name)
    digest, size = hashlib.sha256(), 0
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=timeout) as resp:
            for chunk in iter(lambda: resp.read(_CHUNK), b""):
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
    except urllib.error.HTTPError as err:
        tmp.unlink(missing_ok=True)
        err.close()
        raise SourceError(f"download failed: {url}: HTTP {err.code} {err.reason}") from None
    except (TimeoutError, urllib.error.URLError, OSError, http.client.HTTPException) as err:
        tmp.unlink(missing_ok=True)
        reason = getattr(err, "reason", err)
        if isinstance(err, TimeoutError) or isinstance(reason, TimeoutError):
            raise SourceError(f"download timed out after {timeout:g} s: {url}") from None
        raise SourceError(f"download failed: {url}: {reason}") from None
    except BaseException:  # Ctrl-C mid-download: leave no partial file behind
        tmp.unlink(missing_ok=True)
        raise
    return tmp, digest.hexdigest(), size


def cached_download(url: str, cache_dir: Path | None = None) -> Path:
    """The local copy of ``url``, downloading it only if no valid cached copy exists.

    The sidecar JSON records url, sha256 of the content, size and download time, so a
    run can log exactly which bytes it trained on and a corrupted copy is fetched again.
    """
    data_path, meta_path = cache_paths(url, cache_dir)
    if _cache_hit(url, data_path, meta_path):
        return data_path
    try:
        data_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SourceError(f"cannot create download cache {data_path.parent}: {err}") from None
    tmp, sha256, size = _fetch(url, data_path.parent)
    os.replace(tmp, data_path)  # atomic: readers see the old copy or the whole new one
    meta: dict[str, object] = {
        "url": url,
        "sha256": sha256,
        "size": size,
        "downloaded_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    _write_json_atomically(meta_path, meta)
    return data_path


def gutenberg_url(book_id: str) -> str:
    """``gutenberg:<id>``'s plain-text URL; ``$SEQLAB_GUTENBERG_MIRROR`` replaces the host."""
    mirror = os.environ.get("SEQLAB_GUTENBERG_MIRROR", DEFAULT_GUTENBERG_MIRROR).rstrip("/")
    return f"{mirror}/{book_id}/pg{book_id}.txt"


def _from_url(url: str, doc_id: str, cache_dir: Path | None) -> list[RawDocument]:
    data = _read_bytes(cached_download(url, cache_dir), url)
    return [RawDocument(doc_id, doc_id, check_text_bytes(data, url))]


def _gutenberg_id(source: str) -> int:
    book_id = source.partition(":")[2].strip()
    if not book_id.isascii() or not book_id.isdigit():
        raise SourceError(
            f"invalid Gutenberg id {book_id!r} in {source!r}; expected digits, e.g. gutenberg:11"
        )
    return int(book_id)


def _from_gutenberg(source: str, cache_dir: Path | None) -> list[RawDocument]:
    book_id = _gutenberg_id(source)
    return _from_url(gutenberg_url(str(book_id)), f"gutenberg:{book_id}", cache_dir)


# --------------------------------------------------------------------------- synthetic


def _parse_query(name: str, query: str) -> dict[str, str]:
    try:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise ConfigError(f"synthetic:{name}: bad parameters {query!r}; use k=v&k=v") from None
    params: dict[str, str] = {}
    for key, value in pairs:
        if key in params:
            raise ConfigError(f"synthetic:{name}: parameter {key!r} given twice")
        params[key] = value
    return params


def synthetic_metadata(source: str) -> dict[str, Any] | None:
    """For ``synthetic:<name>?...``: the generator's metadata (e.g. ``entropy_rate_bits``,
    the best bpc any model can reach); ``None`` for other sources."""
    if not _has_prefix(source, "synthetic:"):
        return None
    return copy.deepcopy(_generated_metadata(source))


@functools.lru_cache(maxsize=16)
def _generated_metadata(source: str) -> dict[str, Any]:
    """Generating the text is the only way to its metadata, and a comparison asks
    several times (a large adding set takes seconds): kept per source string."""
    name, _, query = source.partition(":")[2].partition("?")
    return make_synthetic(name.strip(), _parse_query(name, query))[1]


def _from_synthetic(source: str) -> list[RawDocument]:
    name, _, query = source.partition(":")[2].partition("?")
    text, meta = make_synthetic(name.strip(), _parse_query(name, query))
    canonical = str(meta["source"])
    return [RawDocument(canonical, canonical, text.encode("utf-8"))]


# --------------------------------------------------------------------------- dispatch


def _has_prefix(source: str, prefix: str) -> bool:
    return source[: len(prefix)].lower() == prefix


def load_raw_bytes(source: str | Path, cache_dir: Path | None = None) -> list[RawDocument]:
    """The undecoded documents of ``source`` (empty, blank and binary inputs rejected)."""
    src = str(source).strip()
    if not src:
        raise SourceError("empty source: give a file, directory, glob, URL or scheme")
    if _has_prefix(src, "http://") or _has_prefix(src, "https://"):
        return _from_url(src, src, cache_dir)
    if _has_prefix(src, "gutenberg:"):
        return _from_gutenberg(src, cache_dir)
    if _has_prefix(src, "synthetic:"):
        return _from_synthetic(src)
    path = Path(src).expanduser()
    if path.is_dir():
        return _from_directory(path, src)
    if path.exists():
        if not path.is_file():
            raise SourceError(f"{src} is not a regular file")
        return _from_file(path, src)
    if _GLOB_CHARS.search(src):
        return _from_glob(src)
    scheme = _SCHEME.match(src)
    if scheme:
        raise SourceError(
            f"unknown source scheme {scheme.group(1)!r} in {src!r}; known: {KNOWN_SCHEMES}"
        )
    raise SourceError(f"{src}: no such file or directory")


def check_source(source: str | Path, errors: DecodeErrors = "strict") -> None:
    """Refuse a source that cannot be ingested, before any pipeline starts, with the
    error ingesting it would give: a local file, directory or glob is read and decoded
    (ingest reads it again); ``synthetic:`` is checked without being built (unknown
    name or parameter, bad values, resource limits); remote sources only for their form
    (fetching them is the ingest's job)."""
    if errors not in ("strict", "ignore"):
        raise ConfigError(f"errors: must be 'strict' or 'ignore' (got {errors!r})")
    src = str(source).strip()
    if _has_prefix(src, "http://") or _has_prefix(src, "https://"):
        if not urllib.parse.urlsplit(src).hostname:
            raise SourceError(f"{src}: the URL names no host")
        return
    if _has_prefix(src, "gutenberg:"):
        _gutenberg_id(src)
        return
    if _has_prefix(src, "synthetic:"):
        name, _, query = src.partition(":")[2].partition("?")
        check_synthetic(name.strip(), _parse_query(name, query))
        return
    for raw in load_raw_bytes(src):
        decode_text(raw.data, raw.doc_id, errors)


def load_documents(
    source: str | Path,
    errors: DecodeErrors = "strict",
    cache_dir: Path | None = None,
) -> pd.DataFrame:
    """A validated Documents table (doc_id, source, text, n_chars) for ``source``."""
    if errors not in ("strict", "ignore"):
        raise ConfigError(f"errors: must be 'strict' or 'ignore' (got {errors!r})")
    raws = load_raw_bytes(source, cache_dir)
    return make_documents((r.doc_id, r.source, decode_text(r.data, r.doc_id, errors)) for r in raws)
