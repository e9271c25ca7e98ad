"""Shared fixtures: an isolated environment, one Prefect test server for the session
(in-process flows and CLI subprocesses both use it), and CLI helpers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
WONDERLAND = DATA / "wonderland.txt"


#: Test files by their measured seconds, heaviest first (a full run with ``--junitxml``,
#: summed per file). ``make test`` hands whole files to its two workers in collection
#: order (``--dist loadfile --no-loadscope-reorder``), so the long ones start first and
#: the many short ones fill in at the end, instead of xdist's default order (most tests
#: first), which left the one-test reproductions for last and one worker idle meanwhile.
#: Files not named here follow in their usual order.
HEAVIEST_FILES = (
    "test_demo.py",
    "test_resume.py",
    "test_faults.py",
    "test_cli.py",
    "test_signals.py",
    "test_adding_reproduction.py",
    "test_dask.py",
    "test_bad_inputs.py",
    "test_third_party.py",
    "test_sweep.py",
    "test_runners_benchmark.py",
    "test_task_serving.py",
    "test_runs_command.py",
    "test_schedule.py",
    "test_recurrent_runs.py",
    "test_team_stack.py",
    "test_compressors_benchmark.py",
    "test_classify.py",
    "test_regress.py",
    "test_registry_champion.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Heaviest files first (:data:`HEAVIEST_FILES`); a stable sort keeps each file's
    own order, and every worker sorts the same collection the same way."""
    rank = {name: i for i, name in enumerate(HEAVIEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(scope="session", autouse=True)
def isolated_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Private PREFECT_HOME and seqlab cache; quiet, telemetry-free services."""
    home = tmp_path_factory.mktemp("env")
    values = {
        "PREFECT_HOME": str(home / "prefect"),
        "SEQLAB_CACHE_DIR": str(home / "cache"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "1",
    }
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # `make test` runs one worker per core: one torch thread each (and in the CLI
        # subprocesses they start), or two workers' OpenMP pools fight over two cores
        values["OMP_NUM_THREADS"] = "1"
        import torch

        torch.set_num_threads(1)
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ.pop("MLFLOW_REGISTRY_URI", None)
    yield home
    for key, old in saved.items():
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


@pytest.fixture(autouse=True)
def no_registry_uri_left_behind() -> Iterator[None]:
    """MLflow keeps a registry URI process-wide (and exports it as MLFLOW_REGISTRY_URI to
    every later subprocess): whatever a test sets there ends with the test, or a later
    test's client reads another store's registry. ``mlflow.set_tracking_uri`` (which a
    Tracker calls) exports MLFLOW_TRACKING_URI the same way: a later CLI subprocess
    without ``--tracking-uri`` would write into that test's store."""
    tracking_before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    from mlflow.tracking._model_registry import utils as registry_utils

    registry_utils._registry_uri = None
    os.environ.pop("MLFLOW_REGISTRY_URI", None)
    if tracking_before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = tracking_before


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[str]:
    """One temporary Prefect server for the session; its URL is exported so that CLI
    subprocesses reuse it instead of each starting their own (~20 s each)."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        url = PREFECT_API_URL.value()
        os.environ["PREFECT_API_URL"] = url
        try:
            yield url
        finally:
            os.environ.pop("PREFECT_API_URL", None)


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """One torch thread for the test, the previous count restored after it: tiny models
    on shared cores train faster without thread hand-offs. A test file opts in with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def migrated_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow SQLite store, MLflow's schema applied once per test process:
    creating a store runs every migration (2-4 s of CPU here), a copy takes milliseconds
    and is the same empty store."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlruns.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def tracking_uri(tmp_path: Path, migrated_store: Path) -> str:
    """A new, empty store in the test's own folder (``mlruns.db``: where a CLI run in
    ``tmp_path`` without ``--tracking-uri`` would write too)."""
    store = tmp_path / "mlruns.db"
    shutil.copyfile(migrated_store, store)
    return f"sqlite:///{store}"


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 600) -> CliResult:
    """Run ``seqlab`` in a subprocess, as a user would."""
    proc = subprocess.run(
        [sys.executable, "-m", "seqlab", *args],
        cwd=cwd or REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=os.environ.copy(),
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def run_benchmarks(
    *args: str, cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``python -m benchmarks ARGS`` in a subprocess, as a user would run it."""
    return subprocess.run(
        [sys.executable, "-m", "benchmarks", *args],
        cwd=cwd or REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_one_line_error(result: CliResult, *fragments: str) -> None:
    """Exit 2, exactly one ``error: ...`` line on stderr, no traceback."""
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith("error: "), lines[0]
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


# hypothesis (tests/test_fuzz.py): modest runs that write nothing into the tree (a failure
# prints its @reproduce_failure blob); HYPOTHESIS_PROFILE=seqlab-thorough fuzzes for long.
try:
    from hypothesis import HealthCheck
    from hypothesis import settings as hypothesis_settings
except ImportError:  # hypothesis is a dev extra; only test_fuzz.py needs it
    pass
else:
    hypothesis_settings.register_profile(
        "seqlab",
        max_examples=60,
        deadline=None,
        database=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    hypothesis_settings.register_profile(
        "seqlab-thorough", hypothesis_settings.get_profile("seqlab"), max_examples=2000
    )
    hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "seqlab"))
