"""``seqlab fill MODEL --text TEXT --at N``: the tutorial's fill in the blank ("I am ___
hungry"): the likeliest tokens for position N of the text, from both sides for a
fill-blank plugin (birnn, the n-gram), from the left alone for a next-token one."""

from __future__ import annotations

import json
from typing import Annotated

import numpy as np
import typer

from seqlab.cli_generate import (
    MODEL_HELP,
    TRACKING_HELP,
    load_model,
    refuse_example_models,
    warn_unknown,
)


def fill_command(
    model: Annotated[str, typer.Argument(metavar="MODEL", help=MODEL_HELP)],
    text: Annotated[str, typer.Option("--text", help="The text holding the blank.")],
    at: Annotated[int, typer.Option("--at", help="The blank's token position in --text, from 0.")],
    top_k: Annotated[int, typer.Option("--top-k", help="How many candidates to list.")] = 5,
    tracking_uri: Annotated[str | None, typer.Option("--tracking-uri", help=TRACKING_HELP)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
) -> None:
    """List the likeliest tokens for the blank at --at (the token there is ignored)."""
    from pipeline_core.errors import ConfigError
    from pipeline_core.generation import encode_prompt
    from pipeline_core.tasks.fill_blank import blank_contexts, blank_log_proba, declares_fill_blank
    from pipeline_core.vectorize import detokenize

    if top_k < 1:
        raise ConfigError(f"--top-k: must be >= 1 (got {top_k})")
    refuse_example_models(model, tracking_uri, "fill", "not blanks: serve the model")
    loaded = load_model(model, tracking_uri)
    ids, _ = encode_prompt(text, loaded.vocab, loaded.level)
    left, right = blank_contexts(ids, at, loaded.context_len)  # --at outside: one line
    two_sided = declares_fill_blank(type(loaded.model))
    if left.shape[1] == 0 and not two_sided:
        raise ConfigError(
            f"--at {at}: the blank has no left context, and {loaded.plugin} reads the left "
            "context only; choose a later position or a fill-blank model (birnn, ngram)"
        )
    warn_unknown(text, loaded, "text")
    logp = blank_log_proba(loaded.model, left, right)[0]
    best = np.argsort(-logp, kind="stable")[:top_k]
    tokens = loaded.vocab.decode(np.asarray(best))
    candidates = [
        {"token": tok, "p": float(np.exp(logp[i]))} for tok, i in zip(tokens, best, strict=True)
    ]
    filled = [*loaded.vocab.decode(ids[:at]), tokens[0], *loaded.vocab.decode(ids[at + 1 :])]
    result = {
        **loaded.describe(),
        "position": at,
        "context": "left+right" if two_sided else "left only",
        "candidates": candidates,
        "filled": detokenize(filled, loaded.level),
    }
    if as_json:
        print(json.dumps(result))
        return
    print(f"context: {result['context']}")
    for c in candidates:
        print(f"{c['token']!r}\t{c['p']:.4f}")
    print(f"filled: {result['filled']}")


def register(app: typer.Typer) -> None:
    """Add ``seqlab fill`` to ``app``."""
    app.command("fill")(fill_command)
