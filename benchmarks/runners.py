"""Benchmark: the compare flow sequentially against Dask, and what Prefect + MLflow cost.

Why: ``execution.runner: dask`` trains every model of a comparison in its own worker
process; on a machine with two cores that should beat one model after another by more
than the price of starting a cluster. And the orchestration around the models (Prefect
flow and task runs, MLflow params, metrics, checkpoints, plots and the logged model)
should cost little next to training them. One process measures, on the same data and
models (an order-3 n-gram, an LSTM and a GRU, fixed epochs and batches per epoch):

* **direct**: the stages called without Prefect and without tracking: ingest, clean,
  encode (``pipeline_core.experiment``), then per model ``fit_model`` with the flow's
  per-epoch validation and the val and test scores (the leaderboard's figures);
* **sequential**: ``flows.compare.run_comparison`` with ``runner: sequential``, a
  throwaway SQLite MLflow store, every model one after another in this process, with
  ``--sequential-threads`` torch threads (default: one per CPU, torch's own default, so
  sequential training already uses every core);
* **dask**: the same with ``runner: dask`` and its own ``LocalCluster`` of ``--workers``
  processes, ``--threads`` torch threads per model (default 1), timed from the call to
  its return: the cluster's start, its workers importing torch, Prefect and MLflow, and
  its shutdown included.

Before them an untimed warm-up runs the direct path on one batch (imports, the encoded
corpus's cache). The Prefect API is ``PREFECT_API_URL``, else a temporary server of this
process (its start is not timed). Samples and the gradient-flow plot are off and nothing
is registered, so the flows train and score what the direct path does (with the
sequential run's threads); the table shows the test bpc of each. With the same threads
on both sides (``--quick`` runs both with one) the flows' figures agree exactly; with
more threads sequentially, torch sums in another order and they differ in the last
digits.

``overhead_s`` = sequential - direct (Prefect + MLflow); ``ratio`` = sequential / dask.
The last line is machine-readable::

    ratio=<sequential_s/dask_s> sequential_s=<s> dask_s=<s> overhead_s=<s>

Run: ``.venv/bin/python benchmarks/runners.py [--length N] [--epochs E] [--batches B]
[--hidden H] [--workers W] [--threads T] [--sequential-threads T] [--json PATH]``
(``--quick``: tiny sizes and one thread everywhere, for the smoke test). Nothing is
written outside a temporary folder unless ``--json`` is given.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a plain script

from benchmarks.presets import add_output_options, apply_preset

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

FULL = {
    "length": 100_000,
    "context_len": 48,
    "epochs": 2,
    "batches": 100,
    "batch_size": 64,
    "hidden": 256,
    "embedding": 64,
}
QUICK = {
    "length": 6_000,
    "context_len": 8,
    "epochs": 1,
    "batches": 3,
    "batch_size": 16,
    "hidden": 16,
    "embedding": 8,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--length", type=int, help="characters of synthetic:markov text")
    ap.add_argument("--context-len", type=int, help="window length")
    ap.add_argument("--epochs", type=int, help="epochs per neural model")
    ap.add_argument("--batches", type=int, help="batches per epoch (max_batches_per_epoch)")
    ap.add_argument("--batch-size", type=int, help="windows per batch")
    ap.add_argument("--hidden", type=int, help="hidden size of the LSTM and the GRU")
    ap.add_argument("--embedding", type=int, help="embedding size of the LSTM and the GRU")
    ap.add_argument("--workers", type=int, default=2, help="Dask worker processes")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per Dask model")
    ap.add_argument(
        "--sequential-threads",
        type=int,
        help="torch threads of the sequential and direct runs (default: one per CPU)",
    )
    ap.add_argument("--repeats", type=int, default=1, help="measurements of each (best kept)")
    add_output_options(ap)
    args = ap.parse_args(argv)
    if args.sequential_threads is None:
        args.sequential_threads = 1 if args.quick else os.cpu_count() or 1
    apply_preset(
        ap, args, FULL, QUICK, positive=("workers", "threads", "sequential_threads", "repeats")
    )
    return args


def run_config(args: argparse.Namespace, tracking_uri: str, runner: str) -> Any:
    """The comparison; ``runner`` sequential trains with ``--sequential-threads``."""
    from pipeline_core.config import RunConfig, validate_model

    neural = {"embedding_dim": args.embedding, "hidden_size": args.hidden}
    return validate_model(
        RunConfig,
        {
            "data": {
                "source": f"synthetic:markov?length={args.length}",
                "clean": "none",
                "context_len": args.context_len,
            },
            "models": [
                {"plugin": "ngram", "params": {"order": 3}},
                {"plugin": "lstm", "params": neural},
                {"plugin": "gru", "params": neural},
            ],
            "train": {
                "epochs": args.epochs,
                "batch_size": args.batch_size,
                "max_batches_per_epoch": args.batches,
                "num_threads": args.threads if runner == "dask" else args.sequential_threads,
                "seed": 0,
                "progress": False,
            },
            "tracking": {"tracking_uri": tracking_uri, "samples": 0, "gradient_flow": False},
            "execution": {"runner": runner, "dask_workers": args.workers},
            "registry": {"enabled": False},
        },
    )


def run_direct(config: Any) -> dict[str, float]:
    """The stages without Prefect or MLflow: each model's test bpc."""
    from pipeline_core import experiment
    from pipeline_core.training import fit_model, torch_threads

    the_task = experiment.make_task(config)
    resolved = experiment.resolve_models(config.models, the_task, config.train)
    docs = experiment.clean(experiment.ingest(config.data), config.data)
    corpus = experiment.encode(docs, config.data)
    experiment.check_fits(resolved, corpus, the_task)
    bpc = {}
    for item in resolved:
        carry = experiment.carries_state(item)

        def validate(model: Any, carry: bool = carry) -> float:  # as the flow's train task
            return the_task.score(model, corpus, "val", carry).nll

        model = item.plugin_cls.create(len(corpus.vocab), item.config, seed=item.train.seed)
        fit_model(model, experiment.fit_data(corpus), item.train, the_task, validate=validate)
        with torch_threads(item.train.num_threads):
            the_task.score(model, corpus, "val", carry)
            bpc[item.label] = the_task.score(model, corpus, "test", carry).bpc
    return bpc


def leaderboard_figures(result: Any) -> tuple[dict[str, float], dict[str, float]]:
    """(test bpc, train seconds) per model of a comparison's leaderboard."""
    board = result.leaderboard
    rows = board[board["plugin"] != "baseline"]
    bpc = {r.model: float(r.test_bpc) for r in rows.itertuples()}
    train_s = {r.model: float(r.train_s) for r in rows.itertuples()}
    return bpc, train_s


def timed(fn: Any, *args: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    value = fn(*args)
    return value, time.perf_counter() - started


def machine() -> dict[str, Any]:
    import torch

    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "load_avg_1m": load[0],
    }


def print_table(rows: list[tuple[str, str]]) -> None:
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key.ljust(width)}  {value}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="seqlab-bench-runners-") as tmp:
        # the encoded corpus's cache and the MLflow stores live and die with the folder;
        # the Dask workers, spawned later, inherit the setting
        os.environ["SEQLAB_CACHE_DIR"] = str(Path(tmp) / "cache")
        from flows.compare import run_comparison
        from flows.server import prefect_api
        from pipeline_core.tracking import get_tracker

        untracked = run_config(args, "sqlite:///unused.db", "sequential")  # never opened
        warm = untracked.model_copy(deep=True)
        warm.train.epochs, warm.train.max_batches_per_epoch = 1, 1
        run_direct(warm)  # imports (torch's optimizers pull in torch._dynamo), the cache
        seq_config = run_config(args, f"sqlite:///{Path(tmp) / 'sequential.db'}", "sequential")
        dask_config = run_config(args, f"sqlite:///{Path(tmp) / 'dask.db'}", "dask")
        for config in (seq_config, dask_config):  # the stores' tables: made once, untimed
            get_tracker(config.tracking.tracking_uri)
        seconds: dict[str, list[float]] = {"direct": [], "sequential": [], "dask": []}
        with prefect_api():
            for repeat in range(args.repeats):  # A,B,C then C,B,A ...: drifting load evens out
                order = ["direct", "sequential", "dask"]
                for mode in order if repeat % 2 == 0 else order[::-1]:
                    if mode == "direct":
                        direct_bpc, took = timed(run_direct, untracked)
                    elif mode == "sequential":
                        sequential, took = timed(run_comparison, seq_config)
                    else:
                        distributed, took = timed(run_comparison, dask_config)
                    seconds[mode].append(took)
    # each the least disturbed repeat
    direct_s, sequential_s, dask_s = (min(seconds[k]) for k in ("direct", "sequential", "dask"))
    results = [*sequential.results, *distributed.results]
    failed = [f"{r.label}: {r.error}" for r in results if r.failed]
    if failed:
        print("error: " + "; ".join(failed), file=sys.stderr)
        return 1

    seq_bpc, seq_train = leaderboard_figures(sequential)
    dask_bpc, dask_train = leaderboard_figures(distributed)
    ratio = sequential_s / dask_s
    overhead_s = sequential_s - direct_s
    same = max(abs(seq_bpc[m] - dask_bpc[m]) for m in seq_bpc)
    models = list(seq_bpc)
    print()
    print(f"compare flow: sequential vs Dask ({args.workers} worker processes)")
    print_table(
        [
            ("data", f"synthetic:markov?length={args.length} (context {args.context_len})"),
            (
                "models",
                f"ngram order 3, lstm + gru (embedding {args.embedding}, hidden "
                f"{args.hidden}): {args.epochs} epoch(s) x {args.batches} batches of "
                f"{args.batch_size}",
            ),
            (
                "threads",
                f"sequential and direct {args.sequential_threads}, dask {args.threads} per"
                f" model (machine: {os.cpu_count()} cpus)",
            ),
            ("test bpc direct", " ".join(f"{m}={direct_bpc[m]:.4f}" for m in models)),
            ("test bpc flows", " ".join(f"{m}={seq_bpc[m]:.4f}" for m in models)),
            ("flows differ by", f"{same:.2e} bpc at most (sequential vs dask)"),
            ("train s sequential", " ".join(f"{m}={seq_train[m]:.1f}" for m in models)),
            ("train s dask", " ".join(f"{m}={dask_train[m]:.1f}" for m in models)),
            ("repeats", f"{args.repeats}, alternating the order; the best of each below"),
            (
                "seconds per repeat",
                "  ".join(f"{k} " + " ".join(f"{v:.1f}" for v in vs) for k, vs in seconds.items()),
            ),
            ("direct", f"{direct_s:.2f} s (no Prefect, no MLflow)"),
            ("sequential", f"{sequential_s:.2f} s (overhead {overhead_s:.2f} s)"),
            ("dask", f"{dask_s:.2f} s (cluster start and stop included)"),
            ("ratio", f"{ratio:.3f} (sequential / dask)"),
        ]
    )
    if args.json is not None:
        figures = {
            "command": shlex.join([sys.executable, *sys.argv]),
            "machine": machine(),
            "settings": {
                k: getattr(args, k)
                for k in (*FULL, "workers", "threads", "sequential_threads", "repeats")
            },
            "seconds": {"direct": direct_s, "sequential": sequential_s, "dask": dask_s},
            "seconds_per_repeat": seconds,
            "train_seconds": {"sequential": seq_train, "dask": dask_train},
            "test_bpc": {"direct": direct_bpc, "sequential": seq_bpc, "dask": dask_bpc},
            "ratio": ratio,
            "overhead_s": overhead_s,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    print(
        f"ratio={ratio:.3f} sequential_s={sequential_s:.2f} dask_s={dask_s:.2f} "
        f"overhead_s={overhead_s:.2f}"
    )
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
