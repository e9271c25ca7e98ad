"""``seqlab generate MODEL --prompt TEXT``: continue a text with a trained model, and
``seqlab score MODEL --text TEXT | --file PATH``: how probable a text is under it.

MODEL is a checkpoint file, a folder holding ``checkpoint.pt``, ``runs:/<run_id>/model``
or ``models:/<name>@<alias>`` / ``models:/<name>/<version>`` (see
:mod:`pipeline_core.model_uri`). Characters the model never saw are read as ``<unk>``
and reported on stderr as one ``warning:`` line.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from pipeline_core.model_uri import LoadedModel

MODEL_HELP = (
    "A checkpoint file, a folder holding checkpoint.pt, runs:/<run_id>/model, "
    "models:/<name>@<alias> or models:/<name>/<version>."
)
TRACKING_HELP = "MLflow URI for runs:/ and models:/ (default: $MLFLOW_TRACKING_URI or ./mlruns.db)."


def check_store(model: str, tracking_uri: str | None) -> None:
    """For a ``runs:/`` or ``models:/`` MODEL only: quiet MLflow, and an http(s)
    tracking server must answer (within ``$SEQLAB_NETWORK_TIMEOUT``)."""
    from pipeline_core.model_uri import is_mlflow_uri
    from seqlab.cli import bound_network, probe_tracking, quiet_services

    if is_mlflow_uri(model):
        quiet_services()
        bound_network()
        probe_tracking(tracking_uri)


def load_model(model: str, tracking_uri: str | None) -> LoadedModel:
    """The model ``model`` names (a file, a folder, or an MLflow URI)."""
    from pipeline_core.model_uri import resolve_model

    check_store(model, tracking_uri)
    return resolve_model(model, tracking_uri)


def refuse_example_models(model: str, tracking_uri: str | None, what: str, instead: str) -> None:
    """Refuse, in one line, a model trained for a task that scores whole examples
    (classify, regress): its language-model layer was never trained, so text from it or
    bits of a text would mean nothing. A model that cannot be read is left to the
    command's own error."""
    from pipeline_core.contract import read_checkpoint
    from pipeline_core.errors import ConfigError, SeqlabError
    from pipeline_core.experiment import SCORED_BY_TASK
    from pipeline_core.model_uri import local_checkpoint
    from pipeline_core.serving import task_name

    check_store(model, tracking_uri)
    try:
        with local_checkpoint(model, tracking_uri) as (checkpoint, origin, _):
            task = task_name(read_checkpoint(checkpoint), origin)
    except SeqlabError:
        return
    if task in SCORED_BY_TASK:
        raise ConfigError(
            f"{what}: {model} was trained for the {task} task, which scores examples, {instead}"
        )


def warn_unknown(text: str, loaded: LoadedModel, what: str) -> None:
    """One ``warning:`` line on stderr when ``text`` holds tokens the model never saw."""
    from pipeline_core.generation import unknown_tokens
    from pipeline_core.vectorize import tokenize

    unknown = unknown_tokens(text, loaded.vocab, loaded.level)
    if not unknown:
        return
    tokens, _ = tokenize(text, loaded.level)
    count = sum(1 for t in tokens if t in set(unknown))
    unit = "character" if loaded.level == "char" else "token"
    shown = ", ".join(repr(t) for t in unknown[:8]) + (", ..." if len(unknown) > 8 else "")
    many = count != 1
    print(
        f"warning: {count} {unit}{'s' if many else ''} of the {what} "
        f"{'are' if many else 'is'} not in the model's vocabulary and "
        f"{'were' if many else 'was'} read as <unk>: {shown}",
        file=sys.stderr,
    )


def check_generate_options(
    prompt: str | None, n_tokens: int, temperature: float, top_k: int | None
) -> str:
    from pipeline_core.errors import ConfigError

    if n_tokens < 0:
        raise ConfigError(f"-n: must be >= 0 (got {n_tokens})")
    if not 0 <= temperature < math.inf:
        raise ConfigError(f"--temperature: must be a finite number >= 0 (got {temperature})")
    if top_k is not None and top_k < 1:
        raise ConfigError(f"--top-k: must be >= 1 (got {top_k})")
    if prompt is None:
        raise ConfigError(
            "no prompt: every model here continues a text of at least one token; "
            'give --prompt, e.g. --prompt "alice was"'
        )
    if not prompt:
        raise ConfigError("--prompt: the prompt is empty; give --prompt with at least one token")
    return prompt


def generate_command(
    model: Annotated[str, typer.Argument(metavar="MODEL", help=MODEL_HELP)],
    prompt: Annotated[
        str | None, typer.Option("--prompt", help="The text to continue (required).")
    ] = None,
    n_tokens: Annotated[int, typer.Option("-n", "--n-tokens", help="Tokens to generate.")] = 200,
    temperature: Annotated[
        float, typer.Option("--temperature", help="0 is greedy; higher is more random.")
    ] = 1.0,
    top_k: Annotated[
        int | None, typer.Option("--top-k", help="Sample among the k likeliest tokens only.")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Same seed, same text.")] = 0,
    tracking_uri: Annotated[str | None, typer.Option("--tracking-uri", help=TRACKING_HELP)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
) -> None:
    """Continue --prompt with a trained model: prints the prompt and its continuation.

    Stateful plugins (rnn, lstm, gru) read the prompt once, then one step per token.
    The others slide a window of the model's context_len over the text."""
    from pipeline_core.generation import generate_text

    text = check_generate_options(prompt, n_tokens, temperature, top_k)
    refuse_example_models(model, tracking_uri, "generate", "not text: serve the model")
    loaded = load_model(model, tracking_uri)
    warn_unknown(text, loaded, "prompt")
    out = generate_text(
        loaded.model,
        text,
        loaded.vocab,
        loaded.level,
        loaded.context_len,
        n_tokens,
        temperature=temperature,
        top_k=top_k,
        seed=seed,
    )
    if as_json:
        figures = {
            **loaded.describe(),
            "prompt": out.prompt,
            "continuation": out.continuation,
            "text": out.text,
            "tokens": out.tokens,
            "temperature": temperature,
            "top_k": top_k,
            "seed": seed,
            "unknown": out.unknown,
            "generation": out.generation,
        }
        print(json.dumps(figures))
        return
    print(out.text)


def read_text_file(path: Path) -> str:
    from pipeline_core.errors import DataError

    if not path.is_file():
        raise DataError(f"--file: no such file: {path}")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"--file {path}: not UTF-8 text (byte {err.start})") from None
    except OSError as err:
        raise DataError(f"--file {path}: cannot be read ({err.strerror or err})") from None


def score_text_command(
    model: str,
    text: str | None,
    file: Path | None,
    clean: str | None,
    tracking_uri: str | None,
    as_json: bool,
) -> None:
    """``seqlab score MODEL --text TEXT | --file PATH``: the text's log-probability."""
    from pipeline_core.errors import ConfigError
    from pipeline_core.generation import CARRIED, score_text

    if text is not None and file is not None:
        raise ConfigError("--text and --file: give one of them, not both")
    body = read_text_file(file) if file is not None else text or ""
    if clean is not None:
        from pipeline_core.cleaning import clean_text

        body = clean_text(body, clean)
    loaded = load_model(model, tracking_uri)
    warn_unknown(body, loaded, "text")
    # scored the way the leaderboard scored it: carried state only for a model trained
    # by stateful BPTT, windows of its context_len otherwise
    carry = loaded.scoring == CARRIED
    scores = score_text(
        loaded.model, body, loaded.vocab, loaded.level, loaded.context_len, carry_state=carry
    )
    figures = {
        **loaded.describe(),
        "input": str(file) if file is not None else "--text",
        "clean": clean or "none",
        **scores.as_dict(),
    }
    if as_json:
        print(json.dumps(figures))
        return
    for key, value in figures.items():
        print(f"{key}: {value}")


def register(app: typer.Typer) -> None:
    """Add ``seqlab generate`` to ``app`` (``seqlab score --text`` calls in here)."""
    app.command("generate")(generate_command)
