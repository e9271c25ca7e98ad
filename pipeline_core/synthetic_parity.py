"""``synthetic:parity?length=T&examples=N&seed=S``: a labelled set whose optimum is exact.

Each example is T random bits and its label is their parity (``even`` or ``odd``): a
deterministic function of the input, so the best classifier reaches accuracy 1 and
log-loss 0. The source is text like any other (registered in
:data:`pipeline_core.synthetic.SYNTHETIC`): one ``bits<TAB>label`` line per example, the
tab-separated layout the ``classify`` task reads (:mod:`pipeline_core.labelled`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from pipeline_core.errors import ConfigError

#: most characters a parity source may hold (bits plus labels)
MAX_PARITY_CHARS = 20_000_000


class ParityParams(BaseModel):
    """Parameters of ``synthetic:parity``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    length: int = Field(default=6, ge=1, le=4096)
    examples: int = Field(default=1000, ge=2, le=1_000_000)
    seed: int = Field(default=0, ge=0)


def parity_chars(params: ParityParams) -> int:
    """Characters of the text: bits, a tab, the label (4 or 3) and a newline per line."""
    return params.examples * (params.length + 6)


def check_parity(params: ParityParams) -> None:
    """Refuse, before building, a set larger than :data:`MAX_PARITY_CHARS`."""
    need = parity_chars(params)
    if need > MAX_PARITY_CHARS:
        raise ConfigError(
            f"synthetic:parity: length={params.length} x examples={params.examples:,} gives "
            f"about {need:,} characters, over the {MAX_PARITY_CHARS:,} limit; lower them"
        )


def build_parity(params: ParityParams) -> tuple[str, dict[str, Any]]:
    """The ``bits<TAB>label`` lines and the set's exact optimum."""
    check_parity(params)
    bits = np.random.default_rng(params.seed).integers(0, 2, (params.examples, params.length))
    odd = bits.sum(axis=1) % 2 == 1
    lines = [
        "".join("1" if b else "0" for b in row) + ("\todd" if o else "\teven")
        for row, o in zip(bits, odd, strict=True)
    ]
    return "\n".join(lines) + "\n", {"optimum": {"accuracy": 1.0, "log_loss": 0.0}}
