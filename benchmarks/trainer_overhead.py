"""Benchmark: the seqlab Trainer's overhead against a bare PyTorch loop, and O(N) scoring.

Why: the one Trainer carries callbacks, a rich progress bar, MLflow logging and per-epoch
checkpoints; none of that should cost training speed. Part 1 trains the same 2x256 LSTM
(``plugins.lstm.LSTMModel``: embedding 64, hidden 256, 2 layers) on the same batches of
*Alice in Wonderland* (seed cleaning, characters; the next-token task's batches, objective
``all``, the same batch size, thread count and number of batches) two ways:

* **seqlab**: ``fit_model`` (the Trainer) with ``progress=True`` and the real
  ``MlflowMetrics`` and ``MlflowCheckpoint`` callbacks on a real ``Tracker`` (a SQLite
  store in a temporary folder), one epoch of ``--batches`` batches, timed end to end:
  Trainer construction, the loop, the progress bar, the epoch's metrics and checkpoint.
  Validation is the one thing left out (a validator that returns NaN): the bare loop has
  none;
* **bare**: embedding -> LSTM -> linear, cross-entropy, backward, ``clip_grad_norm_``,
  Adam step, on its own copy of the model (same seed), no callbacks.

On a shared machine the load swings tenfold within a minute, so by default
(``--interleave batch``) the two loops alternate batch by batch within one epoch: the
task's batch iterator, as the Trainer pulls each batch, also puts it through the bare loop
(just before the Trainer's step on odd repeats, just after on even ones) and times that
step. seqlab's time is the whole ``fit_model`` less those bare steps; the bare loop's is
its steps plus building the batches, which both need. Both then see the same noise (the
progress bar's refresh thread, which runs during both loops' steps there, too).
``--interleave epoch`` alternates whole epochs instead (A,B then B,A ...). Either way the
figures are each loop's best repeat (the least disturbed), with every repeat's ratio in
the table; tokens are the targets trained on.

Part 2 times the scoring of the test split at ``--context-len`` with the same (untrained)
LSTM: windows (each token after a fresh pass over its context) against the carried state
(one O(N) pass).

The last two lines are machine-readable, the ratio line last::

    score_speedup=<windowed_s/stateful_s> windowed_s=<s> stateful_s=<s>
    ratio=<seqlab/bare> seqlab_tok_s=<n> bare_tok_s=<n>

Run: ``.venv/bin/python benchmarks/trainer_overhead.py [--batches N] [--repeats R]
[--context-len T] [--hidden H] [--json PATH]`` (``--quick``: tiny sizes, for the smoke
test).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a plain script

from benchmarks.presets import add_output_options, apply_preset
from pipeline_core.callbacks import MlflowCheckpoint, MlflowMetrics
from pipeline_core.config import DataConfig, TrainConfig
from pipeline_core.contract import seed_everything
from pipeline_core.experiment import clean, encode, fit_data, ingest
from pipeline_core.metrics import evaluate
from pipeline_core.tasks import Batch, Task, get_task
from pipeline_core.tasks.next_token import NextTokenTask
from pipeline_core.tracking import Tracker
from pipeline_core.training import fit_model
from pipeline_core.vectorize import EncodedCorpus
from plugins.lstm import LSTMModel

DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "wonderland.txt"
FULL = {
    "batches": 25,
    "repeats": 3,
    "context_len": 100,
    "hidden": 256,
    "embedding": 64,
    "layers": 2,
    "batch_size": 64,
}
QUICK = {
    "batches": 3,
    "repeats": 1,
    "context_len": 16,
    "hidden": 16,
    "embedding": 8,
    "layers": 2,
    "batch_size": 8,
}
WARMUP_BATCHES = 2


@dataclass
class Setup:
    corpus: EncodedCorpus
    task: Task
    settings: TrainConfig
    model_params: dict[str, Any]
    tokens: int  # targets in the measured batches


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="text file")
    ap.add_argument("--batches", type=int, help="training batches per measurement")
    ap.add_argument("--repeats", type=int, help="measurements of each loop")
    ap.add_argument(
        "--interleave",
        choices=("batch", "epoch"),
        default="batch",
        help="alternate the loops batch by batch (default) or epoch by epoch",
    )
    ap.add_argument("--context-len", type=int, help="window length for training and scoring")
    ap.add_argument("--hidden", type=int, help="LSTM hidden size")
    ap.add_argument("--embedding", type=int, help="embedding size")
    ap.add_argument("--layers", type=int, help="stacked LSTM layers")
    ap.add_argument("--batch-size", type=int, help="windows per batch")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    add_output_options(ap)
    args = ap.parse_args(argv)
    if args.threads is None:
        args.threads = torch.get_num_threads()
    apply_preset(ap, args, FULL, QUICK, positive=("threads",))
    return args


def prepare(args: argparse.Namespace) -> Setup:
    data = DataConfig(
        source=str(args.data.resolve()), clean="seed", level="char", context_len=args.context_len
    )
    corpus = encode(clean(ingest(data), data), data)
    settings = TrainConfig(
        epochs=1,
        batch_size=args.batch_size,
        optimizer="adam",
        objective="all",
        bptt="windows",
        max_batches_per_epoch=args.batches,
        num_threads=args.threads,
        progress=True,
        device="cpu",
    )
    task = get_task("next-token")
    fd = fit_data(corpus)
    tokens = sum(b.n_targets for b in task.batches(fd.train, fd.context_len, fd.step, settings, 1))
    params = {"embedding_dim": args.embedding, "hidden_size": args.hidden}
    params["num_layers"] = args.layers
    return Setup(corpus, task, settings, params, tokens)


def new_model(setup: Setup) -> LSTMModel:
    seed_everything(setup.settings.seed)
    return LSTMModel(len(setup.corpus.vocab), setup.model_params)


def no_validation(model: Any) -> float:
    """The bare loop validates nothing; neither does the measured Trainer."""
    return float("nan")


def time_seqlab(
    setup: Setup, settings: TrainConfig, tracker: Tracker, name: str, task: Task
) -> float:
    """Seconds for one Trainer epoch (``fit_model``), end to end: Trainer construction,
    the loop with its progress bar, the epoch's MLflow metrics and checkpoint."""
    model = new_model(setup)
    run = tracker.start_run(name, experiment="trainer-overhead")
    callbacks = [
        MlflowMetrics(tracker, run, get_task("next-token").tokens_per_char(setup.corpus, "val")),
        MlflowCheckpoint(tracker, run),
    ]
    started = time.perf_counter()
    fit_model(
        model,
        fit_data(setup.corpus),
        settings,
        task=task,
        callbacks=callbacks,
        validate=no_validation,
    )
    seconds = time.perf_counter() - started
    tracker.end(run)
    return seconds


class BareLoop:
    """The bare PyTorch loop, one batch at a time, on its own copy of the model:
    embedding -> LSTM -> linear, cross-entropy, backward, clip_grad_norm_, Adam step."""

    def __init__(self, setup: Setup, settings: TrainConfig) -> None:
        self.model = new_model(setup)
        self.model.train()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=settings.lr)
        self.clip = settings.clip_norm if settings.clip_norm is not None else float("inf")

    def step(self, batch: Batch) -> None:
        model, optimizer = self.model, self.optimizer
        x = torch.from_numpy(batch.inputs)
        y = torch.from_numpy(batch.targets)
        optimizer.zero_grad(set_to_none=True)
        hidden, _ = model.rnn(model.embedding(x))
        logits = model.head(hidden)
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), y.reshape(-1)
        )
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), self.clip)
        optimizer.step()


def time_bare(setup: Setup, settings: TrainConfig) -> float:
    """Seconds for the task's batches (built on the fly) through the bare loop."""
    fd = fit_data(setup.corpus)
    bare = BareLoop(setup, settings)
    started = time.perf_counter()
    for batch in setup.task.batches(fd.train, fd.context_len, fd.step, settings, 1):
        bare.step(batch)
    return time.perf_counter() - started


class InterleavedTask(NextTokenTask):
    """The next-token task's own batches, each also put through the bare loop just before
    (``bare_first``) or just after the Trainer's step on it; the bare steps are timed,
    and so is building the batches, which both loops need."""

    def __init__(self, bare: BareLoop, bare_first: bool) -> None:
        super().__init__()
        self.bare, self.bare_first = bare, bare_first
        self.bare_s = 0.0
        self.build_s = 0.0

    def batches(
        self, train: np.ndarray, context_len: int, step: int, train_cfg: TrainConfig, epoch: int
    ) -> Iterator[Batch]:
        clock = time.perf_counter
        inner = super().batches(train, context_len, step, train_cfg, epoch)
        while True:
            t0 = clock()
            batch = next(inner, None)
            t1 = clock()
            self.build_s += t1 - t0
            if batch is None:
                return
            if self.bare_first:
                self.bare.step(batch)
                self.bare_s += clock() - t1
            yield batch
            if not self.bare_first:
                t2 = clock()
                self.bare.step(batch)
                self.bare_s += clock() - t2


def time_interleaved(
    setup: Setup, settings: TrainConfig, tracker: Tracker, name: str, bare_first: bool
) -> tuple[float, float]:
    """(seqlab s, bare s) for one epoch, the two loops alternating batch by batch: seqlab's
    is the Trainer's whole fit (end to end) less the bare steps run inside it."""
    task = InterleavedTask(BareLoop(setup, settings), bare_first)
    fit_s = time_seqlab(setup, settings, tracker, name, task)
    return fit_s - task.bare_s, task.bare_s + task.build_s


def measure_training(
    setup: Setup, repeats: int, tracker: Tracker, interleave: str
) -> dict[str, list[float]]:
    """Seconds per repeat of each loop, after an unmeasured warm-up of both. ``batch``:
    both loops in one epoch, alternating batch by batch (the bare step first on odd
    repeats, second on even ones); ``epoch``: whole epochs, A,B then B,A ..."""
    warm = setup.settings.model_copy(update={"max_batches_per_epoch": WARMUP_BATCHES})
    time_interleaved(setup, warm, tracker, "warm-up", bare_first=True)
    seconds: dict[str, list[float]] = {"seqlab": [], "bare": []}
    for i in range(repeats):
        name = f"repeat {i + 1}"
        if interleave == "batch":
            seqlab_s, bare_s = time_interleaved(
                setup, setup.settings, tracker, name, bare_first=i % 2 == 0
            )
        elif i % 2 == 0:
            seqlab_s = time_seqlab(setup, setup.settings, tracker, name, setup.task)
            bare_s = time_bare(setup, setup.settings)
        else:
            bare_s = time_bare(setup, setup.settings)
            seqlab_s = time_seqlab(setup, setup.settings, tracker, name, setup.task)
        seconds["seqlab"].append(seqlab_s)
        seconds["bare"].append(bare_s)
    return seconds


def measure_scoring(setup: Setup) -> dict[str, float]:
    """Test-split scoring: windows against the carried state (best of two for the latter)."""
    model = new_model(setup)
    model.eval()
    corpus = setup.corpus
    t0 = time.perf_counter()
    stateful = evaluate(model, corpus, "test", carry_state=True)
    t1 = time.perf_counter()
    windowed = evaluate(model, corpus, "test", carry_state=False)
    t2 = time.perf_counter()
    evaluate(model, corpus, "test", carry_state=True)
    t3 = time.perf_counter()
    return {
        "windowed_s": t2 - t1,
        "stateful_s": min(t1 - t0, t3 - t2),
        "n_tokens": float(stateful.n_tokens),
        "windowed_nll": windowed.nll,
        "stateful_nll": stateful.nll,
    }


def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }


def print_table(rows: list[tuple[str, str]]) -> None:
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key.ljust(width)}  {value}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    setup = prepare(args)
    with tempfile.TemporaryDirectory(prefix="seqlab-bench-") as tmp:
        tracker = Tracker(f"sqlite:///{Path(tmp) / 'mlruns.db'}")
        seconds = measure_training(setup, args.repeats, tracker, args.interleave)
    score = measure_scoring(setup)

    tok_s = {k: [setup.tokens / s for s in v] for k, v in seconds.items()}
    headline = {k: max(v) for k, v in tok_s.items()}  # the least disturbed repeat of each
    ratio = headline["seqlab"] / headline["bare"]
    per_repeat = [a / b for a, b in zip(tok_s["seqlab"], tok_s["bare"], strict=True)]
    speedup = score["windowed_s"] / score["stateful_s"]

    corpus, params = setup.corpus, setup.model_params
    print()
    print("seqlab Trainer (progress bar, MLflow metrics + checkpoint) vs bare PyTorch loop")
    print_table(
        [
            ("data", f"{args.data.resolve()} (seed cleaning, char, vocab {len(corpus.vocab)})"),
            (
                "model",
                f"LSTM {params['num_layers']}x{params['hidden_size']}, "
                f"embedding {params['embedding_dim']}",
            ),
            (
                "batches",
                f"{args.batches} x {args.batch_size} windows of {args.context_len} "
                f"(objective all) = {setup.tokens} target tokens per repeat",
            ),
            ("threads", f"{args.threads} (machine: {os.cpu_count()} cpus)"),
            ("interleave", f"{args.interleave}, {args.repeats} repeats after a warm-up"),
            ("seqlab tok/s", " ".join(f"{v:.0f}" for v in tok_s["seqlab"])),
            ("bare tok/s", " ".join(f"{v:.0f}" for v in tok_s["bare"])),
            (
                "ratio per repeat",
                " ".join(f"{v:.3f}" for v in per_repeat)
                + f" (median {statistics.median(per_repeat):.3f})",
            ),
            (
                "ratio",
                f"{ratio:.3f} (best repeat of each: seqlab {headline['seqlab']:.0f}, "
                f"bare {headline['bare']:.0f} tok/s)",
            ),
            (
                "scoring (test)",
                f"{int(score['n_tokens'])} tokens at context {args.context_len}: windows "
                f"{score['windowed_s']:.2f} s, carried state {score['stateful_s']:.3f} s",
            ),
        ]
    )
    if args.json is not None:
        figures = {
            "command": shlex.join([sys.executable, *sys.argv]),
            "machine": machine(),
            "settings": {
                "data": str(args.data.resolve()),
                "batches": args.batches,
                "repeats": args.repeats,
                "interleave": args.interleave,
                "context_len": args.context_len,
                "batch_size": args.batch_size,
                "threads": args.threads,
                "model": params,
                "vocab_size": len(corpus.vocab),
                "tokens_per_repeat": setup.tokens,
            },
            "train": {
                "seqlab_seconds": seconds["seqlab"],
                "bare_seconds": seconds["bare"],
                "seqlab_tok_s": tok_s["seqlab"],
                "bare_tok_s": tok_s["bare"],
                "ratio_per_repeat": per_repeat,
                "ratio_per_repeat_median": statistics.median(per_repeat),
                "seqlab_tok_s_best": headline["seqlab"],
                "bare_tok_s_best": headline["bare"],
                "ratio": ratio,
            },
            "score": {**score, "speedup": speedup},
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    print(
        f"score_speedup={speedup:.1f} windowed_s={score['windowed_s']:.3f} "
        f"stateful_s={score['stateful_s']:.3f}"
    )
    print(
        f"ratio={ratio:.3f} seqlab_tok_s={headline['seqlab']:.0f} bare_tok_s={headline['bare']:.0f}"
    )
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
