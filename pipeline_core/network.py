"""Network targets answer within a bounded time, or seqlab says so in one line.

One setting bounds every wait on the network: ``$SEQLAB_NETWORK_TIMEOUT`` (seconds,
default 30). Before a run starts, :func:`probe_tracking_server` and
:func:`probe_prefect_api` ask the MLflow tracking server and the Prefect API whether
they are there (one short GET each, the whole probe, DNS included, bounded by the
timeout), so a URL with nothing behind it is one ``error:`` line instead of minutes of
retries. :func:`bound_mlflow_http` bounds MLflow's own retries for the rest of the run;
downloads (:mod:`pipeline_core.sources`) use the same timeout per socket operation.

Plain HTTP only: no Prefect or MLflow import here.
"""

from __future__ import annotations

import math
import os
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import Callable

from pipeline_core.errors import ConfigError, SeqlabError

DEFAULT_NETWORK_TIMEOUT_S = 30.0
TIMEOUT_ENV = "SEQLAB_NETWORK_TIMEOUT"
MLFLOW_PROBE_PATH = "/api/2.0/mlflow/experiments/search?max_results=1"


class NetworkError(SeqlabError):
    """A network target (tracking server, Prefect API, download URL) that does not answer."""


def network_timeout_s() -> float:
    """``$SEQLAB_NETWORK_TIMEOUT`` seconds (default 30): the bound on every network wait."""
    raw = os.environ.get(TIMEOUT_ENV)
    if raw is None or not raw.strip():
        return DEFAULT_NETWORK_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{TIMEOUT_ENV} must be a positive number of seconds (got {raw!r})")
    return value


def bound_mlflow_http(timeout: float | None = None) -> None:
    """Bound MLflow's HTTP client for the rest of the process (the user's env wins):
    three attempts (two retries, after 0 and about 2 s) of at most ``timeout / 3``
    seconds each per connect or read, so one call to a server that stopped answering
    fails in about ``timeout`` + 2 s, and to one that is gone in about 2 s (MLflow's
    defaults: 7 retries of 120 s with a back-off that doubles from 2 s)."""
    seconds = timeout if timeout is not None else network_timeout_s()
    per_attempt = max(1, math.ceil(seconds / 3))  # MLflow reads an int
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(per_attempt))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "0.5")


def _ssl_context() -> ssl.SSLContext | None:
    """Honour MLflow's own TLS settings, so the probe agrees with the client."""
    if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() in ("1", "true"):
        return ssl._create_unverified_context()
    cafile = os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH")
    return ssl.create_default_context(cafile=cafile) if cafile else None


def _reason(err: BaseException) -> str:
    reason = getattr(err, "reason", None) or err
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    text = " ".join(str(reason).split())
    return text or type(reason).__name__


def http_status(url: str, timeout: float, context: ssl.SSLContext | None = None) -> int:
    """The HTTP status of ``GET url``, within ``timeout`` seconds in all (DNS, connect,
    response): :class:`TimeoutError` when it takes longer, :class:`OSError` (a
    ``URLError``) when there is no server. Any HTTP answer, 4xx and 5xx included, is a
    status."""
    outcome: list[int | BaseException] = []

    def get() -> None:
        request = urllib.request.Request(url, headers={"User-Agent": "seqlab"})
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=context) as resp:
                outcome.append(int(resp.status))
        except urllib.error.HTTPError as err:
            err.close()
            outcome.append(int(err.code))
        except BaseException as err:  # handed to the caller's thread
            outcome.append(err)

    worker = threading.Thread(target=get, name="seqlab-probe", daemon=True)
    worker.start()
    worker.join(timeout)
    if not outcome:
        raise TimeoutError(f"no answer within {timeout:g} s")
    result = outcome[0]
    if isinstance(result, BaseException):
        raise result
    return result


def probe(
    url: str,
    what: str,
    fix: str,
    ok: Callable[[int], bool] = lambda status: status < 500,
    timeout: float | None = None,
    context: ssl.SSLContext | None = None,
    shown: str | None = None,
) -> int:
    """``GET url`` or a one-line :class:`NetworkError` naming ``what``, the target
    (``shown``, default ``url``), why, and ``fix``; returns the status when ``ok(status)``."""
    seconds = timeout if timeout is not None else network_timeout_s()
    target = shown or url
    try:
        status = http_status(url, seconds, context)
    except TimeoutError:
        raise NetworkError(
            f"{what} at {target} did not answer within {seconds:g} s "
            f"(${TIMEOUT_ENV} sets the limit); {fix}"
        ) from None
    except (OSError, ValueError) as err:
        raise NetworkError(f"{what} at {target} is not reachable: {_reason(err)}; {fix}") from None
    if not ok(status):
        raise NetworkError(f"{what} at {target} answered HTTP {status} for {url}; {fix}")
    return status


def probe_tracking_server(uri: str, timeout: float | None = None) -> None:
    """An ``http(s)://`` MLflow tracking URI must answer MLflow's REST API (any other
    scheme is local and not probed). 401/403 count as there: MLflow reports auth."""
    if not uri.startswith(("http://", "https://")):
        return
    probe(
        uri.rstrip("/") + MLFLOW_PROBE_PATH,
        "MLflow tracking server",
        "start it, or pass another --tracking-uri (e.g. sqlite:///mlruns.db)",
        ok=lambda status: status < 500 and status != 404,
        timeout=timeout,
        context=_ssl_context(),
        shown=uri,
    )


def probe_prefect_api(api_url: str, timeout: float | None = None) -> None:
    """``PREFECT_API_URL`` must answer ``GET <url>/health`` with 200."""
    probe(
        api_url.rstrip("/") + "/health",
        "Prefect API (PREFECT_API_URL)",
        "start the server, or unset PREFECT_API_URL to let seqlab start its own",
        ok=lambda status: status == 200,
        timeout=timeout,
        shown=api_url,
    )
