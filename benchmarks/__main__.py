"""Run a benchmark and record its figures: ``python -m benchmarks [--results-dir DIR] NAME
[ARGS...]``.

NAME is one of the names in ``BENCHMARKS`` (``all`` runs every built one in turn, each with
its default settings). ARGS go to the benchmark's own ``main(argv)`` unchanged, plus a
``--json PATH`` to a temporary file: the benchmark prints its own output, and its figures
(that JSON object) are written to ``DIR/NAME.json`` (default ``benchmarks/results``, or
``$SEQLAB_BENCH_RESULTS``) as::

    {"name": ..., "command": "<the exact python -m benchmarks NAME ... argv>",
     "machine": {cpu model and count, RAM, OS, python, torch, numpy, load average},
     "date": "<UTC ISO, when it started>", "wall_s": ..., "figures": {...}}

The benchmark's own ``command`` and ``machine`` keys (if it writes them) are replaced by
these, its extra machine keys kept. A benchmark that fails (non-zero exit) writes no
results file. Run by ``all``, a result's ``command`` is the equivalent single command and
``invoked_as`` the ``all`` one. ``python -m benchmarks.readme`` renders the results files
into README.md's Results section.
"""

from __future__ import annotations

import datetime as dt
import importlib
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_RESULTS = REPO / "benchmarks" / "results"
RESULTS_ENV = "SEQLAB_BENCH_RESULTS"

# name -> module under benchmarks/ (None: not built yet), in the order ``all`` runs them
BENCHMARKS: dict[str, str | None] = {
    "compressors": "compressors",
    "ngram": "ngram_vs_nltk",
    "trainer": "trainer_overhead",
    "runners": "runners",
    "scaling": "scaling",
    "seed": "seed_vs_stateful",
    "quality": "quality",
}
USAGE = (
    "usage: python -m benchmarks [--results-dir DIR] NAME [ARGS...]\n"
    f"NAME: {', '.join(BENCHMARKS)} or all (ARGS go to the benchmark; --help shows its own)"
)


class BenchError(Exception):
    """A one-line error for the user (exit 2)."""


class NotBuilt(BenchError):
    """The benchmark is known but has no module yet (``all`` skips it)."""


def results_dir(option: str | None) -> Path:
    """``--results-dir``, else ``$SEQLAB_BENCH_RESULTS``, else ``benchmarks/results``."""
    if option:
        return Path(option)
    env = os.environ.get(RESULTS_ENV)
    return Path(env) if env else DEFAULT_RESULTS


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _ram_gib() -> float | None:
    try:
        pages, page = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None
    return round(pages * page / 2**30, 1)


def machine() -> dict[str, Any]:
    """What the figures were measured on (the load average as the benchmark starts)."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "ram_gib": _ram_gib(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": _version("torch"),
        "numpy": _version("numpy"),
        "load_avg_1m": None if load is None else round(load, 2),
    }


def _python() -> str:
    """This interpreter as the command line names it: relative to the repository when it
    lives there (``.venv/bin/python``), else ``python``."""
    exe = Path(sys.executable)
    try:
        return exe.relative_to(REPO).as_posix()
    except ValueError:
        return "python"


def command(argv: Sequence[str]) -> str:
    return shlex.join([_python(), "-m", "benchmarks", *argv])


def load(name: str) -> Callable[[list[str]], int]:
    """The benchmark's ``main``; a one-line ``BenchError`` when it is unknown or not built."""
    if name not in BENCHMARKS:
        raise BenchError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}, all")
    module_name = BENCHMARKS[name]
    if module_name is None:
        raise NotBuilt(f"benchmark {name!r} is not built yet")
    qualified = f"benchmarks.{module_name}"
    try:
        module = importlib.import_module(qualified)
    except ModuleNotFoundError as err:
        if err.name == qualified:
            raise NotBuilt(
                f"benchmark {name!r} is not built yet: benchmarks/{module_name}.py is missing"
            ) from None
        raise BenchError(f"benchmark {name!r} cannot be imported: {err}") from None
    main = getattr(module, "main", None)
    if not callable(main):
        raise BenchError(f"benchmarks/{module_name}.py has no main(argv) function")
    return main


def _write_json(path: Path, record: dict[str, Any]) -> None:
    """Atomically: a failed write leaves the previous results file whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


def run_one(
    name: str, args: list[str], out_dir: Path, cmd: str, invoked_as: str | None = None
) -> int:
    """Run benchmark ``name`` with ``args``; on success write ``out_dir/NAME.json``."""
    bench_main = load(name)
    if any(a == "--json" or a.startswith("--json=") for a in args):
        raise BenchError("--json is set by python -m benchmarks; use --results-dir DIR")
    described = machine()
    started = dt.datetime.now(dt.UTC)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"seqlab-bench-{name}-") as tmp:
        figures_path = Path(tmp) / "figures.json"
        saved_argv = sys.argv  # its argparse's usage line: prog "python -m benchmarks NAME"
        sys.argv = [f"python -m benchmarks {name}", *args]
        try:
            rc = bench_main([*args, "--json", str(figures_path)])
        except SystemExit as exit_:  # the benchmark's argparse: usage printed already
            code = exit_.code
            rc = code if isinstance(code, int) else (0 if code is None else 2)
            if rc == 0:  # --help
                return 0
        finally:
            sys.argv = saved_argv
        sys.stdout.flush()
        wall_s = time.perf_counter() - t0
        if rc != 0:
            print(
                f"error: benchmark {name!r} exited with {rc}; {out_dir / (name + '.json')} "
                "not written",
                file=sys.stderr,
            )
            return int(rc)
        if not figures_path.is_file():
            print(f"error: benchmark {name!r} wrote no figures (--json)", file=sys.stderr)
            return 1
        figures = json.loads(figures_path.read_text(encoding="utf-8"))
    if not isinstance(figures, dict):
        print(
            f"error: benchmark {name!r} wrote {type(figures).__name__}, not an object",
            file=sys.stderr,
        )
        return 1
    figures.pop("command", None)  # sys.argv of this process: the record's command says it
    own_machine = figures.pop("machine", None)
    if isinstance(own_machine, dict):  # e.g. torch threads: kept, ours win on a clash
        for key, value in own_machine.items():
            described.setdefault(key, value)
    record: dict[str, Any] = {
        "name": name,
        "command": cmd,
        "machine": described,
        "date": started.replace(microsecond=0).isoformat().replace("+00:00", "Z"),
        "wall_s": round(wall_s, 1),
        "figures": figures,
    }
    if invoked_as is not None:
        record["invoked_as"] = invoked_as
    path = out_dir / f"{name}.json"
    _write_json(path, record)
    from benchmarks.readme import figure_rows

    rows = figure_rows(figures)
    width = max((len(k) for k, _ in rows), default=0)
    print()
    print(f"{name}: {cmd} ({wall_s:.1f} s) -> {path}")
    for key, value in rows:
        print(f"  {key.ljust(width)}  {value}")
    sys.stdout.flush()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    given = list(argv)
    option: str | None = None
    while argv and argv[0].startswith("-"):
        head = argv.pop(0)
        if head in ("-h", "--help"):
            print(USAGE)
            return 0
        if head == "--results-dir" and argv:
            option = argv.pop(0)
        elif head.startswith("--results-dir="):
            option = head.split("=", 1)[1]
        else:
            print(f"error: unknown option {head!r}; {USAGE.splitlines()[0]}", file=sys.stderr)
            return 2
    if not argv:
        print(f"error: no benchmark named; {USAGE.splitlines()[0]}", file=sys.stderr)
        return 2
    name, args = argv[0], argv[1:]
    out_dir = results_dir(option)
    prefix = given[: len(given) - len(argv)]  # --results-dir, as given
    try:
        if name != "all":
            return run_one(name, args, out_dir, command(given))
        if args:
            raise BenchError("all takes no arguments: run one benchmark to pass it some")
        worst, skipped = 0, []
        for each in BENCHMARKS:
            try:
                load(each)
            except NotBuilt:
                skipped.append(each)
                continue
            except BenchError:
                pass  # run_one says it
            print(f"== {each}", flush=True)
            try:
                rc = run_one(each, [], out_dir, command([*prefix, each]), command(given))
            except BenchError as err:  # the others still run
                print(f"error: {err}", file=sys.stderr)
                rc = 2
            worst = worst or rc
        if skipped:
            print(f"not built yet (skipped): {', '.join(skipped)}")
        return worst
    except BenchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
