"""Serving: every seqlab model as an MLflow pyfunc model over seqlab's own checkpoint.

A run's ``model/`` artifact is an MLflow pyfunc model folder (``MLmodel``, a signature,
an input example, explicit pip requirements) that also holds ``checkpoint.pt`` at its
top level, so ``runs:/<id>/model`` and ``models:/<name>@<alias>`` serve both seqlab's
own commands (:mod:`pipeline_core.model_uri`) and ``mlflow models serve``.

:class:`SeqlabPyfunc` loads the checkpoint with ``weights_only=True`` through
:func:`pipeline_core.registry.load_checkpoint`, which finds the plugin by its entry
point: the model needs the installed ``seqlab`` distribution (and the plugin's), never
this repository's working tree. Each request row is either a completion,
``{prompt, max_new_tokens, temperature, top_k, seed}``, or a score, ``{text}``; a
malformed row is an ``MlflowException`` with ``INVALID_PARAMETER_VALUE`` (HTTP 400 from
the scoring server) whose message is one line.

A checkpoint trained for a sequence-level task says so in its ``extra.task`` (written by
:meth:`Task.checkpoint_extra`), and its model answers that task instead: ``classify``
rows ``{text}`` with ``{label, probabilities}`` (a probability per label name, as
:func:`pipeline_core.tasks.classify.predict_proba` gives them), ``regress`` rows
``{values}`` (a list of steps, each a list of the numbers per step the task trained on;
a CSV series' window of ``data.context_len`` rows in the CSV's units) with
``{prediction}`` (:func:`pipeline_core.tasks.regress.predict_values`). The signature, the
input example and the metadata follow the task.

Besides :mod:`pipeline_core.tracking`, this is the only module that imports mlflow:
``mlflow.pyfunc`` for the ``PythonModel`` base class and to write the model folder,
``mlflow.models``/``mlflow.types`` for the signature and ``mlflow.exceptions`` for the
errors a request gets. Logging to a run stays in :mod:`pipeline_core.tracking`.
"""

from __future__ import annotations

import math
import numbers
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel

from pipeline_core.errors import ConfigError, DataError, SeqlabError
from pipeline_core.model_uri import CHECKPOINT_NAME, LoadedModel

#: the pyfunc artifact that names the checkpoint
CHECKPOINT_ARTIFACT = "checkpoint"
MAX_NEW_TOKENS_ENV = "SEQLAB_SERVE_MAX_NEW_TOKENS"
DEFAULT_MAX_NEW_TOKENS_CAP = 1000
#: what a completion row gets for a field it leaves out (as ``seqlab generate``)
DEFAULTS: dict[str, Any] = {"max_new_tokens": 200, "temperature": 1.0, "top_k": None, "seed": 0}
#: the request fields and their types; every one is optional
FIELD_TYPES: dict[str, str] = {
    "prompt": "string",
    "max_new_tokens": "long",
    "temperature": "double",
    "top_k": "long",
    "seed": "long",
    "text": "string",
}
OUTPUT_COLUMNS: dict[str, str] = {
    "completion": "string",
    "log_prob": "double",
    "bpc": "double",
    "tokens": "long",
    "unknown": "long",
}
COMPLETION_FIELDS = ("prompt", "max_new_tokens", "temperature", "top_k", "seed")
#: the tasks whose models answer their own rows (any other task's model answers text rows)
CLASSIFY, REGRESS = "classify", "regress"
#: their request fields and output columns (``map`` is a label -> probability object)
TASK_FIELDS: dict[str, dict[str, str]] = {
    CLASSIFY: {"text": "string"},
    REGRESS: {"values": "array"},
}
TASK_OUTPUTS: dict[str, dict[str, str]] = {
    CLASSIFY: {"label": "string", "probabilities": "map"},
    REGRESS: {"prediction": "double"},
}


class OneLineError(MlflowException):
    """An ``MlflowException`` whose ``message`` stays one line.

    MLflow's scoring server rewrites the message of an ``MlflowException`` raised while
    predicting into ``Failed to predict data '<the whole input>'. Error: ...`` (many
    lines, echoing the payload); this one keeps its one-line reason."""

    def __init__(self, message: str, error_code: int = INTERNAL_ERROR) -> None:
        super().__init__(" ".join(message.split()), error_code=error_code)

    @property
    def message(self) -> str:
        return self._reason

    @message.setter
    def message(self, value: str) -> None:
        if not hasattr(self, "_reason"):  # set once, by MlflowException.__init__
            self._reason = value


class InvalidRequest(OneLineError):
    """A malformed request: ``INVALID_PARAMETER_VALUE``, HTTP 400, with a one-line reason."""

    def __init__(self, message: str) -> None:
        super().__init__(message, INVALID_PARAMETER_VALUE)


def max_new_tokens_cap() -> int:
    """``$SEQLAB_SERVE_MAX_NEW_TOKENS`` (default 1000): the most tokens one row may ask."""
    raw = os.environ.get(MAX_NEW_TOKENS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_NEW_TOKENS_CAP
    try:
        cap = int(raw)
    except ValueError:
        cap = 0
    if cap < 1:
        raise ConfigError(f"{MAX_NEW_TOKENS_ENV}: must be a whole number >= 1 (got {raw!r})")
    return cap


@dataclass(frozen=True)
class Completion:
    prompt: str
    max_new_tokens: int
    temperature: float
    top_k: int | None
    seed: int


@dataclass(frozen=True)
class Score:
    text: str


def _missing(value: Any) -> bool:
    """None, NaN or pandas' NA: how a row leaves a column of the table out."""
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _integer(row: int, name: str, value: Any) -> int:
    """A whole number: an int, or a float with no fraction (pandas turns a long column
    with gaps into floats)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidRequest(f"row {row}: {name} must be a whole number (got {value!r})")
    if isinstance(value, numbers.Integral):
        return int(value)
    number = float(value)
    if not number.is_integer():
        raise InvalidRequest(f"row {row}: {name} must be a whole number (got {value!r})")
    return int(number)


def parse_row(row: int, fields: Mapping[str, Any], cap: int) -> Completion | Score:
    """One request row as a completion or a score; anything else is InvalidRequest."""
    given = {str(k): v for k, v in fields.items() if not _missing(v)}
    unknown = sorted(set(given) - set(FIELD_TYPES))
    if unknown:
        raise InvalidRequest(
            f"row {row}: unknown field(s) {', '.join(unknown)}; a row holds "
            f"{', '.join(COMPLETION_FIELDS)} (a completion) or text (a score)"
        )
    for name in ("prompt", "text"):
        if name in given and not isinstance(given[name], str):
            raise InvalidRequest(f"row {row}: {name} must be a string (got {given[name]!r})")
    if "text" in given:
        extra = sorted(set(given) - {"text"})
        if extra:
            raise InvalidRequest(
                f"row {row}: a score row holds only text; {', '.join(extra)} belong to a "
                "completion row (give prompt instead of text)"
            )
        return Score(given["text"])
    if "prompt" not in given:
        raise InvalidRequest(
            f"row {row}: neither prompt (to complete) nor text (to score) is given"
        )
    if not given["prompt"]:
        raise InvalidRequest(f"row {row}: prompt is empty; give at least one token")
    values = {**DEFAULTS, **given}
    max_new = _integer(row, "max_new_tokens", values["max_new_tokens"])
    if not 0 <= max_new <= cap:
        raise InvalidRequest(
            f"row {row}: max_new_tokens must be between 0 and {cap} (got {max_new}); "
            f"the cap is {MAX_NEW_TOKENS_ENV}"
        )
    temperature = values["temperature"]
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real):
        raise InvalidRequest(f"row {row}: temperature must be a number (got {temperature!r})")
    if not 0 <= float(temperature) < math.inf:
        raise InvalidRequest(
            f"row {row}: temperature must be a finite number >= 0 (got {temperature!r})"
        )
    top_k = None if values["top_k"] is None else _integer(row, "top_k", values["top_k"])
    if top_k is not None and top_k < 1:
        raise InvalidRequest(f"row {row}: top_k must be >= 1 (got {top_k})")
    seed = _integer(row, "seed", values["seed"])
    if seed < 0:
        raise InvalidRequest(f"row {row}: seed must be >= 0 (got {seed})")
    return Completion(given["prompt"], max_new, float(temperature), top_k, seed)


def request_rows(model_input: Any) -> list[Mapping[str, Any]]:
    """The rows of a pandas DataFrame, a list of dicts or one dict."""
    if isinstance(model_input, pd.DataFrame):
        columns = [str(c) for c in model_input.columns]
        return [dict(zip(columns, values, strict=True)) for values in model_input.to_numpy(object)]
    if isinstance(model_input, Mapping):
        return [model_input]
    if isinstance(model_input, list) and all(isinstance(r, Mapping) for r in model_input):
        return list(model_input)
    raise InvalidRequest(
        f"the input must be a table of rows (a DataFrame or a list of objects), "
        f"not {type(model_input).__name__}"
    )


# ---- sequence-level tasks ------------------------------------------------------------
def _short(value: Any, width: int = 60) -> str:
    """``repr(value)`` cut to ``width`` characters (a request may hold a long list)."""
    text = " ".join(repr(value).split())
    return text if len(text) <= width else text[: width - 3] + "..."


def checkpoint_task(payload: Mapping[str, Any], where: str) -> Mapping[str, Any]:
    """The checkpoint's ``extra.task`` record (``{}`` when it records none). A checkpoint
    with a task head but no record was trained for classify or regress before seqlab
    recorded the task: refused, rather than answered as a next-token model."""
    extra = payload.get("extra") or {}
    task = extra.get("task")
    if task is None:
        state = payload.get("state") or {}
        if "task_head.weight" in state:
            raise DataError(
                f"{where}: the checkpoint has a task head but records no task (saved by an "
                "older seqlab); retrain it to serve or score it"
            )
        return {}
    if not isinstance(task, Mapping) or not isinstance(task.get("name"), str):
        raise DataError(f"{where}: the checkpoint's extra.task is malformed")
    return task


def task_name(payload: Mapping[str, Any], where: str) -> str:
    """The task a checkpoint was trained for (``next-token`` when it records none)."""
    return str(checkpoint_task(payload, where).get("name") or "next-token")


def _required(
    record: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str
) -> Any:
    value = record.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise DataError(f"{where}: the checkpoint's extra.task.{key} is missing or malformed")
    return value


@dataclass(frozen=True)
class Classifier:
    """A classify model: label names (class id = index) and the ids of the train
    characters (any other reads as ``<unk>``, as in training)."""

    model: Any  # TorchSequenceModel
    labels: tuple[str, ...]
    chars: dict[str, int]
    field = "text"

    def row_help(self) -> str:
        return "a classify model's row holds text (the sequence to label)"

    @classmethod
    def of(cls, loaded: LoadedModel, record: Mapping[str, Any], where: str) -> Classifier:
        from pipeline_core.tasks.classify import char_ids

        labels = _required(record, "labels", list, where)
        chars = _required(record, "chars", list, where)
        if not all(isinstance(x, str) for x in [*labels, *chars]) or len(labels) < 2:
            raise DataError(f"{where}: the checkpoint's extra.task labels or chars are malformed")
        head = getattr(loaded.model, "task_head", None)
        if head is None or head.out_features != len(labels):
            raise DataError(f"{where}: the model's head does not have its {len(labels)} labels")
        return cls(loaded.model, tuple(labels), char_ids(chars, loaded.vocab))

    def parse(self, row: int, fields: Mapping[str, Any]) -> str:
        given = {str(k): v for k, v in fields.items() if not _missing(v)}
        unknown = sorted(set(given) - {"text"})
        if unknown:
            raise InvalidRequest(
                f"row {row}: unknown field(s) {', '.join(unknown)}; {self.row_help()}"
            )
        if "text" not in given:
            raise InvalidRequest(f"row {row}: no text given; {self.row_help()}")
        text = given["text"]
        if not isinstance(text, str):
            raise InvalidRequest(f"row {row}: text must be a string (got {_short(text)})")
        if not text:
            raise InvalidRequest(f"row {row}: text is empty; give at least one character")
        return text

    def answer(self, texts: list[str]) -> pd.DataFrame:
        from pipeline_core.tasks.classify import predict_proba, text_ids

        proba = predict_proba(self.model, [text_ids(t, self.chars) for t in texts])
        out = [
            {
                "label": self.labels[int(p.argmax())],
                "probabilities": {n: float(v) for n, v in zip(self.labels, p, strict=True)},
            }
            for p in proba
        ]
        return pd.DataFrame(out, columns=list(TASK_OUTPUTS[CLASSIFY]), dtype=object)


@dataclass(frozen=True)
class Regressor:
    """A regress model: features per step, the series' window and scaling (none for
    example lines), and the target's scale."""

    model: Any  # TorchSequenceModel
    n_features: int
    window: int | None
    input_mean: tuple[float, ...]
    input_std: tuple[float, ...]
    target_mean: float
    target_std: float
    columns: tuple[str, ...]
    field = "values"

    def row_help(self) -> str:
        return f"a regress model's row holds values: {self.shape_help()}"

    @classmethod
    def of(cls, loaded: LoadedModel, record: Mapping[str, Any], where: str) -> Regressor:
        n = _required(record, "n_features", int, where)
        window = record.get("window")
        if window is not None and (type(window) is not int or window < 1):
            raise DataError(f"{where}: the checkpoint's extra.task.window is malformed")
        mean = tuple(float(v) for v in record.get("input_mean") or ())
        std = tuple(float(v) for v in record.get("input_std") or ())
        if len(mean) != len(std) or (mean and len(mean) != n):
            raise DataError(f"{where}: the checkpoint's extra.task input scaling is malformed")
        layer = getattr(loaded.model, "value_input", None)
        if layer is None or layer.in_features != n:
            raise DataError(f"{where}: the model's value input does not take {n} features")
        return cls(
            loaded.model,
            n,
            window,
            mean,
            std,
            float(_required(record, "target_mean", (int, float), where)),
            float(_required(record, "target_std", (int, float), where)),
            tuple(str(c) for c in record.get("columns") or ()),
        )

    def shape_help(self) -> str:
        step = "a number" if self.n_features == 1 else f"a list of {self.n_features} numbers"
        if self.window is None:
            return f"values is a list of steps, each {step}"
        columns = f" (columns {', '.join(self.columns)})" if self.columns else ""
        return f"values is a list of {self.window} rows{columns}, each {step}"

    def parse(self, row: int, fields: Mapping[str, Any]) -> np.ndarray:
        given = {str(k): v for k, v in fields.items() if not _missing(v)}
        unknown = sorted(set(given) - {"values"})
        if unknown:
            raise InvalidRequest(
                f"row {row}: unknown field(s) {', '.join(unknown)}; a regress model's row "
                f"holds values ({self.shape_help()})"
            )
        if "values" not in given:
            raise InvalidRequest(f"row {row}: no values given; {self.shape_help()}")
        steps = given["values"]
        if isinstance(steps, np.ndarray):
            steps = steps.tolist()
        if not isinstance(steps, list | tuple):
            raise InvalidRequest(
                f"row {row}: values must be a list (got {_short(steps)}); {self.shape_help()}"
            )
        if not steps:
            raise InvalidRequest(f"row {row}: values is empty; give at least one step")
        if self.window is not None and len(steps) != self.window:
            raise InvalidRequest(
                f"row {row}: values has {len(steps)} rows; {self.shape_help()} (the model "
                f"reads windows of data.context_len={self.window})"
            )
        out = np.empty((len(steps), self.n_features), np.float64)
        for s, step in enumerate(steps, 1):
            cells = step.tolist() if isinstance(step, np.ndarray) else step
            if self.n_features == 1 and not isinstance(cells, list | tuple):
                cells = [cells]
            if not isinstance(cells, list | tuple) or len(cells) != self.n_features:
                raise InvalidRequest(
                    f"row {row}: values step {s} is {_short(step)}; {self.shape_help()}"
                )
            for f, cell in enumerate(cells, 1):
                if isinstance(cell, bool) or not isinstance(cell, numbers.Real):
                    raise InvalidRequest(
                        f"row {row}: values step {s}, feature {f}: not a number ({_short(cell)})"
                    )
                if not math.isfinite(float(cell)):
                    raise InvalidRequest(
                        f"row {row}: values step {s}, feature {f}: not a finite number "
                        f"({cell!r}; NaN and inf are refused)"
                    )
                out[s - 1, f - 1] = float(cell)
        return out

    def answer(self, rows: list[np.ndarray]) -> pd.DataFrame:
        from pipeline_core.tasks.regress import padded_values, predict_values, standardised

        if self.input_mean:
            rows = [standardised(r, self.input_mean, self.input_std) for r in rows]
        values, lengths = padded_values(rows)
        pred = predict_values(self.model, values, lengths, self.target_mean, self.target_std)
        if not np.isfinite(pred).all():
            raise OneLineError("the model predicted NaN or inf")
        return pd.DataFrame({"prediction": pred.astype(np.float64)})


class SeqlabPyfunc(PythonModel):
    """A seqlab checkpoint as an MLflow pyfunc model: completions and scores, or the
    answers of the sequence-level task it was trained for (classify, regress)."""

    #: ``predict`` has no type hints on purpose (MLflow would validate by them): this
    #: tells MLflow not to wrap it and not to warn about their absence
    _skip_type_hint_validation = True
    loaded: LoadedModel | None = None
    cap: int = DEFAULT_MAX_NEW_TOKENS_CAP
    #: the task's own answerer; None for a text model (completions and scores)
    task: Classifier | Regressor | None = None

    def load_context(self, context: Any) -> None:
        from pipeline_core.contract import read_checkpoint
        from pipeline_core.model_uri import load_resolved

        path = Path(context.artifacts[CHECKPOINT_ARTIFACT])
        record = checkpoint_task(read_checkpoint(path), str(path))
        self.loaded = load_resolved(path, str(path), str(path), None)
        self.cap = max_new_tokens_cap()
        name = record.get("name")
        if name == CLASSIFY:
            self.task = Classifier.of(self.loaded, record, str(path))
        elif name == REGRESS:
            self.task = Regressor.of(self.loaded, record, str(path))

    def predict(self, context, model_input, params=None):  # no type hints: see above
        if self.loaded is None:
            raise OneLineError("the model's checkpoint is not loaded")
        if self.task is not None:
            return self._answer_task(self.task, model_input)
        rows = [parse_row(i, r, self.cap) for i, r in enumerate(request_rows(model_input))]
        out = []
        for i, row in enumerate(rows):
            try:
                out.append(self._answer(row))
            except SeqlabError as err:
                raise InvalidRequest(f"row {i}: {err}") from None
            except Exception as err:  # a bug: one line over HTTP too, not a traceback
                reason = " ".join(f"{type(err).__name__}: {err}".split())[:500]
                raise OneLineError(f"row {i}: {reason}") from err
        return pd.DataFrame(out, columns=list(OUTPUT_COLUMNS), dtype=object)

    @staticmethod
    def _answer_task(task: Classifier | Regressor, model_input: Any) -> Any:
        """Every row parsed first (a bad one is a 400 naming it), then one pass of the
        model over them all, batched as the task scores its splits. MLflow drops the
        columns its signature lacks (a ``prompt`` sent to a classify model) before
        ``predict``: a table without the task's column is refused here."""
        requested = request_rows(model_input)
        field = task.field
        if not requested or (
            isinstance(model_input, pd.DataFrame) and field not in model_input.columns
        ):
            raise InvalidRequest(f"no {field} given; {task.row_help()}")
        try:
            if isinstance(task, Classifier):
                return task.answer([task.parse(i, r) for i, r in enumerate(requested)])
            return task.answer([task.parse(i, r) for i, r in enumerate(requested)])
        except MlflowException:
            raise
        except SeqlabError as err:
            raise InvalidRequest(str(err)) from None
        except Exception as err:  # a bug: one line over HTTP too, not a traceback
            reason = " ".join(f"{type(err).__name__}: {err}".split())[:500]
            raise OneLineError(reason) from err

    def _answer(self, row: Completion | Score) -> dict[str, Any]:
        from pipeline_core.generation import CARRIED, generate_text, score_text

        m = self.loaded
        assert m is not None
        if isinstance(row, Score):
            score = score_text(
                m.model, row.text, m.vocab, m.level, m.context_len, m.scoring == CARRIED
            )
            return {
                "completion": None,
                "log_prob": score.log_prob,
                "bpc": score.bpc,
                "tokens": score.tokens,
                "unknown": score.unknown,
            }
        done = generate_text(
            m.model,
            row.prompt,
            m.vocab,
            m.level,
            m.context_len,
            row.max_new_tokens,
            temperature=row.temperature,
            top_k=row.top_k,
            seed=row.seed,
        )
        return {
            "completion": done.continuation,
            "log_prob": None,
            "bpc": None,
            "tokens": done.tokens,
            "unknown": done.unknown,
        }


def signature(task: str = "next-token") -> Any:
    """Optional input columns (a completion's or a score's), and the output columns; a
    classify or regress model's own (:data:`TASK_FIELDS`, :data:`TASK_OUTPUTS`).

    The numeric inputs are declared ``Any`` and checked by :func:`parse_row`, against
    :data:`FIELD_TYPES`: MLflow refuses a ``long`` column with a gap (a completion row
    without ``top_k`` beside one with it, or beside a score row) and a ``double``
    column given Python ints, and its own refusals are many lines long. A regress
    model's ``values`` (nested lists of numbers) are ``Any`` for the same reason, checked
    by :meth:`Regressor.parse`; every input is optional so that a missing one is this
    module's one-line 400 too."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema
    from mlflow.types.schema import AnyType, Map

    def column(name: str, kind: str) -> Any:
        return ColSpec("string" if kind == "string" else AnyType(), name, required=False)

    def output(name: str, kind: str) -> Any:
        return ColSpec(Map("double") if kind == "map" else kind, name, required=False)

    fields = TASK_FIELDS.get(task, FIELD_TYPES)
    outputs = TASK_OUTPUTS.get(task, OUTPUT_COLUMNS)
    return ModelSignature(
        inputs=Schema([column(n, t) for n, t in fields.items()]),
        outputs=Schema([output(n, t) for n, t in outputs.items()]),
    )


def pip_requirements(plugin: str) -> list[str]:
    """seqlab and the plugin's distribution at their installed versions, with the
    mlflow and torch that wrote the model."""
    from importlib.metadata import version

    from pipeline_core.registry import plugin_info

    info = plugin_info(plugin)
    found = {"seqlab": version("seqlab"), info.distribution: info.version}
    for name in ("mlflow", "torch"):
        found[name] = version(name)
    return [f"{name}=={v}" for name, v in sorted(found.items()) if v != "?"]


def input_example(prompt: str) -> list[dict[str, Any]]:
    """A completion row and a score row over ``prompt``."""
    return [
        {"prompt": prompt, "max_new_tokens": 20, "temperature": 0.0, "seed": 0},
        {"text": prompt},
    ]


def task_input_example(record: Mapping[str, Any], fallback: str) -> list[dict[str, Any]]:
    """A classify model's row (its first train example's text, else ``fallback``) or a
    regress model's (its first train example's steps)."""
    example = record.get("example")
    if record.get("name") == CLASSIFY:
        return [{"text": example if isinstance(example, str) and example else fallback}]
    if not isinstance(example, list) or not example:
        n = int(record.get("n_features") or 1)
        example = [[0.0] * n] * int(record.get("window") or 1)
    return [{"values": example}]


#: the model's code (MLflow "models from code"): it names the class in the installed
#: seqlab, so loading the model unpickles nothing
MODEL_CODE = """\
\"\"\"A seqlab model served by MLflow: the class comes from the installed seqlab.\"\"\"

import mlflow.models

from pipeline_core.serving import SeqlabPyfunc

mlflow.models.set_model(SeqlabPyfunc())
"""
MODEL_CODE_NAME = "seqlab_model.py"


def example_prompt(checkpoint: Mapping[str, Any]) -> str:
    """A few of the checkpoint's own tokens as text (for the input example)."""
    from pipeline_core.vectorize import SPECIALS, detokenize

    tokens = [t for t in checkpoint.get("vocab") or [] if t not in SPECIALS and t.strip()]
    data = checkpoint.get("extra", {}).get("data") or {}
    return detokenize(tokens[:4], "word" if data.get("level") == "word" else "char") or "a"


def save_pyfunc_model(checkpoint: Path, dst: Path, example_text: str | None = None) -> Path:
    """Write the pyfunc model folder ``dst`` (which must not exist) over ``checkpoint``,
    with ``checkpoint.pt`` also at its top level, where seqlab's commands look; its
    input example continues and scores ``example_text`` (default: a few of its tokens)."""
    import tempfile
    import warnings

    from pipeline_core.contract import read_checkpoint

    payload = read_checkpoint(checkpoint)
    plugin = str(payload.get("plugin"))
    text = example_text or example_prompt(payload)
    record = checkpoint_task(payload, str(checkpoint))
    task = str(record.get("name") or "next-token")
    if task in TASK_FIELDS:
        example, fields = task_input_example(record, text), TASK_FIELDS[task]
    else:
        example, fields = input_example(text), FIELD_TYPES
    with tempfile.TemporaryDirectory(prefix="seqlab-pyfunc-") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MLflow's advice on type hints and pickling
        code = Path(tmp) / MODEL_CODE_NAME
        code.write_text(MODEL_CODE, encoding="utf-8")
        mlflow.pyfunc.save_model(
            path=str(dst),
            python_model=str(code),
            artifacts={CHECKPOINT_ARTIFACT: str(checkpoint)},
            signature=signature(task),
            input_example=example,
            pip_requirements=pip_requirements(plugin),
            metadata={"seqlab": {"plugin": plugin, "task": task, "fields": fields}},
        )
    top = dst / CHECKPOINT_NAME
    if not top.is_file():
        shutil.copyfile(checkpoint, top)
    return dst
