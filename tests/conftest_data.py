"""Test helpers for data sources: the shared corpora and a real local HTTP server.

Downloads are tested against a real ``http.server`` on 127.0.0.1 (no mocks of the HTTP
layer), which counts the requests it serves so a test can prove the cache was used.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

# The corpora live outside the repo (never copied in); SEQLAB_TEST_DATA overrides.
DATA_DIR = Path(
    os.environ.get("SEQLAB_TEST_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


def data_file(name: str) -> Path:
    """A shared corpus file; a missing corpus fails the test (never a silent skip)."""
    path = DATA_DIR / name
    if not path.is_file():
        pytest.fail(f"test corpus {path} not available (set SEQLAB_TEST_DATA)")
    return path


@dataclass
class Route:
    """What the server answers on one path."""

    body: bytes = b""
    status: int = 200
    delay_s: float = 0.0


@dataclass
class LocalServer:
    """A running server: its base URL, its routes (editable) and per-path request counts."""

    base_url: str
    routes: dict[str, Route]
    hits: Counter[str] = field(default_factory=Counter)

    def url(self, path: str) -> str:
        return self.base_url + path


@contextmanager
def local_http_server(routes: dict[str, Route] | None = None) -> Iterator[LocalServer]:
    """Serve ``routes`` on 127.0.0.1 (free port) in a thread; stopped on exit."""
    state = LocalServer(base_url="", routes=dict(routes or {}))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.hits[self.path] += 1
            route = state.routes.get(self.path, Route(b"not found", 404))
            if route.delay_s:
                time.sleep(route.delay_s)
            try:
                self.send_response(route.status)
                self.send_header("Content-Length", str(len(route.body)))
                self.end_headers()
                self.wfile.write(route.body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout tests)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    state.base_url = f"http://{host!s}:{port}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
