"""Scheduled runs: ``deploy/prefect.yaml`` (a cron deployment of the compare flow on a
process work pool) and ``seqlab schedule`` (the same flow served on a schedule from one
process).

The bad-input tests run ``seqlab.cli.main`` in this process and never reach Prefect.
The end-to-end test starts a real ``prefect server start`` with its own PREFECT_HOME,
serves an n-gram comparison every 5 s against it, waits for two scheduled runs to
complete with their MLflow parent and child runs (the second, no better than the
first, leaves the ``champion`` alias on version 1), then stops everything and checks
that no process and no listening socket of it is left.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from flows.server import die_with_parent, free_port
from seqlab.cli import main
from tests.conftest import REPO, CliResult, assert_one_line_error

PREFECT_YAML = REPO / "deploy" / "prefect.yaml"
SOURCE = "synthetic:markov?length=4000"
DEPLOYMENT = "e2e"


def cli(capfd: pytest.CaptureFixture[str], *args: str) -> CliResult:
    """``seqlab ARGS`` in this process, as ``main`` runs it."""
    capfd.readouterr()
    code = 0
    saved, sys.argv = sys.argv, ["seqlab", *args]
    try:
        main()
    except SystemExit as exit_info:
        code = int(exit_info.code or 0)
    finally:
        sys.argv = saved
    out, err = capfd.readouterr()
    return CliResult(code, out, err)


# ---------------------------------------------------------------- bad input (fast)


@pytest.mark.parametrize(
    ("cron", "fragment"),
    [
        ("61 * * * *", "out of range"),
        ("bogus", "columns"),
        ("0 3 * *", "columns"),
        ("0 25 * * *", "out of range"),
    ],
)
def test_invalid_cron_is_one_line(
    capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, cron: str, fragment: str
) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    result = cli(capfd, "schedule", "--cron", cron, "--models", "ngram")
    assert_one_line_error(result, "error: --cron: ", repr(cron), fragment, "0 3 * * *")
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--cron", "0 3 * * *", "--interval", "5"], ["--cron and --interval", "not both"]),
        ([], ["give a schedule", "--cron", "--interval"]),
        (["--interval", "0"], ["--interval: must be", "> 0"]),
        (["--interval", "-3"], ["--interval: must be", "> 0"]),
        (["--interval", "5", "--models", "nope"], ["unknown plugin 'nope'"]),
        (["--interval", "5", "--set", "train.epochs=0"], ["train.epochs"]),
        (["--cron", "0 3 * * *", "--config", "no/such.yaml"], ["config file not found"]),
        (["--interval", "5", "--data", "no/such/file.txt"], ["no/such/file.txt"]),
        (["--interval", "5", "--tracking-uri", "file:///tmp/x"], ["tracking-uri"]),
    ],
)
def test_bad_schedule_options_are_one_line(
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    fragments: list[str],
) -> None:
    """Refused before anything is served: no Prefect server is started (none is set)."""
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    result = cli(capfd, "schedule", *args)
    assert_one_line_error(result, *fragments)
    assert "serving" not in result.stdout


def test_schedule_kwargs_and_tracking_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from seqlab.cli_schedule import absolute_tracking_uri, describe_schedule, schedule_kwargs

    assert schedule_kwargs("0 3 * * *", None) == {"cron": "0 3 * * *"}
    assert schedule_kwargs(None, 2.5) == {"interval": 2.5}
    assert describe_schedule({"cron": "0 3 * * *"}) == "on cron '0 3 * * *' (UTC)"
    assert describe_schedule({"interval": 5.0}) == "every 5 s"
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert absolute_tracking_uri("sqlite:///rel.db") == f"sqlite:///{tmp_path.resolve()}/rel.db"
    assert absolute_tracking_uri(None) == f"sqlite:///{tmp_path.resolve()}/mlruns.db"
    assert absolute_tracking_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"


def test_resolved_config_round_trips_as_parameters() -> None:
    """``seqlab schedule`` passes the resolved config as JSON overrides: the flow must
    rebuild exactly the same config from them."""
    import json

    from flows.scheduled import build_config
    from seqlab.cli import build_run_config

    config = build_run_config(
        REPO / "configs" / "demo.yaml",
        SOURCE,
        None,
        None,
        "ngram,lstm",
        1,
        None,
        None,
        sets=["train.bptt=stateful"],
    )
    parameters = json.loads(json.dumps(config.model_dump(mode="json")))
    assert build_config(None, parameters) == config
    assert build_config(None, parameters).models[1].params == {
        "embedding_dim": 16,
        "hidden_size": 64,
    }


# ---------------------------------------------------------------- deploy/prefect.yaml


def test_prefect_yaml_declares_a_valid_cron_deployment_on_a_process_pool() -> None:
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.flows import Flow, load_flow_from_entrypoint

    from flows.scheduled import build_config, scheduled_compare

    project = yaml.safe_load(PREFECT_YAML.read_text(encoding="utf-8"))
    assert isinstance(project, dict) and project["deployments"], project
    (deployment,) = project["deployments"]
    assert deployment["name"]

    entrypoint = deployment["entrypoint"]
    path, _, attr = entrypoint.partition(":")
    assert (REPO / path).is_file(), entrypoint
    loaded = load_flow_from_entrypoint(str(REPO / path) + ":" + attr)
    assert isinstance(loaded, Flow)
    assert loaded.name == scheduled_compare.name

    (schedule,) = deployment["schedules"]
    from prefect._vendor.croniter import croniter

    assert croniter.is_valid(schedule["cron"]), schedule
    CronSchedule(cron=schedule["cron"], timezone=schedule.get("timezone"))
    assert schedule.get("active", True) is True

    pool = deployment["work_pool"]
    assert pool["name"] and pool["type"] == "process", pool

    parameters = deployment["parameters"]
    validated = loaded.validate_parameters(parameters)  # raises on a bad name or type
    assert set(validated) == set(parameters)
    config_path = REPO / parameters["config"]
    assert config_path.is_file(), config_path
    run_config = build_config(str(config_path), parameters.get("overrides"))
    declared = yaml.safe_load(config_path.read_text(encoding="utf-8"))["models"]
    assert [m.plugin for m in run_config.models] == [m["plugin"] for m in declared]
    assert {"ngram", "lstm"} <= {m.plugin for m in run_config.models}

    # what `prefect deploy` itself reads from the file validates too
    from prefect.cli.deploy._models import PrefectYamlModel

    PrefectYamlModel.model_validate(project)


# ---------------------------------------------------------------- end to end (slow)


def _group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of the process group ``pgid``."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(int(stat.parent.name))
    return alive


def _group_left(pgid: int, timeout: float = 15) -> list[str]:
    """The command lines of the group's processes still alive after ``timeout`` s (a
    helper such as multiprocessing's resource tracker exits just after its parent)."""
    deadline = time.monotonic() + timeout
    while (members := _group_members(pgid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = []
    for pid in members:
        try:
            left.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue
    return left


def _listening_ports(pids: list[int]) -> set[int]:
    """TCP ports the processes ``pids`` listen on (from /proc)."""
    inodes: set[str] = set()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").glob("*"):
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if cols[3] == "0A" and cols[9] in inodes:  # 0A: LISTEN
                ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return ports


def _refuses(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) != 0


def _stop(proc: subprocess.Popen[bytes], sig: int, timeout: float = 30) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # its own session: the group is its own
        return proc.wait()


def _log(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")[-3000:] if path.exists() else ""


@pytest.fixture
def real_prefect_server(
    tmp_path: Path,
) -> Iterator[tuple[str, subprocess.Popen[bytes], dict[str, str]]]:
    """A real ``prefect server start`` on a free port with its own PREFECT_HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.update(
        {
            "PREFECT_HOME": str(tmp_path / "prefect-home"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_ENABLED": "false",
            "PREFECT_LOGGING_LEVEL": "WARNING",
        }
    )
    port = free_port()
    log = tmp_path / "server.log"
    prefect = Path(sys.executable).with_name("prefect")
    with log.open("wb") as out:
        server = subprocess.Popen(
            [str(prefect), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(signal.SIGTERM),  # pytest killed: it stops itself
        )
    url = f"http://127.0.0.1:{port}/api"
    try:
        import httpx

        started = time.monotonic()
        deadline = started + 90
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, _log(log)
            assert time.monotonic() < deadline, f"no healthy server in 90 s: {_log(log)}"
            time.sleep(0.25)
        print(f"prefect server healthy after {time.monotonic() - started:.1f} s")
        yield url, server, env
    finally:
        _stop(server, signal.SIGTERM)
        assert _group_left(server.pid) == [], "prefect server processes left"
        assert _refuses(port), f"port {port} still listening"


def _flow_runs(client: Any, url: str, **flow_run_filter: Any) -> list[dict[str, Any]]:
    response = client.post(f"{url}/flow_runs/filter", json={"flow_runs": flow_run_filter})
    response.raise_for_status()
    return list(response.json())


@pytest.mark.slow
@pytest.mark.timeout(360)
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux /proc")
def test_schedule_serves_runs_into_mlflow_and_stops_cleanly(
    tmp_path: Path, real_prefect_server: tuple[str, subprocess.Popen[bytes], dict[str, str]]
) -> None:
    import httpx
    from mlflow import MlflowClient

    url, _, env = real_prefect_server
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    env = {
        **env,
        "PREFECT_API_URL": url,
        "PREFECT_RUNNER_POLL_FREQUENCY": "2",  # pick due runs up sooner than every 10 s
        "SEQLAB_CACHE_DIR": str(tmp_path / "cache"),
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    log = tmp_path / "serve.log"
    started = time.monotonic()
    with log.open("wb") as out:
        serve = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "seqlab",
                "schedule",
                "--interval",
                "5",
                "--name",
                DEPLOYMENT,
                "--data",
                SOURCE,
                "--models",
                "ngram",
                "--tracking-uri",
                uri,
                "--set",
                "train.progress=false",
            ],
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(signal.SIGINT),  # pytest killed: as Ctrl-C
        )
    try:
        with httpx.Client(timeout=10) as client:
            deadline = time.monotonic() + 200
            completed: list[dict[str, Any]] = []
            deployment: dict[str, Any] = {}
            while len(completed) < 2:
                assert serve.poll() is None, _log(log)
                assert time.monotonic() < deadline, f"no 2 completed runs: {_log(log)}"
                time.sleep(1)
                if not deployment:
                    found = client.get(f"{url}/deployments/name/scheduled-compare/{DEPLOYMENT}")
                    if found.status_code != 200:
                        continue
                    deployment = found.json()
                runs = _flow_runs(client, url, deployment_id={"any_": [deployment["id"]]})
                bad = [r for r in runs if r["state_type"] in ("FAILED", "CRASHED")]
                assert not bad, (bad[0]["state"], _log(log))
                completed = [r for r in runs if r["state_type"] == "COMPLETED"]
            assert "serving scheduled-compare/e2e every 5 s" in _log(log)
            print(f"two scheduled runs completed {time.monotonic() - started:.1f} s after serve:")
            for run in sorted(completed, key=lambda r: r["start_time"]):
                print(f"  {run['name']}: {run['start_time']} -> {run['end_time']}")
            ports = _listening_ports(_group_members(serve.pid))

            # each completed scheduled run: its compare subflow's MLflow parent + child
            mlflow = MlflowClient(uri, uri)
            experiments = [e.experiment_id for e in mlflow.search_experiments()]
            parents = []
            for run in sorted(completed, key=lambda r: r["start_time"]):
                (sub,) = _flow_runs(client, url, parent_flow_run_id={"any_": [run["id"]]})
                assert sub["state_type"] == "COMPLETED"
                found_parents = mlflow.search_runs(
                    experiments, f"tags.`prefect.flow_run_id` = '{sub['id']}'"
                )
                (parent,) = [p for p in found_parents if "mlflow.parentRunId" not in p.data.tags]
                assert parent.info.status == "FINISHED"
                children = mlflow.search_runs(
                    experiments, f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
                )
                assert [c.info.run_name for c in children] == ["ngram"]
                assert children[0].info.status == "FINISHED"
                assert "test_bpc" in children[0].data.metrics
                parents.append(parent)

            # the second run is no better (same data, same seed, same n-gram): it is
            # registered as version 2 and the champion alias stays on version 1
            models = mlflow.search_registered_models()
            assert len(models) == 1, [
                (
                    m.name,
                    [
                        (v.version, v.run_id, v.source)
                        for v in mlflow.search_model_versions(f"name='{m.name}'")
                    ],
                )
                for m in models
            ]
            (registered,) = models
            first, second = parents[:2]
            assert first.data.tags["seqlab.registry.decision"] == "first"
            assert second.data.tags["seqlab.registry.decision"] == "kept"
            champion = mlflow.get_model_version_by_alias(registered.name, "champion")
            assert str(champion.version) == "1"
            assert first.data.tags["seqlab.registry.version"] == "1"
            assert second.data.tags["seqlab.registry.version"] == "2"

            # Ctrl-C: serving stops, its runs and subprocesses end, the schedule pauses
            stopping = time.monotonic()
            assert _stop(serve, signal.SIGINT) == 0, _log(log)
            print(f"serve stopped {time.monotonic() - stopping:.1f} s after SIGINT")
            with pytest.raises(ProcessLookupError):
                os.kill(serve.pid, 0)
            assert _group_left(serve.pid) == [], "serve processes left"
            assert all(_refuses(p) for p in ports), ports
            assert "stopped serving scheduled-compare/e2e" in _log(log)
            found = client.get(f"{url}/deployments/name/scheduled-compare/{DEPLOYMENT}")
            assert found.json()["paused"] is True
            running = _flow_runs(
                client,
                url,
                deployment_id={"any_": [deployment["id"]]},
                state={"type": {"any_": ["RUNNING", "PENDING"]}},
            )
            assert running == []
    finally:
        _stop(serve, signal.SIGINT)
