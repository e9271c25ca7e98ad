"""``synthetic:adding?length=T&examples=N&seed=S``: the adding problem, a regression whose
baseline is known exactly.

Each example is T steps of two features: a value x ~ U[0, 1] and a marker, 1 at exactly
one step of each half (one in ``[0, T // 2)``, one in ``[T // 2, T)``) and 0 elsewhere.
The target is the sum of the two marked values. Always answering 1 scores MSE
``Var(x_a + x_b) = 2 / 12 = 1/6``, so a model below that has learnt to find and add the
marked values across the sequence (a long-range memory test when T is large).

The source is text like any other (registered in :data:`pipeline_core.synthetic.SYNTHETIC`):
one example per line, ``v,m;v,m;...<TAB>target``, the layout the ``regress`` task reads
(:mod:`pipeline_core.numeric_examples`). Values are printed to 4 decimals and the target
is the sum of the two printed values, so the text is exactly what the task learns from.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from pipeline_core.errors import ConfigError

#: most characters an adding source may hold
MAX_ADDING_CHARS = 20_000_000
#: the constant answer of the persistence baseline and its exact expected MSE
CONSTANT = 1.0
CONSTANT_MSE = 1.0 / 6.0


class AddingParams(BaseModel):
    """Parameters of ``synthetic:adding`` (T >= 2: each half needs a marked step)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    length: int = Field(default=10, ge=2, le=4096)
    examples: int = Field(default=1000, ge=2, le=1_000_000)
    seed: int = Field(default=0, ge=0)


def adding_chars(params: AddingParams) -> int:
    """Characters of the text: ``0.1234,0;`` per step, a tab, the target, a newline."""
    return params.examples * (9 * params.length + 8)


def check_adding(params: AddingParams) -> None:
    """Refuse, before building, a set larger than :data:`MAX_ADDING_CHARS`."""
    need = adding_chars(params)
    if need > MAX_ADDING_CHARS:
        raise ConfigError(
            f"synthetic:adding: length={params.length} x examples={params.examples:,} gives "
            f"about {need:,} characters, over the {MAX_ADDING_CHARS:,} limit; lower them"
        )


def adding_arrays(params: AddingParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Values (N, T) rounded to 4 decimals, markers (N, T) in {0, 1}, targets (N,)."""
    n, t = params.examples, params.length
    rng = np.random.default_rng(params.seed)
    values = np.round(rng.random((n, t)), 4)
    rows = np.arange(n)
    first = rng.integers(0, t // 2, n)
    second = rng.integers(t // 2, t, n)
    marks = np.zeros((n, t), np.int64)
    marks[rows, first] = 1
    marks[rows, second] = 1
    return values, marks, values[rows, first] + values[rows, second]


def build_adding(params: AddingParams) -> tuple[str, dict[str, Any]]:
    """The example lines and the constant baseline the ``regress`` task compares with."""
    check_adding(params)
    values, marks, targets = adding_arrays(params)
    lines = [
        ";".join(f"{v:.4f},{m}" for v, m in zip(vals, mks, strict=True)) + f"\t{target:.4f}"
        for vals, mks, target in zip(values, marks, targets, strict=True)
    ]
    meta = {"optimum": {"mse": 0.0}, "constant": CONSTANT, "constant_mse": CONSTANT_MSE}
    return "\n".join(lines) + "\n", meta
