"""Benchmark: seqlab's best wonderland setup beside the adaptive compressors, in one run.

Why its own name: the ``compressors`` benchmark measures every plugin at one small size
on both corpora; this one runs the tuned configuration the quality targets are about,
``configs/alice-mixture-lstm.yaml`` (the tuned LSTM alone, and mixed with Kneser-Ney
n-grams of orders 3 to 9; every model also scored dynamically), on seed-cleaned
wonderland, beside gzip, bzip2, xz and PPMd measured in the same process on the same
test text. It is ``compressors --config FILE --corpora wonderland`` with those
defaults (about 25 minutes on 2 CPUs); any compressors option can be added, e.g.
``--config`` another file or ``--corpora`` others.

Run: ``python -m benchmarks quality [compressors options]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a plain script

from benchmarks import compressors

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "configs" / "alice-mixture-lstm.yaml"
DEFAULTS = {"--config": str(DEFAULT_CONFIG.relative_to(REPO)), "--corpora": "wonderland"}


def with_defaults(argv: list[str]) -> list[str]:
    """``argv`` plus every default it does not set (``--models`` replaces ``--config``)."""
    given = {a.split("=", 1)[0] for a in argv if a.startswith("--")}
    out = list(argv)
    for option, value in DEFAULTS.items():
        if option in given or (option == "--config" and "--models" in given):
            continue
        if option == "--config" and Path.cwd().resolve() != REPO:
            value = str(REPO / value)  # the recorded command names it as it was found
        out = [option, value, *out]
    return out


def main(argv: list[str] | None = None) -> int:
    return compressors.main(with_defaults(list(sys.argv[1:] if argv is None else argv)))


if __name__ == "__main__":
    raise SystemExit(main())
