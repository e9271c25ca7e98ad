"""The Prefect API a ``seqlab run`` talks to: the user's, probed first, or a temporary
server of its own that lives and dies with it.

Without ``PREFECT_API_URL``, Prefect's ephemeral mode starts a server subprocess that a
``kill -9`` of its parent leaves orphaned. seqlab starts the same server itself
(uvicorn over ``prefect.server.api.server:create_app`` on 127.0.0.1 and a free port,
``PREFECT_HOME`` as the user has it), as a child that

- the kernel kills when seqlab dies, whatever ends it (``PR_SET_PDEATHSIG`` = SIGKILL on
  Linux); on a normal exit, an error, Ctrl-C or SIGTERM it is stopped in a ``finally``
  (and by ``atexit`` as a last resort);
- runs in its own session, so a Ctrl-C in the terminal reaches seqlab alone, which marks
  its runs KILLED and tells Prefect before the server stops;
- has its own SQLite database in a temporary folder, so several ``seqlab run`` at once
  never migrate or write one database together. The database starts as a copy of a
  migrated template kept in ``$PREFECT_HOME/seqlab`` (one per Prefect version; the first
  run makes it), which saves the migrations (healthy in ~4 s instead of ~10 s on an idle
  2-core machine). The flow runs it records go with it when the run ends: point
  ``PREFECT_API_URL`` at a server to keep them. A ``PREFECT_API_DATABASE_CONNECTION_URL``
  in the environment is used as given.

A configured ``PREFECT_API_URL`` (environment or Prefect profile) is probed instead
(``GET <url>/health``, bounded by ``$SEQLAB_NETWORK_TIMEOUT``): nothing there is one
line, before anything runs.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ctypes.util
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

from pipeline_core.network import probe_prefect_api

DEFAULT_STARTUP_TIMEOUT_S = 120.0
STOP_GRACE_S = 10.0
SERVER_DIR_PREFIX = "seqlab-prefect-"
PR_SET_PDEATHSIG = 1


def _linux_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:  # pragma: no cover - no libc to load
        return None
    prctl: Callable[..., int] = libc.prctl
    return prctl


def die_with_parent(sig: int = signal.SIGKILL) -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child receive ``sig`` (SIGKILL unless a child
    that cleans up on SIGTERM or SIGINT should get the chance) when this process (its
    creating thread: call from the main thread) dies; None where prctl is missing. If
    the parent died between fork and prctl, the child exits at once."""
    prctl = _linux_prctl()  # resolved before the fork: the child only calls it
    if prctl is None:
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return preexec


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def startup_timeout_s() -> float:
    """Prefect's own setting for its ephemeral server (seqlab defaults it to 120 s)."""
    raw = os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "")
    try:
        return float(raw) if float(raw) > 0 else DEFAULT_STARTUP_TIMEOUT_S
    except ValueError:
        return DEFAULT_STARTUP_TIMEOUT_S


def prefect_home() -> Path:
    return Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect").expanduser()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale_dirs(root: Path) -> None:
    """Remove the folders of temporary servers whose seqlab died without cleaning up."""
    with contextlib.suppress(OSError):
        for path in root.glob(f"{SERVER_DIR_PREFIX}*"):
            pid = path.name.removeprefix(SERVER_DIR_PREFIX).split("-", 1)[0]
            if pid.isdigit() and not _pid_alive(int(pid)):
                shutil.rmtree(path, ignore_errors=True)


def copy_database(src: Path, dst: Path) -> None:
    """A consistent copy of a SQLite database (its WAL included), written atomically."""
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    with (
        contextlib.closing(sqlite3.connect(src, timeout=30)) as source,
        contextlib.closing(sqlite3.connect(tmp)) as target,
    ):
        source.backup(target)
    os.replace(tmp, dst)


class TemporaryServer:
    """A Prefect server child of this process; a context manager (see the module doc)."""

    def __init__(self, startup_timeout: float | None = None, services: bool = False) -> None:
        self.startup_timeout = startup_timeout or startup_timeout_s()
        #: Prefect's background services (the scheduler among them): an ephemeral
        #: server runs none, so a schedule served against it never creates runs
        self.services = services
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.folder: Path | None = None
        self.database: Path | None = None
        self.template: Path | None = None
        self.startup_seconds = float("nan")

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
        env.update(
            {
                "PREFECT_HOME": str(prefect_home()),
                "PREFECT_UI_ENABLED": "0",
                "PREFECT__SERVER_FINAL": "1",
                "PREFECT_SERVER_ANALYTICS_ENABLED": env.get(
                    "PREFECT_SERVER_ANALYTICS_ENABLED", "false"
                ),
            }
        )
        if not self.services:
            env["PREFECT__SERVER_EPHEMERAL"] = "1"
        if self.database is not None:
            url = f"sqlite+aiosqlite:///{self.database}"
            env["PREFECT_API_DATABASE_CONNECTION_URL"] = url
        return env

    def _prepare_database(self) -> None:
        assert self.folder is not None
        if os.environ.get("PREFECT_API_DATABASE_CONNECTION_URL"):
            return  # the user's database, used as given
        from importlib.metadata import version

        self.database = self.folder / "prefect.db"
        self.template = prefect_home() / "seqlab" / f"server-{version('prefect')}.db"
        if self.template.is_file():
            try:
                copy_database(self.template, self.database)
            except (OSError, sqlite3.Error):
                self.database.unlink(missing_ok=True)  # a fresh one is migrated instead

    def _save_template(self) -> None:
        """After the first healthy start: keep the migrated database for later runs."""
        if self.template is None or self.database is None or self.template.is_file():
            return
        with contextlib.suppress(OSError, sqlite3.Error):
            self.template.parent.mkdir(parents=True, exist_ok=True)
            copy_database(self.database, self.template)

    def _spawn(self) -> subprocess.Popen[bytes]:
        assert self.folder is not None
        self.port = free_port()
        log = (self.folder / "server.log").open("ab")
        try:
            return subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "--factory",
                    "prefect.server.api.server:create_app",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--log-level",
                    "error",
                    "--lifespan",
                    "on",
                ],
                env=self._env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.folder,
                start_new_session=True,
                preexec_fn=die_with_parent(),
            )
        finally:
            log.close()

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as resp:
                return int(resp.status) == 200
        except OSError:
            return False

    def _log_tail(self) -> str:
        if self.folder is None:
            return ""
        try:
            text = (self.folder / "server.log").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return " | ".join(line.strip() for line in text.splitlines()[-5:] if line.strip())

    def start(self) -> str:
        """Start the server and wait until ``/api/health`` answers; its API URL."""
        root = Path(tempfile.gettempdir())
        sweep_stale_dirs(root)
        self.folder = Path(tempfile.mkdtemp(prefix=f"{SERVER_DIR_PREFIX}{os.getpid()}-"))
        atexit.register(self.stop)
        self._prepare_database()
        started = time.monotonic()
        deadline = started + self.startup_timeout
        attempts = 0
        self.process = self._spawn()
        while not self._healthy():
            if self.process.poll() is not None:  # e.g. the port was taken meanwhile
                attempts += 1
                if attempts >= 3:
                    break
                self.process = self._spawn()
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        else:
            self.startup_seconds = time.monotonic() - started
            self._save_template()
            return self.api_url
        code = self.process.poll()
        tail = self._log_tail()
        self.stop()
        state = f"exited with code {code}" if code is not None else "did not answer"
        raise RuntimeError(
            f"the temporary Prefect server {state} within {self.startup_timeout:g} s "
            f"(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS sets the limit): {tail}"
        )

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after a grace period) and remove its
        folder; safe to call more than once."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        folder, self.folder = self.folder, None
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)

    def __enter__(self) -> str:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


def configured_api_url() -> str | None:
    """``PREFECT_API_URL`` from the environment or the active Prefect profile."""
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    from prefect.settings import get_current_settings

    return get_current_settings().api.url or None


@contextlib.contextmanager
def prefect_api(services: bool = False) -> Iterator[str]:
    """The Prefect API for a run: the configured one once it answers its health check,
    else a :class:`TemporaryServer` for the duration of the block (exported as
    ``PREFECT_API_URL`` to Prefect's settings and to subprocesses); ``services`` gives
    it Prefect's scheduler (``seqlab schedule``)."""
    configured = configured_api_url()
    if configured:
        probe_prefect_api(configured)
        yield configured
        return
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with TemporaryServer(services=services) as url:
        os.environ["PREFECT_API_URL"] = url
        try:
            with temporary_settings(updates={PREFECT_API_URL: url}):
                try:
                    yield url
                finally:
                    drain_prefect_workers()
        finally:
            os.environ.pop("PREFECT_API_URL", None)


def drain_prefect_workers(timeout: float = 5.0) -> None:
    """Send Prefect's queued logs and events while the server is still there (else they
    fail at exit with "Error logging to API")."""
    with contextlib.suppress(Exception):
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=timeout)
    with contextlib.suppress(Exception):
        from prefect.events.worker import EventsWorker

        EventsWorker.drain_all(timeout=timeout)
