"""Numeric sequences with a numeric target (``regress``): one example per line.

The layout ``synthetic:adding`` writes and any file may use: ``v,v;v,v;...<TAB>target``,
steps separated by ``;``, a step's features by ``,`` (every step of every example with
the same number of features), the target after the last tab; blank lines are skipped.
Every number must be finite: a bad one is one DataError naming the line, the step
(``row``) and the feature (``column``), both counted from 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pipeline_core.errors import DataError


@dataclass(frozen=True)
class NumericExamples:
    """Each example's steps (T_i, F) and the targets (N,)."""

    values: list[np.ndarray]
    targets: np.ndarray

    @property
    def n_features(self) -> int:
        return int(self.values[0].shape[1]) if self.values else 0


def number(cell: str, where: str) -> float:
    """``cell`` as a finite float, else a DataError naming ``where`` and the cell."""
    try:
        value = float(cell)
    except ValueError:
        raise DataError(f"{where}: not a number: {cell.strip()!r}") from None
    if not math.isfinite(value):
        raise DataError(f"{where}: not a finite number: {cell.strip()!r} (NaN and inf are refused)")
    return value


def parse_line(line: str, where: str) -> tuple[np.ndarray, float]:
    """One ``steps<TAB>target`` line as (T, F) values and its target."""
    body, tab, target = line.rpartition("\t")
    if not tab or not body.strip():
        raise DataError(
            f"{where}: expected v,v;v,v;...<TAB>target (the regress task reads one numeric "
            "example per line, or a .csv time series)"
        )
    steps = [
        [number(cell, f"{where}, row {r}, column {c}") for c, cell in enumerate(step.split(","), 1)]
        for r, step in enumerate(body.split(";"), 1)
    ]
    widths = {len(step) for step in steps}
    if len(widths) != 1:
        raise DataError(f"{where}: steps with different numbers of features {sorted(widths)}")
    return np.array(steps, np.float64), number(target, f"{where}, target")


def parse_examples(text: str, name: str) -> NumericExamples:
    """Every example of ``text`` (from ``name``, for errors); at least one, with one
    feature count throughout."""
    values: list[np.ndarray] = []
    targets: list[float] = []
    for number_, raw in enumerate(text.split("\n"), start=1):
        line = raw.rstrip("\r")
        if not line.strip():
            continue
        where = f"{name} line {number_}"
        steps, target = parse_line(line, where)
        if values and steps.shape[1] != values[0].shape[1]:
            raise DataError(
                f"{where}: {steps.shape[1]} features per step, earlier lines have "
                f"{values[0].shape[1]}"
            )
        values.append(steps)
        targets.append(target)
    if not values:
        raise DataError(f"{name}: no examples (expected v,v;v,v;...<TAB>target lines)")
    return NumericExamples(values, np.array(targets, np.float64))
