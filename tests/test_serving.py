"""Serving: a run's ``model/`` artifact is an MLflow pyfunc model (with ``checkpoint.pt``
at its top), loaded by ``mlflow.pyfunc.load_model`` and served by the real
``mlflow models serve`` from another working directory. Its completions and scores are
those of :func:`generate_text` and :func:`score_text`; a malformed request is a 400 with
a one-line reason."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

from pipeline_core.generation import CARRIED, generate_text, score_text
from pipeline_core.model_uri import LoadedModel, resolve_model
from tests.comparisons import compare_in_process

SOURCE = "synthetic:markov?length=3000"
CONTEXT_LEN = 8
PLUGINS = ("ngram", "rnn", "lstm", "gru", "crnn", "birnn")
SERVED = ("ngram", "lstm")
PROMPT = "the cat "
TEXT = "the cat sat on the mat"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@dataclass(frozen=True)
class Store:
    uri: str
    run_ids: dict[str, str]
    folder: Path


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """One comparison of every cheap plugin, trained tiny through the project's stages
    (as ``seqlab run`` does, without Prefect); the n-gram and the LSTM are registered,
    each as ``seqlab-<plugin>@champion``."""
    from pipeline_core.config import load_run_config
    from pipeline_core.registry import load_plugin
    from pipeline_core.tracking import register_model_version

    folder = tmp_path_factory.mktemp("serving-store")
    uri = f"sqlite:///{folder / 'mlruns.db'}"
    models: list[dict[str, Any]] = [{"plugin": "ngram", "params": {"order": 3}}]
    models += [{"plugin": p, "params": dict(load_plugin(p).test_params)} for p in PLUGINS[1:]]
    config = load_run_config(
        None,
        {
            "data.source": SOURCE,
            "data.clean": "none",
            "data.context_len": CONTEXT_LEN,
            "models": models,
            "train.epochs": 1,
            "train.batch_size": 32,
            "train.max_batches_per_epoch": 3,
            "train.progress": False,
            "train.num_threads": 1,
            "tracking.tracking_uri": uri,
            "tracking.samples": 0,
            "tracking.gradient_flow": False,
        },
    )
    run_ids = compare_in_process(config).run_ids
    for name in SERVED:
        register_model_version(f"seqlab-{name}", run_ids[name], alias="champion", tracking_uri=uri)
    return Store(uri, run_ids, folder)


@pytest.fixture
def tracking_env(store: Store, monkeypatch: pytest.MonkeyPatch) -> Store:
    """``runs:/`` and ``models:/`` resolve against the store (as a served model's do)."""
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_utils

    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.uri)
    mlflow.set_tracking_uri(store.uri)
    # set_registry_uri is process-global and exports MLFLOW_REGISTRY_URI to every later
    # subprocess: undone after the test, or the next tests register into this store
    monkeypatch.setattr(registry_utils, "_registry_uri", registry_utils._registry_uri)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    mlflow.set_registry_uri(store.uri)
    return store


def pyfunc(uri: str) -> Any:
    import mlflow.pyfunc

    return mlflow.pyfunc.load_model(uri)


def expected(loaded: LoadedModel, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What each row should give, from seqlab's own generation and scoring."""
    out = []
    for row in rows:
        if "text" in row:
            s = score_text(
                loaded.model,
                row["text"],
                loaded.vocab,
                loaded.level,
                loaded.context_len,
                carry_state=loaded.scoring == CARRIED,
            )
            out.append({"completion": None, "log_prob": s.log_prob, "bpc": s.bpc,
                        "tokens": s.tokens, "unknown": s.unknown})  # fmt: skip
            continue
        g = generate_text(
            loaded.model,
            row["prompt"],
            loaded.vocab,
            loaded.level,
            loaded.context_len,
            row.get("max_new_tokens", 200),
            temperature=row.get("temperature", 1.0),
            top_k=row.get("top_k"),
            seed=row.get("seed", 0),
        )
        out.append({"completion": g.continuation, "log_prob": None, "bpc": None,
                    "tokens": g.tokens, "unknown": g.unknown})  # fmt: skip
    return out


ROWS: list[dict[str, Any]] = [
    {"prompt": PROMPT, "max_new_tokens": 12, "temperature": 0.8, "top_k": 5, "seed": 7},
    {"prompt": "a", "max_new_tokens": 5, "temperature": 0.0},
    {"prompt": "zé~", "max_new_tokens": 3, "seed": 1},
    {"text": TEXT},
]


def same(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
    assert [r["completion"] for r in got] == [r["completion"] for r in want]
    assert [(r["tokens"], r["unknown"]) for r in got] == [(r["tokens"], r["unknown"]) for r in want]
    for g, w in zip(got, want, strict=True):
        for key in ("log_prob", "bpc"):
            assert (g[key] is None) == (w[key] is None)
            if w[key] is not None:
                assert g[key] == pytest.approx(w[key], rel=1e-9)


def test_the_model_artifact_is_a_pyfunc_model_with_the_checkpoint_on_top(store: Store) -> None:
    from mlflow import MlflowClient
    from mlflow.models import Model

    from pipeline_core.tracking import fetch_run_artifact

    client = MlflowClient(store.uri)
    for run_id in store.run_ids.values():
        listed = {a.path.removeprefix("model/") for a in client.list_artifacts(run_id, "model")}
        assert {"MLmodel", "checkpoint.pt", "seqlab_model.py", "requirements.txt"} <= listed
        assert "python_model.pkl" not in listed  # models from code: nothing is unpickled
    folder = fetch_run_artifact(store.run_ids["lstm"], "model", store.folder / "dl", store.uri)
    meta = Model.load(str(folder.path / "MLmodel"))
    assert "python_function" in meta.flavors and meta.signature is not None
    assert meta.saved_input_example_info is not None
    assert set(meta.signature.inputs.input_names()) == {
        "prompt", "max_new_tokens", "temperature", "top_k", "seed", "text"
    }  # fmt: skip
    assert meta.signature.inputs.required_input_names() == []
    example = json.loads((folder.path / "serving_input_example.json").read_text())
    assert "dataframe_split" in example or "dataframe_records" in example or "inputs" in example
    requirements = (folder.path / "requirements.txt").read_text().split()
    assert any(r.startswith("seqlab==") for r in requirements)
    assert any(r.startswith("torch==") for r in requirements)


def test_log_artifacts_renames_a_whole_folder_into_place(store: Store, tmp_path: Path) -> None:
    """A folder logged twice: the second replaces files by name and adds new ones, and
    no temporary name is left behind."""
    from pipeline_core.tracking import get_tracker

    tracker = get_tracker(store.uri)
    run = tracker.start_run("artifacts", experiment="serving-artifacts")
    src = tmp_path / "model"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("1")
    (src / "sub" / "b.txt").write_text("2")
    tracker.log_artifacts(run, src, "model")
    (src / "a.txt").write_text("3")
    (src / "c.txt").write_text("4")
    tracker.log_artifacts(run, src, "model")
    tracker.end(run)
    local = tracker.local_artifact_dir(run)
    assert local is not None
    files = {p.relative_to(local).as_posix(): p.read_text() for p in local.rglob("*.txt")}
    assert files == {"model/a.txt": "3", "model/sub/b.txt": "2", "model/c.txt": "4"}


@pytest.mark.parametrize("plugin", PLUGINS)
def test_predict_in_process_matches_generate_and_score(tracking_env: Store, plugin: str) -> None:
    uri = f"runs:/{tracking_env.run_ids[plugin]}/model"
    model = pyfunc(uri)
    loaded = resolve_model(uri, tracking_env.uri)
    want = expected(loaded, ROWS)
    got = model.predict(pd.DataFrame(ROWS))
    assert list(got.columns) == ["completion", "log_prob", "bpc", "tokens", "unknown"]
    same(got.to_dict(orient="records"), want)
    same(model.predict(ROWS).to_dict(orient="records"), want)  # a list of dicts too
    assert got.loc[2, "unknown"] >= 1  # "é" and "~" are not in the markov alphabet


def test_the_registered_alias_loads_and_reads_the_checkpoint_weights_only(
    tracking_env: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[bool] = []
    real = torch.load

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs.get("weights_only") is True)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    model = pyfunc("models:/seqlab-lstm@champion")
    assert calls and all(calls)
    out = model.predict([{"prompt": PROMPT, "max_new_tokens": 4, "seed": 3}])
    assert len(out) == 1 and out.loc[0, "tokens"] == 4


BAD: dict[str, tuple[list[dict[str, Any]], str]] = {
    "no-prompt-no-text": ([{"seed": 1}], "neither prompt"),
    "mistyped-temperature": ([{"prompt": "a", "temperature": "hot"}], "temperature must be"),
    "mistyped-max": ([{"prompt": "a", "max_new_tokens": "5"}], "max_new_tokens must be"),
    "fractional-max": ([{"prompt": "a", "max_new_tokens": 2.5}], "whole number"),
    "boolean-top-k": ([{"prompt": "a", "top_k": True}], "top_k must be"),
    "mistyped-prompt": ([{"prompt": 5}], "prompt must be a string"),
    "over-the-cap": ([{"prompt": "a", "max_new_tokens": 1001}], "between 0 and 1000"),
    "negative-temperature": ([{"prompt": "a", "temperature": -0.5}], "finite number >= 0"),
    "top-k-zero": ([{"prompt": "a", "top_k": 0}], "top_k must be >= 1"),
    "empty-prompt": ([{"prompt": ""}], "prompt is empty"),
    "short-text": ([{"prompt": "a"}, {"text": "a"}], "row 1: the text has 1 token"),
    "text-and-sampling": ([{"text": "ab", "seed": 2}], "a score row holds only text"),
}


def refusal(model: Any, rows: list[dict[str, Any]]) -> str:
    """The message of the 400 that the scoring server's own request handler answers
    ``rows`` with, in this process."""
    from mlflow.exceptions import MlflowException
    from mlflow.pyfunc.scoring_server import invocations

    body = json.dumps({"dataframe_records": rows})
    with pytest.raises(MlflowException) as info:
        invocations(body, "application/json", model, model.metadata.get_input_schema())
    assert info.value.get_http_status_code() == 400
    return str(json.loads(info.value.serialize_as_json())["message"])


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_a_malformed_request_is_a_400_with_one_line(tracking_env: Store, case: str) -> None:
    """Through the scoring server's own request handler, in this process."""
    model = pyfunc(f"runs:/{tracking_env.run_ids['ngram']}/model")
    rows, fragment = BAD[case]
    message = refusal(model, rows)
    assert fragment in message and "\n" not in message, message


def test_the_cap_on_new_tokens_comes_from_the_environment(
    tracking_env: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.exceptions import MlflowException

    monkeypatch.setenv("SEQLAB_SERVE_MAX_NEW_TOKENS", "3")
    model = pyfunc(f"runs:/{tracking_env.run_ids['ngram']}/model")
    assert model.predict([{"prompt": "a", "max_new_tokens": 3}]).loc[0, "tokens"] == 3
    with pytest.raises(MlflowException, match="between 0 and 3"):
        model.predict([{"prompt": "a", "max_new_tokens": 4}])


# ---- the real server ---------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    """Nothing listens there, and a new server could bind it (closed connections may
    linger in TIME_WAIT, which servers bind past with SO_REUSEADDR, as uvicorn does)."""
    with socket.socket() as sock:
        sock.settimeout(2)
        if sock.connect_ex(("127.0.0.1", port)) == 0:
            return False
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def post(port: int, payload: Any) -> tuple[int, str]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/invocations",
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


@contextlib.contextmanager
def serving(model_uri: str, tracking: str, cwd: Path) -> Iterator[int]:
    """``mlflow models serve`` in its own process group, from ``cwd``; yields its port
    once ``/ping`` answers, and stops the whole group afterwards."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(MLFLOW_TRACKING_URI=tracking, OMP_NUM_THREADS="1", MLFLOW_DISABLE_TELEMETRY="true")
    # the CLI runs ``uvicorn`` by name: the virtual environment's bin must be on PATH
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    log = (cwd / f"serve-{port}.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri,
         "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
        cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, (cwd / f"serve-{port}.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the server did not answer /ping"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.3)
        yield port
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()
        deadline = time.monotonic() + 10
        while not port_is_free(port) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert port_is_free(port), f"port {port} still taken after the server stopped"


@pytest.mark.slow
@pytest.mark.parametrize("plugin", SERVED)
def test_mlflow_models_serve_answers_completions_scores_and_bad_requests(
    store: Store, tmp_path: Path, plugin: str
) -> None:
    loaded = resolve_model(f"models:/seqlab-{plugin}@champion", store.uri)
    with serving(f"models:/seqlab-{plugin}@champion", store.uri, tmp_path) as port:
        status, body = post(port, {"dataframe_records": ROWS})
        assert status == 200, body
        same(json.loads(body)["predictions"], expected(loaded, ROWS))
        split = {"columns": ["text"], "data": [[TEXT]]}
        status, body = post(port, {"dataframe_split": split})
        assert status == 200, body
        same(json.loads(body)["predictions"], expected(loaded, [{"text": TEXT}]))
        for case in ("no-prompt-no-text", "mistyped-temperature", "over-the-cap",
                     "negative-temperature", "top-k-zero"):  # fmt: skip
            rows, fragment = BAD[case]
            status, body = post(port, {"dataframe_records": rows})
            assert status == 400, (case, body)
            message = json.loads(body)["message"]
            assert fragment in message and "\n" not in message, (case, message)
            assert "Traceback" not in body, (case, body)
