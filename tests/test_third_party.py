"""A plugin in another distribution, installed with pip, works like a built-in.

``tests/fixtures/seqlab-toyplugin`` (a GRU, entry point ``gru-toy``),
``tests/fixtures/seqlab-brokenplugin`` (an entry point that points nowhere) and
``tests/fixtures/seqlab-hostileplugins`` (a liar whose rows sum to 2, a convolution that
peeks at t+1, a plugin that raises in fit) are real distributions with their own
pyproject.toml. They are pip-installed *offline* into a
private ``--target`` directory put on PYTHONPATH for the ``seqlab`` subprocesses, never
into the shared virtualenv: other people's test runs in the same checkout never see
them, and a killed test run leaves nothing installed behind (a ``pip install -e`` into
.venv plus uninstall on teardown could not promise that). Entry-point discovery reads
the target's ``*.dist-info`` exactly as it reads site-packages.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
TOY = "gru-toy"
BROKEN = "broken-toy"


@dataclass(frozen=True)
class Installed:
    """Where the fixture distributions were installed, and the env that sees them."""

    site: Path
    env: dict[str, str]

    def seqlab(
        self, *args: str, cwd: Path = REPO, prefect: str | None = None, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        """``seqlab ARGS`` seeing the installed plugins (and a Prefect server, if given)."""
        env = dict(self.env, PREFECT_API_URL=prefect) if prefect else self.env
        return subprocess.run(
            [sys.executable, "-m", "seqlab", *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def pip_install_target(sources: list[Path], site: Path) -> None:
    """Build and install ``sources`` into ``site`` with no network and no build isolation."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--no-deps",
        "--no-build-isolation",
        "--no-index",
        "--disable-pip-version-check",
        "--quiet",
        "--upgrade",  # idempotent: installing over an earlier run replaces it
        "--target",
        str(site),
        *map(str, sources),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"pip install failed:\n{proc.stdout}\n{proc.stderr}"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    root = tmp_path_factory.mktemp("third-party")
    # build from copies, so no build/ or *.egg-info lands in the checkout, and two
    # test runs at once never build in the same directory
    sources = []
    for name in ("seqlab-toyplugin", "seqlab-brokenplugin", "seqlab-hostileplugins"):
        dest = root / name
        shutil.copytree(FIXTURES / name, dest, ignore=shutil.ignore_patterns("build", "*.egg-info"))
        sources.append(dest)
    site = root / "site"
    try:
        pip_install_target(sources, site)
        env = os.environ.copy()
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), env.get("PYTHONPATH", "")) if p)
        yield Installed(site, env)
    finally:
        shutil.rmtree(site, ignore_errors=True)


def test_fixture_is_a_separate_distribution(installed: Installed) -> None:
    dist_infos = sorted(p.name for p in installed.site.glob("*.dist-info"))
    assert dist_infos == [
        "seqlab_brokenplugin-0.1.0.dist-info",
        "seqlab_hostileplugins-0.1.0.dist-info",
        "seqlab_toyplugin-0.1.0.dist-info",
    ]
    entry_points = installed.site / "seqlab_toyplugin-0.1.0.dist-info" / "entry_points.txt"
    assert "[seqlab.models]" in entry_points.read_text()
    # invisible to this process and so to anyone else using the shared environment
    from pipeline_core.registry import discover

    assert TOY not in {i.name for i in discover()}


def test_plugins_json_lists_toy_ok_and_broken_one_with_reason(installed: Installed) -> None:
    proc = installed.seqlab("plugins", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {row["name"]: row for row in json.loads(proc.stdout)}
    toy = rows[TOY]
    assert toy["distribution"] == "seqlab-toyplugin"
    assert toy["version"] == "0.1.0"
    assert toy["status"] == "ok" and toy["error"] is None
    broken = rows[BROKEN]
    assert broken["distribution"] == "seqlab-brokenplugin"
    assert broken["status"] == "broken"
    assert f"plugin '{BROKEN}'" in broken["error"]
    assert "seqlab_brokenplugin_nowhere" in broken["error"]
    # the broken one hides nothing: the built-ins are still listed and usable
    assert rows["lstm"]["status"] == "ok"
    assert rows["lstm"]["distribution"] == "seqlab"


def test_plugins_table_shows_broken_plugin(installed: Installed) -> None:
    proc = installed.seqlab("plugins")
    assert proc.returncode == 0, proc.stderr
    assert TOY in proc.stdout and BROKEN in proc.stdout
    assert "broken" in proc.stdout and "seqlab-toyplugin" in proc.stdout


def test_toy_plugin_passes_the_conformance_kit(installed: Installed) -> None:
    proc = installed.seqlab("check-plugin", TOY)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no check failed" in proc.stdout
    assert "FAIL" not in proc.stdout


def test_check_plugin_on_broken_plugin_is_a_one_line_error(installed: Installed) -> None:
    proc = installed.seqlab("check-plugin", BROKEN)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert f"plugin '{BROKEN}'" in lines[0]


def test_toy_runs_beside_the_builtins(
    installed: Installed, prefect_server: str, tmp_path: Path
) -> None:
    proc = installed.seqlab(
        "run", "--data", "synthetic:markov?length=3000", "--models", f"ngram,lstm,{TOY}",
        "--epochs", "1", "--tracking-uri", f"sqlite:///{tmp_path / 'mlruns.db'}",
        cwd=tmp_path, prefect=prefect_server,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert TOY in proc.stdout
    assert "ngram" in proc.stdout and "lstm" in proc.stdout


def test_the_peeker_is_caught_by_the_causality_rule(installed: Installed) -> None:
    proc = installed.seqlab("check-plugin", "peeker")
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "causal" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_a_liar_and_a_crasher_fail_only_their_own_runs(
    installed: Installed, prefect_server: str, tmp_path: Path
) -> None:
    from mlflow import MlflowClient
    from mlflow.artifacts import load_text

    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    proc = installed.seqlab(
        "run", "--data", "synthetic:markov?length=3000", "--models", "ngram,liar,crasher",
        "--tracking-uri", uri, cwd=tmp_path, prefect=prefect_server,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "UnfinishedRun" not in proc.stderr
    lines = sorted(ln for ln in proc.stderr.splitlines() if ln.strip())
    assert len(lines) == 2, proc.stderr
    assert lines[0].startswith("error: model crasher failed: RuntimeError: crasher:")
    assert lines[1].startswith("error: model liar failed: ") and "sums to 2" in lines[1]
    assert "ngram" in proc.stdout  # the finished model is on the console leaderboard

    client = MlflowClient(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    by_name = {r.info.run_name: r for r in runs}
    assert by_name["ngram"].info.status == "FINISHED"
    for name in ("liar", "crasher"):
        run = by_name[name]
        assert run.info.status == "FAILED"
        assert "Traceback" in load_text(f"{run.info.artifact_uri}/error.txt")
    parent = next(r for r in runs if r.data.tags.get("seqlab.kind") == "compare")
    board = load_text(f"{parent.info.artifact_uri}/leaderboard.csv").splitlines()
    board = [row for row in board if not row.startswith("oracle,baseline,")]  # the true law
    assert board[1].startswith("ngram,ngram,finished,")
    assert {row.split(",")[0] for row in board[2:]} == {"liar", "crasher"}
    assert all(",failed," in row for row in board[2:])
