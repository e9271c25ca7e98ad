"""The team stack (issue 9): ``deploy/compose.yaml`` and the configuration it runs.

Docker's daemon does not run here, so the compose file is checked for its structure
(services, the PostgreSQL URIs its commands name, ports, volumes, healthchecks, the
variables README documents) with PyYAML. The same configuration is then proved with the
servers started directly (slow test): PostgreSQL 15 as an unprivileged user, an MLflow
server on it with proxied artifact storage, a Prefect server on it, and a ``seqlab run``
against both, whose runs, artifacts and flow run are found through the servers' APIs and
in the databases. Everything the test starts is stopped, and checked gone, before it ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import pytest
import yaml

from flows.server import free_port
from tests.conftest import REPO, run_cli

DEPLOY = REPO / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
README = REPO / "README.md"
SECTION = "## From laptop to team"
SERVICES = {"mlflow-db", "mlflow", "prefect-db", "prefect"}
# the variables a test run of the compose file needs (the required ones) and sets
REQUIRED = {"MLFLOW_DB_PASSWORD": "mlflow-s3cret", "PREFECT_DB_PASSWORD": "prefect-s3cret"}
VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


# ---- the compose file, statically ------------------------------------------------------
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?error}`` on one string."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3) or ""
        present = env.get(name)
        empty_counts = op is not None and op.startswith(":")
        missing = present is None or (empty_counts and present == "")
        if op and op.endswith("?") and missing:
            raise KeyError(f"{name}: {arg}")
        if op and op.endswith("-") and missing:
            return arg
        return present or ""

    return VARIABLE.sub(one, value)


def variables(text: str) -> set[str]:
    return {m.group(1) for m in VARIABLE.finditer(text)}


def readme_section() -> str:
    text = README.read_text(encoding="utf-8")
    assert text.count(SECTION) == 1, f"README.md lost its {SECTION!r} section"
    body = text.split(SECTION, 1)[1]
    return body.split("\n## ", 1)[0]


def documented_compose_variables(section: str) -> dict[str, str]:
    """The section's table of compose variables: name -> default (``required``)."""
    rows = re.findall(r"^\| `([A-Z_][A-Z0-9_]*)` \| ([^|]+) \|", section, flags=re.MULTILINE)
    return {name: default.strip().strip("`") for name, default in rows}


def compose_defaults(text: str) -> dict[str, str]:
    """Each variable's default in the compose file (``required`` for ``${VAR:?...}``)."""
    found: dict[str, str] = {}
    for match in VARIABLE.finditer(text):
        name, op, arg = match.group(1), match.group(2) or "", match.group(3) or ""
        default = "required" if op.endswith("?") else arg if op.endswith("-") else ""
        assert found.setdefault(name, default) == default, f"{name}: two defaults"
    return found


def db_uri(service: str, uri: str) -> tuple[str, str, str, str, str]:
    parts = urlsplit(interpolate(uri, REQUIRED))
    assert parts.port == 5432, uri
    return (
        parts.scheme,
        parts.username or "",
        parts.password or "",
        parts.hostname or "",
        parts.path.lstrip("/"),
    )


def db_env(data: dict[str, Any], service: str) -> tuple[str, str, str]:
    env = data["services"][service]["environment"]
    return env["POSTGRES_USER"], interpolate(env["POSTGRES_PASSWORD"], REQUIRED), env["POSTGRES_DB"]


def option(command: list[str], name: str) -> str:
    assert command.count(name) == 1, (name, command)
    return command[command.index(name) + 1]


def test_compose_has_the_four_services_on_pinned_images() -> None:
    data = compose()
    services = data["services"]
    assert set(services) == SERVICES
    for name in ("mlflow-db", "prefect-db"):
        assert re.fullmatch(r"postgres:15(\.\d+)?(-\w+)?", services[name]["image"]), name
        assert services[name]["environment"]["POSTGRES_DB"] == name.removesuffix("-db")
    dockerfile = DOCKERFILE.read_text(encoding="utf-8")
    pins = dict(re.findall(r"^ARG (\w+)_VERSION=(\S+)$", dockerfile, flags=re.MULTILINE))
    installed = {
        "MLFLOW": version("mlflow"),
        "PREFECT": version("prefect"),
        "PSYCOPG2": version("psycopg2-binary"),
        "ASYNCPG": version("asyncpg"),
    }
    assert pins == installed, "deploy/Dockerfile pins other versions than the ones proved here"
    assert re.search(r"^FROM python:3\.11-slim", dockerfile, flags=re.MULTILINE)
    for name in ("mlflow", "prefect"):
        assert services[name]["build"] == {"context": ".", "dockerfile": "Dockerfile"}
        image = services[name]["image"]
        assert image == f"seqlab-stack:mlflow-{installed['MLFLOW']}-prefect-{installed['PREFECT']}"


def test_mlflow_service_serves_artifacts_from_a_volume_over_its_postgres() -> None:
    data = compose()
    mlflow = data["services"]["mlflow"]
    command = mlflow["command"]
    assert command[:2] == ["mlflow", "server"] and "--serve-artifacts" in command
    scheme, user, password, host, database = db_uri(
        "mlflow", option(command, "--backend-store-uri")
    )
    # explicit driver: SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, not psycopg2
    assert scheme == "postgresql+psycopg2"
    assert host == "mlflow-db"
    assert (user, password, database) == db_env(data, "mlflow-db")
    assert option(command, "--host") == "0.0.0.0" and option(command, "--port") == "5000"
    destination = option(command, "--artifacts-destination")
    assert destination == "/mlartifacts"
    assert "mlflow-artifacts:/mlartifacts" in mlflow["volumes"]
    assert mlflow["ports"] == ["${MLFLOW_PORT:-5000}:5000"]
    assert mlflow["environment"] == {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    hosts = interpolate(option(command, "--allowed-hosts"), {}).split(",")
    assert {"localhost:*", "mlflow:*"} <= set(hosts)


def test_prefect_service_runs_on_its_postgres() -> None:
    data = compose()
    prefect = data["services"]["prefect"]
    command = prefect["command"]
    assert command[:3] == ["prefect", "server", "start"]
    assert option(command, "--host") == "0.0.0.0" and option(command, "--port") == "4200"
    url = prefect["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    scheme, user, password, host, database = db_uri("prefect", url)
    assert scheme == "postgresql+asyncpg"
    assert host == "prefect-db"
    assert (user, password, database) == db_env(data, "prefect-db")
    assert prefect["ports"] == ["${PREFECT_PORT:-4200}:4200"]
    assert prefect["environment"]["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"


def test_required_passwords_fail_loudly_when_unset() -> None:
    text = COMPOSE.read_text(encoding="utf-8")
    uri = option(compose()["services"]["mlflow"]["command"], "--backend-store-uri")
    with pytest.raises(KeyError, match="MLFLOW_DB_PASSWORD"):
        interpolate(uri, {})
    for name in REQUIRED:
        assert f"${{{name}:?" in text and f"${{{name}:-" not in text, name


def test_healthchecks_volumes_and_start_order() -> None:
    data = compose()
    services = data["services"]
    for name, service in services.items():
        check = service["healthcheck"]
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name
        assert check["retries"] >= 3 and service["restart"] == "unless-stopped", name
    for db in ("mlflow-db", "prefect-db"):
        user, _, database = db_env(data, db)
        probe = services[db]["healthcheck"]["test"][1]
        assert probe == f"pg_isready -h 127.0.0.1 -U {user} -d {database}"
        assert services[db]["volumes"] == [f"{db}-data:/var/lib/postgresql/data"]
        assert "ports" not in services[db], f"{db} must not be published"
    assert "127.0.0.1:5000/health" in services["mlflow"]["healthcheck"]["test"][-1]
    assert "127.0.0.1:4200/api/health" in services["prefect"]["healthcheck"]["test"][-1]
    for server in ("mlflow", "prefect"):
        assert services[server]["depends_on"] == {f"{server}-db": {"condition": "service_healthy"}}
    named = set(data["volumes"])
    assert named == {"mlflow-db-data", "prefect-db-data", "mlflow-artifacts"}
    mounted = {v.split(":", 1)[0] for s in services.values() for v in s.get("volumes", [])}
    assert mounted == named


def test_readme_documents_the_compose_variables_and_the_commands() -> None:
    text = COMPOSE.read_text(encoding="utf-8")
    used = variables(text)
    section = readme_section()
    assert documented_compose_variables(section) == compose_defaults(text)
    header = text.split("\nname:", 1)[0]
    assert set(re.findall(r"^#   ([A-Z_][A-Z0-9_]*) ", header, flags=re.MULTILINE)) == used
    deploy_readme = (DEPLOY / "README.md").read_text(encoding="utf-8")
    for name in used:
        assert f"`{name}`" in deploy_readme, name
    for needed in (
        "MLFLOW_TRACKING_URI=http://",
        "PREFECT_API_URL=http://",
        "PREFECT_API_DATABASE_CONNECTION_URL=postgresql+asyncpg://",
        "mlflow server --backend-store-uri postgresql+psycopg2://",
        "--artifacts-destination",
        "--serve-artifacts",
        "mlflow-artifacts:",
        "prefect server start --host 0.0.0.0 --port 4200",
        "docker compose up -d --build",
    ):
        assert needed in section, needed


@pytest.mark.skipif(
    shutil.which("docker") is None
    or subprocess.run(["docker", "compose", "version"], capture_output=True).returncode != 0,
    reason="the docker compose plugin is not installed here (the structure tests stand in)",
)
def test_docker_compose_accepts_the_file() -> None:
    env = {**os.environ, **REQUIRED}
    result = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE), "config", "--quiet"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


# ---- the same configuration, started directly --------------------------------------------
PG_TOOLS = ("initdb", "pg_ctl", "postgres")
PG_MISSING = [tool for tool in PG_TOOLS if shutil.which(tool) is None]
STARTUP_TIMEOUT_S = 150.0
STOP_GRACE_S = 20.0


def _stat(pid: int) -> tuple[str, int, int, str] | None:
    """(state, ppid, pgid, start time) of a process, None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = raw[raw.rindex(")") + 2 :].split()
    return rest[0], int(rest[1]), int(rest[2]), rest[19]


def _processes() -> dict[int, tuple[str, int, int, str]]:
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (info := _stat(int(entry.name))) is not None:
            table[int(entry.name)] = info
    return table


def _tree(roots: set[int]) -> set[tuple[int, str]]:
    """The live processes under ``roots`` (themselves included), as (pid, start time)."""
    table = _processes()
    found, frontier = set(), {pid for pid in roots if pid in table}
    while frontier:
        found |= frontier
        frontier = {pid for pid, info in table.items() if info[1] in frontier} - found
    return {(pid, table[pid][3]) for pid in found if table[pid][0] != "Z"}


@dataclass
class TeamStack:
    """PostgreSQL 15 (databases ``mlflow`` and ``prefect``, a password each), an MLflow
    server with proxied artifacts and a Prefect server, on 127.0.0.1 and free ports."""

    work: Path
    pg_dir: Path = field(init=False)
    pg_port: int = 0
    mlflow_port: int = 0
    prefect_port: int = 0
    postmaster: int = 0
    servers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    started: set[tuple[int, str]] = field(default_factory=set)
    timings: dict[str, float] = field(default_factory=dict)
    killed: list[str] = field(default_factory=list)  # servers SIGTERM did not stop

    passwords: ClassVar[dict[str, str]] = {"mlflow": "mlflow-s3cret", "prefect": "prefect-s3cret"}

    @property
    def artifacts(self) -> Path:
        return self.work / "mlartifacts"

    @property
    def mlflow_url(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    @property
    def prefect_api(self) -> str:
        return f"http://127.0.0.1:{self.prefect_port}/api"

    def db_url(self, name: str, driver: str = "postgresql+psycopg2") -> str:
        password = self.passwords[name]
        return f"{driver}://{name}:{password}@127.0.0.1:{self.pg_port}/{name}"

    # -- PostgreSQL, as an unprivileged user in a folder it owns
    def _as_postgres(self, *args: str, timeout: float = 120) -> None:
        prefix = ["runuser", "-u", "nobody", "--"] if os.geteuid() == 0 else []
        result = subprocess.run(
            [*prefix, *args], capture_output=True, text=True, timeout=timeout, cwd=self.pg_dir
        )
        assert result.returncode == 0, (args, result.stdout[-2000:], result.stderr[-2000:])

    def start_postgres(self) -> None:
        started = time.monotonic()
        # /tmp, not pytest's folder: ``nobody`` must be able to reach it
        root = "/tmp" if os.path.isdir("/tmp") else None
        self.pg_dir = Path(tempfile.mkdtemp(prefix="seqlab-pg-", dir=root))
        superuser = "postgres-s3cret"
        (self.pg_dir / "pwfile").write_text(superuser + "\n")
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            for path in (self.pg_dir, self.pg_dir / "pwfile"):
                os.chown(path, nobody.pw_uid, nobody.pw_gid)
        self.pg_dir.chmod(0o700)
        data = str(self.pg_dir / "data")
        self._as_postgres(
            "initdb", "-D", data, "-U", "postgres", f"--pwfile={self.pg_dir / 'pwfile'}",
            "-A", "scram-sha-256", "-E", "UTF8", "--no-sync",
        )  # fmt: skip
        self.pg_port = free_port()
        options = (
            f"-p {self.pg_port} -k {self.pg_dir} -h 127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off"  # a throwaway cluster: speed first
        )
        log = str(self.pg_dir / "postgres.log")
        self._as_postgres("pg_ctl", "-D", data, "-o", options, "-l", log, "-w", "-t", "60", "start")
        self.postmaster = int((self.pg_dir / "data" / "postmaster.pid").read_text().split()[0])
        self.started |= _tree({self.postmaster})
        import psycopg2

        admin = psycopg2.connect(
            host="127.0.0.1", port=self.pg_port, user="postgres", password=superuser,
            dbname="postgres",
        )  # fmt: skip
        admin.autocommit = True
        with contextlib.closing(admin), admin.cursor() as cur:
            for name, password in self.passwords.items():
                cur.execute(f"CREATE ROLE {name} LOGIN PASSWORD %s", (password,))
                cur.execute(f"CREATE DATABASE {name} OWNER {name}")
        self.timings["postgres"] = time.monotonic() - started

    def query(self, name: str, sql: str, *args: object) -> list[tuple[Any, ...]]:
        import psycopg2

        conn = psycopg2.connect(self.db_url(name, "postgresql"))
        with contextlib.closing(conn), conn.cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall())

    # -- the two servers, each in its own session (its process group is its own)
    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> None:
        log = (self.work / f"{name}.log").open("ab")
        with log:
            self.servers[name] = subprocess.Popen(
                args, env=env, cwd=self.work, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

    def start_servers(self) -> None:
        started = time.monotonic()
        bin_dir = Path(sys.executable).parent
        base = {
            k: v
            for k, v in os.environ.items()
            if k not in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI")
        }
        self.mlflow_port, self.prefect_port = free_port(), free_port()
        self._spawn(
            "mlflow",
            [
                str(bin_dir / "mlflow"), "server",
                "--backend-store-uri", self.db_url("mlflow"),
                "--artifacts-destination", str(self.artifacts),
                "--serve-artifacts",
                "--host", "127.0.0.1", "--port", str(self.mlflow_port),
                "--workers", "1",  # two cores here; compose keeps MLflow's default
            ],
            {**base, **compose()["services"]["mlflow"]["environment"]},
        )  # fmt: skip
        self._spawn(
            "prefect",
            [
                str(bin_dir / "prefect"), "server", "start",
                "--host", "127.0.0.1", "--port", str(self.prefect_port),
            ],
            {
                **base,
                "PREFECT_HOME": str(self.work / "prefect-home"),
                "PREFECT_API_DATABASE_CONNECTION_URL": self.db_url(
                    "prefect", "postgresql+asyncpg"
                ),
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            },
        )  # fmt: skip
        health = {
            "mlflow": f"{self.mlflow_url}/health",
            "prefect": f"{self.prefect_api}/health",
        }
        deadline = started + STARTUP_TIMEOUT_S
        while health:
            for name, url in list(health.items()):
                if self.servers[name].poll() is not None:
                    pytest.fail(f"{name} server exited: {self.log_tail(name)}")
                with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as resp:
                    if resp.status == 200:
                        self.timings[f"{name} healthy"] = time.monotonic() - started
                        del health[name]
            if health and time.monotonic() > deadline:
                tails = "; ".join(f"{n}: {self.log_tail(n)}" for n in health)
                pytest.fail(f"not healthy within {STARTUP_TIMEOUT_S:g} s: {tails}")
            time.sleep(0.25)

    def log_tail(self, name: str) -> str:
        with contextlib.suppress(OSError):
            text = (self.work / f"{name}.log").read_text(errors="replace")
            return " | ".join(line for line in text.splitlines()[-8:] if line.strip())
        return ""

    # -- stopping, and proving nothing is left
    def stop(self) -> None:
        started = time.monotonic()
        roots = {p.pid for p in self.servers.values()}
        if self.postmaster:
            roots.add(self.postmaster)
        self.started |= _tree(roots)
        for proc in self.servers.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for name, proc in self.servers.items():
            try:
                proc.wait(timeout=max(0.0, started + STOP_GRACE_S - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.killed.append(name)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            self.timings[f"{name} stopped"] = time.monotonic() - started
        deadline = time.monotonic() + STOP_GRACE_S
        while self._server_groups() and time.monotonic() < deadline:
            time.sleep(0.1)  # children of a server that outlive it by a moment
        for pgid in self._server_groups():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
        if self.postmaster:
            with contextlib.suppress(AssertionError):
                data = str(self.pg_dir / "data")
                self._as_postgres("pg_ctl", "-D", data, "-m", "fast", "-w", "stop")
            info = _stat(self.postmaster)
            if info is not None and info[0] != "Z":  # pg_ctl could not stop it
                os.kill(self.postmaster, signal.SIGKILL)
        self.timings["stop"] = time.monotonic() - started

    def _server_groups(self) -> set[int]:
        groups = {p.pid for p in self.servers.values()}
        return {info[2] for info in _processes().values() if info[2] in groups and info[0] != "Z"}

    def leftovers(self) -> list[int]:
        """Processes this stack started that still run (same pid and start time)."""
        alive = []
        for pid, start in sorted(self.started):
            info = _stat(pid)
            if info is not None and info[0] != "Z" and info[3] == start:
                alive.append(pid)
        return sorted(set(alive) | self._server_groups())

    def remove(self) -> None:
        if getattr(self, "pg_dir", None) is not None:
            shutil.rmtree(self.pg_dir, ignore_errors=True)


@contextlib.contextmanager
def team_stack(work: Path) -> Iterator[TeamStack]:
    stack = TeamStack(work)
    try:
        stack.start_postgres()
        stack.start_servers()
        yield stack
    finally:
        stack.stop()
        stack.remove()
        print("team stack timings (s):", {k: round(v, 1) for k, v in stack.timings.items()})
        print("killed after the grace period:", stack.killed)


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as resp:
        return json.loads(resp.read())


@pytest.mark.slow
@pytest.mark.skipif(
    bool(PG_MISSING),
    reason=f"the PostgreSQL binaries are not installed here (missing: {', '.join(PG_MISSING)})",
)
@pytest.mark.skipif(
    os.geteuid() == 0 and shutil.which("runuser") is None,
    reason="PostgreSQL refuses to run as root and runuser is not installed to drop to nobody",
)
def test_a_comparison_against_the_team_stack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    began = time.monotonic()
    client_dir = tmp_path / "client"  # where `seqlab run` runs: it must write no store there
    client_dir.mkdir()
    (tmp_path / "stack").mkdir()
    with team_stack(tmp_path / "stack") as stack:
        monkeypatch.setenv("PREFECT_API_URL", stack.prefect_api)
        run_started = time.monotonic()
        result = run_cli(
            "run", "--data", "synthetic:markov?length=4000", "--models", "ngram",
            "--epochs", "1", "--tracking-uri", stack.mlflow_url,
            cwd=client_dir, timeout=300,
        )  # fmt: skip
        stack.timings["seqlab run"] = time.monotonic() - run_started
        assert result.returncode == 0, result.stderr[-3000:]
        assert "Traceback" not in result.stderr
        match = re.search(r"MLflow parent run: ([0-9a-f]{32})", result.stdout)
        assert match, result.stdout[-2000:]
        parent_id = match.group(1)

        # the runs, through the tracking server, stored in its PostgreSQL database
        client = MlflowClient(stack.mlflow_url, stack.mlflow_url)
        parent = client.get_run(parent_id)
        assert parent.info.status == "FINISHED"
        experiment = client.get_experiment(parent.info.experiment_id)
        assert experiment.name == "seqlab/synthetic-markov/next-token"
        children = client.search_runs(
            [parent.info.experiment_id],
            filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'",
        )
        assert [c.info.run_name for c in children] == ["ngram"]
        assert "test_bpc" in children[0].data.metrics
        stored = stack.query("mlflow", "SELECT run_uuid, status FROM runs ORDER BY run_uuid")
        assert sorted(stored) == sorted(
            [(parent_id, "FINISHED"), (children[0].info.run_id, "FINISHED")]
        )

        # the artifacts: proxied (mlflow-artifacts:), on the server's disk, served over HTTP
        assert parent.info.artifact_uri.startswith("mlflow-artifacts:/"), parent.info.artifact_uri
        names = {a.path for a in client.list_artifacts(parent_id)}
        assert {"leaderboard.csv", "config.json"} <= names, names
        fetched = Path(client.download_artifacts(parent_id, "leaderboard.csv", str(tmp_path)))
        on_disk = list(stack.artifacts.rglob(f"{parent_id}/artifacts/leaderboard.csv"))
        assert len(on_disk) == 1 and on_disk[0].read_bytes() == fetched.read_bytes()
        relative = parent.info.artifact_uri.removeprefix("mlflow-artifacts:").strip("/")
        proxied = f"{stack.mlflow_url}/api/2.0/mlflow-artifacts/artifacts/{relative}"
        with urllib.request.urlopen(f"{proxied}/leaderboard.csv", timeout=30) as resp:
            assert resp.read() == fetched.read_bytes()
        assert "ngram" in fetched.read_text()
        local = sorted(p.name for p in client_dir.iterdir())
        assert "mlruns.db" not in local and "mlartifacts" not in local, local

        # the flow run, through Prefect's API, stored in its PostgreSQL database
        flow_run_id = parent.data.tags.get("prefect.flow_run_id", "")
        assert flow_run_id, parent.data.tags
        flow_run = _get_json(f"{stack.prefect_api}/flow_runs/{flow_run_id}")
        assert flow_run["state_type"] == "COMPLETED", flow_run.get("state")
        assert _get_json(f"{stack.prefect_api}/flows/{flow_run['flow_id']}")["name"] == "compare"
        rows = stack.query("prefect", "SELECT state_type FROM flow_run WHERE id = %s", flow_run_id)
        assert [str(r[0]) for r in rows] == ["COMPLETED"]

        # the registry (pipeline_core.champion): the best model, registered on a fresh
        # server, is version 1 of `seqlab-<dataset>` and the champion; its files proxied
        child_id = children[0].info.run_id
        champion = client.get_model_version_by_alias("seqlab-synthetic-markov", "champion")
        assert (str(champion.version), champion.run_id) == ("1", child_id), (  # REST: an int
            champion,
            [(r.name, r.latest_versions) for r in client.search_registered_models()],
            [
                (r.info.run_id, r.info.run_name, r.data.tags.get("mlflow.parentRunId"))
                for r in client.search_runs([parent.info.experiment_id])
            ],
        )
        assert champion.source == f"runs:/{child_id}/model"
        assert client.list_artifacts(child_id, "model"), "the registered model has no files"
        registered = stack.query("mlflow", "SELECT name FROM registered_models")
        assert registered == [("seqlab-synthetic-markov",)]

    left = stack.leftovers()
    assert left == [], f"processes left running: {left}"
    assert not stack.pg_dir.exists()
    print(f"team stack test: {time.monotonic() - began:.1f} s")
