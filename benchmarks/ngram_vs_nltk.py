"""Benchmark: seqlab's interpolated Kneser-Ney against ``nltk.lm.KneserNeyInterpolated``.

Why: the n-gram baseline must be both fast and right. This fits a character 5-gram on
*Alice in Wonderland* (the tutorial's seed cleaning, train = first 90%, test = last 10%,
contiguous) with both implementations, times fit + scoring of the test characters, and
checks the bits per character agree (seqlab runs with ``nltk_compat=True``, NLTK's exact
formulas; the default textbook variant's bpc is printed for information).

NLTK's KN scans every stored context for each lower-order score, so it is slow; with
``--nltk-sample N`` NLTK scores only N evenly spaced test positions, its scoring time is
extrapolated to the whole test set (said so in the output), and the bpc of both is
compared on that same subset. The last line is machine-readable::

    ratio=<nltk_s/seqlab_s> seqlab_s=<s> nltk_s=<s> seqlab_bpc=<bpc> nltk_bpc=<bpc>

Run: ``.venv/bin/python benchmarks/ngram_vs_nltk.py [--data FILE] [--nltk-sample N]
[--chars N] [--json PATH]`` (``--chars N``: only the first N characters after cleaning,
for the smoke test; ``--json PATH``: the figures as a JSON object).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a plain script

from pipeline_core.cleaning import seed_clean_bytes
from pipeline_core.contract import FitData
from plugins.ngram import NGramModel

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO / ".." / "shared" / "data" / "wonderland.txt"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="text file (UTF-8 bytes)")
    ap.add_argument("--order", type=int, default=5)
    ap.add_argument("--discount", type=float, default=0.75)
    ap.add_argument(
        "--nltk-sample",
        type=int,
        default=None,
        metavar="N",
        help="score NLTK on N evenly spaced test positions and extrapolate its time",
    )
    ap.add_argument(
        "--chars",
        type=int,
        default=None,
        metavar="N",
        help="use only the first N characters after cleaning (smoke test)",
    )
    ap.add_argument("--json", type=Path, default=None, metavar="PATH", help="write figures")
    args = ap.parse_args(argv)
    if args.chars is not None and args.chars < 100:
        ap.error("--chars must be >= 100")
    from nltk.lm import KneserNeyInterpolated
    from nltk.util import everygrams

    chars = list(seed_clean_bytes(args.data.resolve().read_bytes()))
    if args.chars is not None:
        chars = chars[: args.chars]
    cut = int(len(chars) * 0.9)
    train, test = chars[:cut], chars[cut:]
    vocab = ["<unk>", *sorted(set(train))]  # what NLTK's Vocabulary holds (+<UNK>)
    index = {t: i for i, t in enumerate(vocab)}
    full = np.array([index.get(t, 0) for t in chars], dtype=np.int64)
    N = args.order
    positions = np.arange(cut, len(chars))
    print(f"data: {args.data.resolve()} ({len(chars)} chars after seed cleaning)")
    print(
        f"char {N}-gram interpolated Kneser-Ney, discount {args.discount}; "
        f"train {len(train)} chars, test {len(test)} chars, vocab {len(vocab)} (with <unk>)"
    )
    unseen = int((full[positions] == 0).sum())
    if unseen:
        print(f"warning: {unseen} test chars never occur in train (NLTK gives them p=0)")

    # ---- seqlab: fit + score every test position (contexts reach back into train)
    t0 = time.perf_counter()
    model = NGramModel(
        len(vocab),
        {"order": N, "smoothing": "kneser_ney", "discount": args.discount, "nltk_compat": True},
    )
    model.fit(FitData(full[:cut], None, len(vocab), N - 1))
    windows = np.lib.stride_tricks.sliding_window_view(full, N)[positions - N + 1]
    logp = model.score(windows[:, :-1], windows[:, -1])
    seqlab_s = time.perf_counter() - t0
    bits = -logp / math.log(2)
    print(f"seqlab: fit+score {seqlab_s:.3f} s, bpc {bits.mean():.12f} on {len(bits)} chars")
    textbook = NGramModel(len(vocab), {"order": N, "discount": args.discount})
    textbook.fit(FitData(full[:cut], None, len(vocab), N - 1))
    tb_bpc = float(-textbook.score(windows[:, :-1], windows[:, -1]).mean() / math.log(2))
    print(f"seqlab (default, textbook KN with uniform base): bpc {tb_bpc:.6f} (information)")

    # ---- NLTK: fit + score the same positions (or an evenly spaced subset)
    if args.nltk_sample is not None and args.nltk_sample < len(positions):
        pick = np.unique(np.linspace(0, len(positions) - 1, args.nltk_sample).round().astype(int))
    else:
        pick = np.arange(len(positions))
    t0 = time.perf_counter()
    lm = KneserNeyInterpolated(N, discount=args.discount)
    lm.fit([everygrams(train, max_len=N)], vocabulary_text=train)
    fit_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    ngrams = [tuple(chars[p - N + 1 : p + 1]) for p in positions[pick]]
    nltk_bpc = lm.entropy(ngrams)
    score_s = time.perf_counter() - t1
    sampled = len(pick) < len(positions)
    nltk_s = fit_s + score_s * (len(positions) / len(pick))
    seqlab_bpc = float(bits[pick].mean())
    if sampled:
        print(
            f"nltk: fit {fit_s:.2f} s, scored {len(pick)} of {len(positions)} test positions "
            f"(evenly spaced) in {score_s:.2f} s; time EXTRAPOLATED to all: {nltk_s:.1f} s"
        )
        print(
            f"bpc compared on that subset of {len(pick)} positions: "
            f"seqlab {seqlab_bpc:.12f}, nltk {nltk_bpc:.12f}"
        )
    else:
        print(
            f"nltk: fit {fit_s:.2f} s + score {score_s:.2f} s = {nltk_s:.2f} s, "
            f"bpc {nltk_bpc:.12f} on all {len(pick)} test chars"
        )
    diff = abs(seqlab_bpc - nltk_bpc)
    print(f"|bpc difference| = {diff:.3e} ({'equal to 1e-9' if diff <= 1e-9 else 'DIFFERENT'})")
    print(f"seqlab is {nltk_s / seqlab_s:.0f}x faster")
    if args.json is not None:
        figures = {
            "settings": {
                "data": os.path.relpath(args.data.resolve(), REPO),
                "chars": len(chars),
                "order": N,
                "discount": args.discount,
                "train_chars": len(train),
                "test_chars": len(test),
                "vocab_size": len(vocab),
                "nltk_scored": len(pick),
                "nltk_extrapolated": sampled,
            },
            "seqlab_s": seqlab_s,
            "nltk_fit_s": fit_s,
            "nltk_score_s": score_s,
            "nltk_s": nltk_s,
            "ratio": nltk_s / seqlab_s,
            "seqlab_bpc": seqlab_bpc,
            "nltk_bpc": nltk_bpc,
            "bpc_abs_diff": diff,
            "textbook_bpc": tb_bpc,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    print(
        f"ratio={nltk_s / seqlab_s:.1f} seqlab_s={seqlab_s:.4f} nltk_s={nltk_s:.2f} "
        f"seqlab_bpc={seqlab_bpc:.10f} nltk_bpc={nltk_bpc:.10f}"
    )
    return 0 if diff <= 1e-9 else 1


if __name__ == "__main__":
    raise SystemExit(main())
