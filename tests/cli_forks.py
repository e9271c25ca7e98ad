"""Run many ``seqlab`` command lines, each in its own process, for the price of one start.

A test matrix of a hundred bad inputs paid ~3 s of imports (torch, pandas, Prefect,
MLflow) per case before the CLI read its first argument. Here one interpreter imports
all of that once, then forks a child per command line: the child points its stdout and
stderr at files, changes to the case's folder and calls the console script's own
``seqlab.cli.main`` with the case's argv, so each case still runs the real entry point,
in a process of its own, with its exit code and output captured as a subprocess's.

Usage (what :func:`run_many` does): ``python -m tests.cli_forks < cases.json`` where
the JSON is ``[{"args": [...], "cwd": "..." | null}, ...]``; it prints
``[{"returncode": int, "stdout": str, "stderr": str}, ...]`` in the same order.
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.conftest import REPO, CliResult

TIMEOUT_S = 180.0


def _warm_up() -> None:
    """Import what the commands import lazily, so no child pays for it."""
    import mlflow  # noqa: F401
    import prefect  # noqa: F401

    import flows.compare  # noqa: F401
    import pipeline_core.experiment  # noqa: F401
    import seqlab.cli  # noqa: F401
    from pipeline_core.registry import inspect_all

    inspect_all()


def _child(args: Sequence[str], cwd: str | None, out: int, err: int) -> None:
    """In the forked child: the console script, its exit code, the interpreter's exit
    handlers; never returns into the parent's loop."""
    code = 1
    try:
        os.dup2(out, 1)
        os.dup2(err, 2)
        if cwd:
            os.chdir(cwd)
        # as ``python -m seqlab`` (tests.conftest.run_cli) names itself in usage lines
        sys.argv = [str(REPO / "seqlab" / "__main__.py"), *args]
        sys.modules["__main__"].__package__ = "seqlab"
        from seqlab.cli import main

        try:
            main()
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        atexit._run_exitfuncs()
    except BaseException as unexpected:  # a bug of this harness: say so on the case's stderr
        print(f"cli_forks: {type(unexpected).__name__}: {unexpected}", file=sys.stderr)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _wait(pid: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            return -9
        time.sleep(0.02)


def run_case(args: Sequence[str], cwd: str | None) -> dict[str, Any]:
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(args, cwd, out.fileno(), err.fileno())
        code = _wait(pid, TIMEOUT_S)
        out.seek(0)
        err.seek(0)
        return {
            "returncode": code,
            "stdout": out.read().decode("utf-8", "replace"),
            "stderr": err.read().decode("utf-8", "replace"),
        }


def run_many(cases: Sequence[tuple[Sequence[str], Path | None]]) -> list[CliResult]:
    """Each ``(argv, cwd)`` as ``seqlab *argv`` run in ``cwd``, in one warmed-up parent."""
    payload = [{"args": list(a), "cwd": str(c) if c else None} for a, c in cases]
    proc = subprocess.run(
        [sys.executable, "-m", "tests.cli_forks"],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        cwd=REPO,
        env=os.environ.copy(),
        timeout=TIMEOUT_S * max(1, len(cases)),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [CliResult(r["returncode"], r["stdout"], r["stderr"]) for r in json.loads(proc.stdout)]


def main() -> None:
    cases = json.load(sys.stdin)
    _warm_up()
    results = [run_case(c["args"], c["cwd"]) for c in cases]
    sys.stdout.write(json.dumps(results))


if __name__ == "__main__":
    main()
