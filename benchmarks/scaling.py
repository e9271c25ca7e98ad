"""Benchmark: ingest -> clean -> vectorize on growing corpora: peak memory and seconds.

Why: seqlab keeps the corpus as one small-integer array and cuts windows as strided
views, so its memory should grow with the text alone and its time linearly; the
tutorial's one-hot tensors grow with text x window x vocabulary. For each size (default
1, 10 and 100 MB, MB = 10^6 bytes of UTF-8) this builds a corpus file in a temporary
folder by concatenating the three shared texts (``wonderland.txt``,
``tiny-shakespeare.txt``, ``nottingham-jigs.txt`` from ``../shared/data``) and repeating
them until the size is reached (the last copy cut at a character boundary), and runs the
stages ``seqlab run`` runs, through the functions its flow calls
(``pipeline_core.experiment.ingest``, ``clean`` and ``encode``, the last with its
on-disk cache) with the tutorial's settings: ``clean: seed``, ``level: char``,
``context_len`` 10.

Each measurement runs in a fresh Python process (``python -m benchmarks.scaling --one
FILE``) with a fresh, empty ``SEQLAB_CACHE_DIR``, so every one is cold (the encoded
corpus is computed and written to the cache, never read from it) and the peak resident
memory (``VmHWM`` of that process, :func:`peak_rss_mib`; also after each stage) is
this stage chain's alone. Every process first runs the chain, untimed, on a 5 kB corpus
(the stages' lazy imports and first calls); a baseline process does only that: its peak
is the interpreter's and the libraries' own (torch, pandas), and ``data`` = peak -
baseline is the data's.

Linearity: seconds per MB at each size divided by seconds per MB at the smallest, all
measured side by side in one run (1 = linear; above 1 = super-linear). With
``--repeats R`` (default 3) each size is measured R times, the sizes in alternating
order, and keeps its fastest total (every repeat's is printed) and its highest peak.

The tutorial's one-hot tensors, computed, never allocated: ``X`` of shape (n_windows,
10, vocab) and ``y`` of shape (n_windows, vocab), numpy bool (1 byte each), windows at
step 1, so ``n_windows = n_chars - 10`` and ``vocab`` = the distinct characters of the
cleaned text; also as float32 (4 bytes, what the model consumes), and each's ratio to
seqlab's peak.

The last line is machine-readable::

    linearity=<s/MB largest / s/MB smallest> max_peak_mib=<MiB> target_met=<true|false>

Run: ``.venv/bin/python -m benchmarks scaling [--sizes 1,10,100] [--quick]`` (or this
file with ``--json PATH``); ``--quick``: 0.25 and 1 MB, the smoke test.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a plain script

from benchmarks.presets import add_output_options

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = REPO.parent / "shared" / "data"
TEXTS = ("wonderland.txt", "tiny-shakespeare.txt", "nottingham-jigs.txt")
MB = 1_000_000
MIB = 2**20
FULL_SIZES = (1.0, 10.0, 100.0)
QUICK_SIZES = (0.25, 1.0)
TARGET_MIB = 2048
#: the tutorial's window (SEQ_LEN) and its bool / the model's float32 element sizes
SEQ_LEN = 10
BOOL_BYTES, FLOAT32_BYTES = 1, 4
STAGES = ("ingest", "clean", "vectorize")
CHILD_TIMEOUT_S = 1800
FULL_REPEATS = 3
#: the untimed warm-up corpus every child runs first (lazy imports, first calls)
WARMUP_BYTES = 5000


class SizesError(ValueError):
    """A ``--sizes`` value that is not a list of positive numbers."""


def parse_sizes(value: str) -> tuple[float, ...]:
    """``1,10,100`` -> sizes in MB, each > 0, ascending (the smallest is the reference)."""
    sizes = []
    for part in value.split(","):
        try:
            size = float(part)
        except ValueError:
            raise SizesError(f"{part.strip()!r} is not a number") from None
        if not math.isfinite(size) or size * MB < 1000:
            raise SizesError(f"{part.strip()} is not a size in MB >= 0.001")
        sizes.append(size)
    if len(set(sizes)) != len(sizes):
        raise SizesError("a size is given twice")
    return tuple(sorted(sizes))


def size_label(size_mb: float) -> str:
    """``1.0`` -> ``1``, ``0.05`` -> ``0.05``: the JSON key of a size."""
    return f"{size_mb:g}"


# ---- corpora -------------------------------------------------------------------------
def build_corpus(dest: Path, n_bytes: int, data_dir: Path = DATA_DIR) -> int:
    """Write the shared texts, concatenated and repeated, cut to at most ``n_bytes``
    at a UTF-8 character boundary; the bytes written."""
    parts = [(data_dir / name).read_bytes() for name in TEXTS]
    unit = b"".join(p if p.endswith(b"\n") else p + b"\n" for p in parts)
    whole, rest = divmod(n_bytes, len(unit))
    while 0 < rest < len(unit) and unit[rest] & 0xC0 == 0x80:
        rest -= 1  # the cut is inside a multi-byte character: back to its start
    with dest.open("wb") as fh:
        for _ in range(whole):
            fh.write(unit)
        fh.write(unit[:rest])
    return whole * len(unit) + rest


# ---- one measurement, in its own process ---------------------------------------------
def peak_rss_mib() -> float:
    """This process's peak resident memory so far: ``VmHWM`` (KiB) where Linux has it.

    Not ``ru_maxrss`` there: Linux carries it across ``exec`` from the process that
    spawned this one, so a child of a large parent (``python -m benchmarks all``, after
    the models' benchmarks) would report the parent's peak, not its own."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_stages(source: Path) -> tuple[dict[str, float], dict[str, float], Any, str]:
    """ingest -> clean -> encode as the flow chains them: seconds and peak RSS after
    each stage, the encoded corpus and the text it encoded."""
    from pipeline_core import experiment
    from pipeline_core.config import DataConfig

    data = DataConfig(source=str(source), clean="seed", level="char", context_len=SEQ_LEN)
    seconds: dict[str, float] = {}
    peaks: dict[str, float] = {}
    t0 = time.perf_counter()
    raw = experiment.ingest(data)
    seconds["ingest"] = time.perf_counter() - t0
    peaks["ingest"] = peak_rss_mib()
    t0 = time.perf_counter()
    docs = experiment.clean(raw, data)
    seconds["clean"] = time.perf_counter() - t0
    del raw  # as in the flow: clean_task(ingest_task(...)) keeps only the cleaned table
    peaks["clean"] = peak_rss_mib()
    t0 = time.perf_counter()
    corpus = experiment.encode(docs, data)  # windows=True: the next-token task's call
    seconds["vectorize"] = time.perf_counter() - t0
    peaks["vectorize"] = peak_rss_mib()
    return seconds, peaks, corpus, "\n\n".join(docs["text"])  # what encode vectorized


def measure_one(source: Path | None, warmup: Path) -> dict[str, Any]:
    """In this process: the stage chain once on the tiny ``warmup`` corpus (its lazy
    imports and first-call costs, untimed), then on ``source`` (None: nothing more,
    the baseline)."""
    run_stages(warmup)
    if source is None:
        return {"peak_rss_mib": peak_rss_mib()}
    seconds, peaks, corpus, text = run_stages(source)
    return {
        "seconds": seconds,
        "peak_after_mib": peaks,
        "peak_rss_mib": max(peaks.values()),
        "cache": corpus.cache,
        "n_chars": len(text),
        "vocab": len(set(text)),
        "n_ids": len(corpus.ids),
        "ids_dtype": str(corpus.ids.dtype),
    }


def run_child(source: Path | None, warmup: Path, cache_dir: Path, out: Path) -> dict[str, Any]:
    """:func:`measure_one` in a fresh interpreter with ``cache_dir`` as its seqlab cache."""
    cmd = [sys.executable, "-m", "benchmarks.scaling", "--one", str(source or "")]
    env = {**os.environ, "SEQLAB_CACHE_DIR": str(cache_dir)}
    proc = subprocess.run(
        [*cmd, "--warmup", str(warmup), "--out", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
    )
    if proc.returncode != 0 or not out.is_file():
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"measuring {source or 'the baseline'} failed: {tail}")
    result: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    return result


# ---- figures -------------------------------------------------------------------------
def onehot_bytes(n_chars: int, vocab: int, itemsize: int) -> int:
    """The tutorial's X (n_windows, SEQ_LEN, vocab) plus y (n_windows, vocab)."""
    n_windows = max(n_chars - SEQ_LEN, 0)
    return n_windows * SEQ_LEN * vocab * itemsize + n_windows * vocab * itemsize


def size_figures(n_bytes: int, measured: dict[str, Any], baseline_mib: float) -> dict[str, Any]:
    seconds = measured["seconds"]
    total = sum(seconds[s] for s in STAGES)
    peak = measured["peak_rss_mib"]
    n_chars, vocab = measured["n_chars"], measured["vocab"]
    bool_mib = onehot_bytes(n_chars, vocab, BOOL_BYTES) / MIB
    float_mib = onehot_bytes(n_chars, vocab, FLOAT32_BYTES) / MIB
    return {
        "bytes": n_bytes,
        "n_chars": n_chars,
        "vocab": vocab,
        "ids_dtype": measured["ids_dtype"],
        "cache": measured["cache"],
        "seconds": {**{s: seconds[s] for s in STAGES}, "total": total},
        "mb_per_s": n_bytes / MB / total,
        "s_per_mb": total / (n_bytes / MB),
        "peak_rss_mib": peak,
        "data_rss_mib": peak - baseline_mib,
        "peak_after_mib": measured["peak_after_mib"],
        "onehot": {
            "n_windows": max(n_chars - SEQ_LEN, 0),
            "bool_mib": bool_mib,
            "float32_mib": float_mib,
            "bool_over_peak": bool_mib / peak,
            "float32_over_peak": float_mib / peak,
        },
    }


def fmt_mib(mib: float) -> str:
    return f"{mib / 1024:.2f} GiB" if mib >= 1024 else f"{mib:.0f} MiB"


def print_table(rows: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        print(
            "  ".join(
                c.rjust(w) if i else c.ljust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if n == 0:
            print("  ".join("-" * w for w in widths))


def report(figures: dict[str, Any]) -> None:
    sizes, baseline = figures["sizes"], figures["baseline_rss_mib"]
    header = ["size MB", "chars", "vocab", *[f"{s} s" for s in STAGES], "total s", "MB/s"]
    header += ["s/MB ratio", "peak RSS", "data RSS", "one-hot bool", "one-hot f32", "f32/peak"]
    rows = [header]
    for label, f in sizes.items():
        s = f["seconds"]
        rows.append(
            [
                label,
                f"{f['n_chars']:,}",
                str(f["vocab"]),
                *[f"{s[st]:.2f}" for st in STAGES],
                f"{s['total']:.2f}",
                f"{f['mb_per_s']:.2f}",
                f"{f['s_per_mb_ratio']:.2f}",
                fmt_mib(f["peak_rss_mib"]),
                fmt_mib(f["data_rss_mib"]),
                fmt_mib(f["onehot"]["bool_mib"]),
                fmt_mib(f["onehot"]["float32_mib"]),
                f"{f['onehot']['float32_over_peak']:.3g}x",
            ]
        )
    print()
    print(
        "ingest -> clean (seed) -> vectorize (char, cold cache), each size in a fresh "
        f"process; baseline RSS (imports only) {fmt_mib(baseline)}"
    )
    print_table(rows)
    totals = "; ".join(
        f"{label} MB " + " ".join(f"{t:.2f}" for t in f["repeat_totals_s"])
        for label, f in sizes.items()
    )
    print(f"total s of each repeat (the fastest is in the table): {totals}")
    summary = figures["summary"]
    met = "met" if summary["target_met"] else "NOT met"
    print(
        f"max peak RSS {fmt_mib(summary['max_peak_mib'])} (target {TARGET_MIB} MiB: {met}); "
        f"s/MB at {summary['largest_mb']:g} MB / at {summary['smallest_mb']:g} MB = "
        f"{summary['linearity_ratio']:.2f} (1 = linear)"
    )


def measure_all(
    sizes: tuple[float, ...], repeats: int, data_dir: Path
) -> tuple[float, dict[str, Any]]:
    """The baseline's peak RSS and each size's figures: ``repeats`` measurements of
    each, the sizes in alternating order (1, 10, 100, 100, 10, 1, ...) so that a load
    drifting over the run evens out; each size keeps its fastest measurement's seconds
    and the highest peak RSS of all of them."""
    with tempfile.TemporaryDirectory(prefix="seqlab-bench-scaling-") as tmp_name:
        tmp = Path(tmp_name)
        warmup = tmp / "warmup.txt"
        build_corpus(warmup, WARMUP_BYTES, data_dir)
        baseline = run_child(None, warmup, tmp / "cache-baseline", tmp / "baseline.json")
        files = {size_label(s): tmp / f"corpus-{size_label(s)}MB.txt" for s in sizes}
        n_bytes = {
            label: build_corpus(path, round(float(label) * MB), data_dir)
            for label, path in files.items()
        }
        runs: dict[str, list[dict[str, Any]]] = {label: [] for label in files}
        for repeat in range(repeats):
            order = list(files) if repeat % 2 == 0 else list(files)[::-1]
            for label in order:
                cache = tmp / f"cache-{label}-{repeat}"  # fresh: every measurement is cold
                out = tmp / f"{label}-{repeat}.json"
                runs[label].append(run_child(files[label], warmup, cache, out))
                shutil.rmtree(cache, ignore_errors=True)  # the disk back: 1 byte a char
    per_size = {}
    for label, measured in runs.items():
        best = min(measured, key=lambda m: sum(m["seconds"].values()))
        best = {**best, "peak_rss_mib": max(m["peak_rss_mib"] for m in measured)}
        figures = size_figures(n_bytes[label], best, baseline["peak_rss_mib"])
        figures["repeat_totals_s"] = [sum(m["seconds"].values()) for m in measured]
        per_size[label] = figures
    return float(baseline["peak_rss_mib"]), per_size


# ---- entry points --------------------------------------------------------------------
def child_main(args: argparse.Namespace) -> int:
    source = Path(args.one) if args.one else None
    result = measure_one(source, Path(args.warmup))
    Path(args.out).write_text(json.dumps(result), encoding="utf-8")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--sizes", default=None, help="corpus sizes in MB, comma-separated")
    ap.add_argument("--data-dir", type=Path, default=DATA_DIR, help="folder of the texts")
    ap.add_argument(
        "--repeats", type=int, default=None, help="measurements of each size (default 3; 1 quick)"
    )
    add_output_options(ap, quick_help="tiny sizes, one repeat (smoke test)")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # the child's source
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)  # the child's result
    ap.add_argument("--warmup", default=None, help=argparse.SUPPRESS)  # the child's warm-up
    args = ap.parse_args(argv)
    if args.one is not None:
        return child_main(args)
    try:
        sizes = QUICK_SIZES if args.quick else FULL_SIZES
        if args.sizes is not None:
            sizes = parse_sizes(args.sizes)
    except SizesError as err:
        print(f"error: --sizes: {err}", file=sys.stderr)
        return 2
    if args.repeats is None:
        args.repeats = 1 if args.quick else FULL_REPEATS
    if args.repeats < 1:
        print(f"error: --repeats: must be >= 1 (got {args.repeats})", file=sys.stderr)
        return 2
    missing = [n for n in TEXTS if not (args.data_dir / n).is_file()]
    if missing:
        print(f"error: --data-dir: {args.data_dir} lacks {', '.join(missing)}", file=sys.stderr)
        return 2

    try:
        baseline_mib, per_size = measure_all(sizes, args.repeats, args.data_dir)
    except (RuntimeError, subprocess.TimeoutExpired) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    smallest = per_size[size_label(sizes[0])]
    for f in per_size.values():
        f["s_per_mb_ratio"] = f["s_per_mb"] / smallest["s_per_mb"]
    largest = per_size[size_label(sizes[-1])]
    max_peak = max(f["peak_rss_mib"] for f in per_size.values())
    figures: dict[str, Any] = {
        "settings": {
            "sizes_mb": list(sizes),
            "texts": list(TEXTS),
            "clean": "seed",
            "level": "char",
            "context_len": SEQ_LEN,
            "cache": "cold: a fresh SEQLAB_CACHE_DIR per measurement",
            "repeats": args.repeats,
            "quick": args.quick,
        },
        "baseline_rss_mib": baseline_mib,
        "sizes": per_size,
        "summary": {
            "smallest_mb": sizes[0],
            "largest_mb": sizes[-1],
            "max_peak_mib": max_peak,
            "target_mib": TARGET_MIB,
            "target_met": max_peak <= TARGET_MIB,
            "linearity_ratio": largest["s_per_mb_ratio"],
            "onehot_float32_over_peak_largest": largest["onehot"]["float32_over_peak"],
        },
    }
    report(figures)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    summary = figures["summary"]
    print(
        f"linearity={summary['linearity_ratio']:.3f} max_peak_mib={max_peak:.0f} "
        f"target_met={str(summary['target_met']).lower()}"
    )
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
