"""Network targets fail within ``$SEQLAB_NETWORK_TIMEOUT`` with one line: an MLflow
tracking server, a Prefect API and a download URL that are not there (a closed port),
or that accept a connection and never answer (a black hole). Everything binds 127.0.0.1
and is stopped by the test that starts it."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from pipeline_core.errors import ConfigError, SourceError
from pipeline_core.network import (
    MLFLOW_PROBE_PATH,
    NetworkError,
    bound_mlflow_http,
    network_timeout_s,
    probe_prefect_api,
    probe_tracking_server,
)
from pipeline_core.sources import download_timeout_s, load_documents
from tests.conftest import REPO, CliResult, assert_one_line_error
from tests.conftest_data import Route, local_http_server


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.delenv("SEQLAB_DOWNLOAD_TIMEOUT", raising=False)
    monkeypatch.delenv("SEQLAB_NETWORK_TIMEOUT", raising=False)


def closed_port() -> int:
    """A port that was free a moment ago: nobody listens there."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def black_hole() -> Iterator[int]:
    """A port whose connections are accepted (by the kernel's backlog) and never
    answered."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield int(sock.getsockname()[1])


# --------------------------------------------------------------------------- the setting


def test_timeout_defaults_to_30_s_and_reads_the_env(monkeypatch: pytest.MonkeyPatch) -> None:
    assert network_timeout_s() == 30.0
    monkeypatch.setenv("SEQLAB_NETWORK_TIMEOUT", "2.5")
    assert network_timeout_s() == 2.5
    assert download_timeout_s() == 2.5  # downloads follow it unless told otherwise
    monkeypatch.setenv("SEQLAB_DOWNLOAD_TIMEOUT", "7")
    assert download_timeout_s() == 7.0


@pytest.mark.parametrize("raw", ["soon", "0", "-3", "nan", "inf"])
def test_a_bad_timeout_is_named(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("SEQLAB_NETWORK_TIMEOUT", raw)
    with pytest.raises(ConfigError, match="SEQLAB_NETWORK_TIMEOUT"):
        network_timeout_s()


def test_mlflow_retries_are_bounded_and_the_users_env_wins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    names = (
        "MLFLOW_HTTP_REQUEST_TIMEOUT",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
        "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER",
    )
    for name in names:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "5")
    bound_mlflow_http(30)
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "10"  # per attempt, of 3
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "5"
    assert os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] == "1"
    from mlflow import environment_variables as mlflow_env

    for name in names:  # the names MLflow itself reads
        assert getattr(mlflow_env, name).get() is not None


MLFLOW_CALL = """
import sys, time
from pipeline_core.network import bound_mlflow_http
bound_mlflow_http()
from mlflow import MlflowClient
started = time.monotonic()
try:
    MlflowClient(sys.argv[1]).search_experiments()
except Exception:
    print(time.monotonic() - started)
"""


@pytest.mark.slow
def test_mlflow_calls_after_the_probe_are_bounded_too() -> None:
    """A server that stops answering mid-run: each MLflow call gives up in about the
    timeout (3 attempts of timeout/3) plus 2 s of back-off, not minutes."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_HTTP_")}
    env["SEQLAB_NETWORK_TIMEOUT"] = "3"
    with black_hole() as port:
        proc = subprocess.run(
            [sys.executable, "-c", MLFLOW_CALL, f"http://127.0.0.1:{port}"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 2.5 < float(proc.stdout) < 10, proc.stdout


# --------------------------------------------------------------------------- probes


def test_tracking_server_not_there_is_one_line() -> None:
    uri = f"http://127.0.0.1:{closed_port()}"
    started = time.monotonic()
    with pytest.raises(NetworkError) as excinfo:
        probe_tracking_server(uri, timeout=5)
    assert time.monotonic() - started < 5
    message = str(excinfo.value)
    assert message.startswith(f"MLflow tracking server at {uri} is not reachable: ")
    assert "connection refused" in message and "--tracking-uri" in message
    assert "\n" not in message


def test_tracking_server_that_never_answers_times_out() -> None:
    with black_hole() as port:
        uri = f"http://127.0.0.1:{port}"
        started = time.monotonic()
        with pytest.raises(NetworkError) as excinfo:
            probe_tracking_server(uri, timeout=0.5)
        took = time.monotonic() - started
    assert 0.4 < took < 3, took
    assert str(excinfo.value).startswith(
        f"MLflow tracking server at {uri} did not answer within 0.5 s ($SEQLAB_NETWORK_TIMEOUT"
    )


def test_tracking_server_probe_accepts_mlflow_and_refuses_other_servers() -> None:
    with local_http_server({MLFLOW_PROBE_PATH: Route(b'{"experiments": []}')}) as server:
        probe_tracking_server(server.base_url, timeout=5)
        probe_tracking_server(server.base_url + "/", timeout=5)
    with local_http_server({MLFLOW_PROBE_PATH: Route(b"denied", 403)}) as server:
        probe_tracking_server(server.base_url, timeout=5)  # there: MLflow reports auth
    with local_http_server({}) as server, pytest.raises(NetworkError, match="HTTP 404"):
        probe_tracking_server(server.base_url, timeout=5)  # a web server, not MLflow
    down = {MLFLOW_PROBE_PATH: Route(b"down", 503)}
    with local_http_server(down) as server, pytest.raises(NetworkError, match="HTTP 503"):
        probe_tracking_server(server.base_url, timeout=5)


def test_local_tracking_uris_are_not_probed() -> None:
    probe_tracking_server("sqlite:///nowhere/at/all.db", timeout=0.01)
    probe_tracking_server("postgresql://u@127.0.0.1:1/db", timeout=0.01)


def test_prefect_api_probe() -> None:
    with local_http_server({"/api/health": Route(b"true")}) as server:
        probe_prefect_api(server.url("/api"), timeout=5)
    url = f"http://127.0.0.1:{closed_port()}/api"
    with pytest.raises(NetworkError) as excinfo:
        probe_prefect_api(url, timeout=5)
    message = str(excinfo.value)
    assert message.startswith(f"Prefect API (PREFECT_API_URL) at {url} is not reachable")
    assert "unset PREFECT_API_URL" in message
    with black_hole() as port, pytest.raises(NetworkError, match=r"did not answer within 0\.5 s"):
        probe_prefect_api(f"http://127.0.0.1:{port}/api", timeout=0.5)


# --------------------------------------------------------------------------- downloads


def test_download_from_a_black_hole_times_out_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEQLAB_NETWORK_TIMEOUT", "0.5")
    with black_hole() as port:
        url = f"http://127.0.0.1:{port}/book.txt"
        started = time.monotonic()
        with pytest.raises(SourceError) as excinfo:
            load_documents(url, cache_dir=tmp_path)
        took = time.monotonic() - started
    assert took < 3, took
    assert str(excinfo.value) == f"download timed out after 0.5 s: {url}"
    assert list(tmp_path.iterdir()) == []  # nothing half-written is cached


def test_download_from_a_closed_port_is_one_line(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}/book.txt"
    with pytest.raises(SourceError) as excinfo:
        load_documents(url, cache_dir=tmp_path)
    message = str(excinfo.value)
    assert message.startswith(f"download failed: {url}: ") and "refused" in message
    assert "\n" not in message


# --------------------------------------------------------------------------- the CLI


def _cli_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "SEQLAB_NETWORK_TIMEOUT": "2", **extra}
    return env


def _run(*args: str, env: dict[str, str], cwd: Path) -> tuple[int, str, str, float]:
    import subprocess
    import sys

    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "seqlab", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started


def _store_snapshot(uri: str) -> list[tuple[str, str, str]]:
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(ids) if ids else []
    return sorted((r.info.run_id, r.info.status, str(sorted(r.data.metrics.items()))) for r in runs)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A store that already holds a run: the failures below must leave it as it was."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlruns.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("kept")
    run = client.create_run(exp)
    client.log_metric(run.info.run_id, "test_bpc", 1.5)
    client.set_terminated(run.info.run_id)
    return uri


@pytest.mark.slow
def test_cli_tracking_server_not_there(tmp_path: Path, store: str) -> None:
    before = _store_snapshot(store)
    for uri in (f"http://127.0.0.1:{closed_port()}", None):
        with black_hole() as port:
            target = uri or f"http://127.0.0.1:{port}"
            code, out, err, took = _run(
                "run", "--data", "synthetic:markov", "--models", "ngram",
                "--tracking-uri", target, env=_cli_env(), cwd=tmp_path,
            )  # fmt: skip
        assert_one_line_error(CliResult(code, out, err), "MLflow tracking server", target)
        assert took < 30, took  # bounded: 2 s of probe, the rest is Python starting
    # --resume with the dead server: probed before the stored config is read
    code, out, err, _ = _run(
        "run", "--resume", "0" * 32, "--tracking-uri", target, env=_cli_env(), cwd=tmp_path
    )
    assert_one_line_error(CliResult(code, out, err), "MLflow tracking server")
    code, out, err, _ = _run("runs", "--tracking-uri", target, env=_cli_env(), cwd=tmp_path)
    assert_one_line_error(CliResult(code, out, err), "MLflow tracking server")
    assert _store_snapshot(store) == before
    assert not (tmp_path / "mlruns.db").exists()


@pytest.mark.slow
def test_cli_prefect_api_not_there(tmp_path: Path, store: str) -> None:
    before = _store_snapshot(store)
    url = f"http://127.0.0.1:{closed_port()}/api"
    code, out, err, took = _run(
        "run", "--data", "synthetic:markov", "--models", "ngram", "--tracking-uri", store,
        env=_cli_env(PREFECT_API_URL=url), cwd=tmp_path,
    )  # fmt: skip
    assert_one_line_error(CliResult(code, out, err), "Prefect API (PREFECT_API_URL)", url)
    assert took < 30, took
    assert _store_snapshot(store) == before


def test_cli_bad_network_timeout_is_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "SEQLAB_NETWORK_TIMEOUT": "soon"}
    code, out, err, _ = _run("run", "--models", "ngram", env=env, cwd=tmp_path)
    assert_one_line_error(CliResult(code, out, err), "SEQLAB_NETWORK_TIMEOUT")
