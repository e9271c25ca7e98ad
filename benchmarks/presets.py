"""Command-line plumbing every benchmark shares: ``--quick``/``--json`` and the sizes a
preset fills in. Why one place: each benchmark has a full preset (the recorded figures)
and a quick one (the smoke test), and a size left out on the command line must come from
the chosen preset and be checked the same way everywhere."""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any


def add_output_options(
    ap: argparse.ArgumentParser, quick_help: str = "tiny sizes (smoke test)"
) -> None:
    """``--quick`` (the smoke-test preset) and ``--json PATH`` (where figures go)."""
    ap.add_argument("--quick", action="store_true", help=quick_help)
    ap.add_argument("--json", type=Path, default=None, metavar="PATH", help="write figures")


def apply_preset(
    ap: argparse.ArgumentParser,
    args: argparse.Namespace,
    full: Mapping[str, Any],
    quick: Mapping[str, Any],
    positive: Iterable[str] = (),
) -> None:
    """Fill every size still None from the preset ``--quick`` picks, then refuse (as an
    argparse error naming the option) any of the preset's sizes or ``positive`` below 1."""
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    for key in (*full, *positive):
        value = getattr(args, key)
        if value is not None and value < 1:
            ap.error(f"--{key.replace('_', '-')} must be >= 1")
