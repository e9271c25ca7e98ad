"""``seqlab generate`` and ``seqlab score --text/--file`` on real models: an n-gram and
an LSTM trained through the project's stages into a real SQLite MLflow store, reached
by checkpoint path, folder, ``runs:/<run_id>/model`` and the model registry
(``models:/<name>@<alias>``, ``models:/<name>/<version>``)."""

from __future__ import annotations

import json
import math
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline_core.generation import encode_prompt, generate, sequence_log_prob
from pipeline_core.model_uri import LoadedModel, resolve_model
from seqlab.cli import main
from tests.comparisons import compare_in_process
from tests.conftest import CliResult, assert_one_line_error, run_cli

SOURCE = "synthetic:markov?length=3000"
CONTEXT_LEN = 8
REGISTERED = "tiny-lm"
ALIAS = {"lstm": "champion", "ngram": "baseline"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@dataclass(frozen=True)
class Store:
    """A store holding one comparison (ngram and lstm runs), both registered."""

    uri: str
    run_ids: dict[str, str]
    versions: dict[str, str]
    checkpoints: dict[str, Path]
    test_bpc: dict[str, float]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """Train a tiny n-gram and LSTM the way ``seqlab run`` does (its stages, without
    Prefect), record them as child runs of one comparison and register both."""
    from mlflow import MlflowClient

    from pipeline_core.config import load_run_config
    from pipeline_core.tracking import fetch_run_artifact, register_model_version

    folder = tmp_path_factory.mktemp("generate-store")
    uri = f"sqlite:///{folder / 'mlruns.db'}"
    config = load_run_config(
        None,
        {
            "data.source": SOURCE,
            "data.clean": "none",
            "data.context_len": CONTEXT_LEN,
            "models": [
                {"plugin": "ngram", "params": {"order": 3}},
                {"plugin": "lstm", "params": {"embedding_dim": 8, "hidden_size": 16}},
            ],
            "train.epochs": 1,
            "train.batch_size": 32,
            "train.max_batches_per_epoch": 10,
            "train.progress": False,
            "train.num_threads": 1,
            "tracking.tracking_uri": uri,
            "tracking.samples": 0,
            "tracking.gradient_flow": False,
        },
    )
    run_ids = compare_in_process(config).run_ids
    versions = {
        name: register_model_version(REGISTERED, run_ids[name], alias=ALIAS[name], tracking_uri=uri)
        for name in ("lstm", "ngram")
    }
    checkpoints = {}
    for name, run_id in run_ids.items():
        fetched = fetch_run_artifact(run_id, "model", folder / name, uri)
        checkpoints[name] = fetched.path / "checkpoint.pt"
    client = MlflowClient(uri)
    bpc = {n: float(client.get_run(r).data.metrics["test_bpc"]) for n, r in run_ids.items()}
    return Store(uri, run_ids, versions, checkpoints, bpc)


def cli(capfd: pytest.CaptureFixture[str], *args: str) -> CliResult:
    """``seqlab ARGS`` in this process (fast), as ``main`` runs it."""
    capfd.readouterr()
    code = 0
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        saved, sys.argv = sys.argv, ["seqlab", *args]
        try:
            main()
        except SystemExit as exit_info:
            code = int(exit_info.code or 0)
        finally:
            sys.argv = saved
    out, err = capfd.readouterr()
    return CliResult(code, out, err)


def ok_json(result: CliResult) -> dict[str, object]:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return dict(json.loads(result.stdout))


def uris(store: Store, name: str) -> list[str]:
    """Every way of naming the same model."""
    return [
        f"runs:/{store.run_ids[name]}/model",
        f"runs:/{store.run_ids[name]}",
        f"models:/{REGISTERED}@{ALIAS[name]}",
        f"models:/{REGISTERED}/{store.versions[name]}",
        str(store.checkpoints[name]),
        str(store.checkpoints[name].parent),
    ]


def hand_greedy(loaded: LoadedModel, prompt: str, n: int) -> str:
    ids, _ = encode_prompt(prompt, loaded.vocab, loaded.level)
    out = generate(loaded.model, ids, n, loaded.context_len, temperature=0.0)
    return prompt + "".join(loaded.vocab.decode(out))


@pytest.mark.parametrize("name", ["ngram", "lstm"])
def test_generate_is_the_same_from_every_uri(
    store: Store, name: str, capfd: pytest.CaptureFixture[str]
) -> None:
    prompt = "abcab"
    loaded = resolve_model(store.checkpoints[name])
    expected = hand_greedy(loaded, prompt, 40)
    for uri in uris(store, name):
        args = ["generate", uri, "--prompt", prompt, "-n", "40", "--temperature", "0"]
        figures = ok_json(cli(capfd, *args, "--tracking-uri", store.uri, "--json"))
        assert figures["text"] == expected, uri
        assert figures["plugin"] == name
        assert figures["continuation"] == expected[len(prompt) :]
        assert figures["tokens"] == 40 and figures["unknown"] == 0
        assert figures["generation"] == ("carried state" if name == "lstm" else "windows")
        if uri.startswith(("runs:", "models:")):
            assert figures["run_id"] == store.run_ids[name]
    plain = cli(capfd, "generate", uris(store, name)[2], "--prompt", prompt, "-n", "40",
                "--temperature", "0", "--tracking-uri", store.uri)  # fmt: skip
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout == expected + "\n" and plain.stderr == ""


@pytest.mark.parametrize("name", ["ngram", "lstm"])
def test_sampling_is_seeded_and_top_k_one_is_greedy(
    store: Store, name: str, capfd: pytest.CaptureFixture[str]
) -> None:
    uri = f"models:/{REGISTERED}@{ALIAS[name]}"

    def text(*extra: str) -> object:
        base = ["generate", uri, "--prompt", "ab", "-n", "60", "--tracking-uri", store.uri]
        return ok_json(cli(capfd, *base, *extra, "--json"))["text"]

    assert text("--seed", "3") == text("--seed", "3")
    assert text("--seed", "3") != text("--seed", "4")
    greedy = text("--temperature", "0")
    assert greedy == text("--temperature", "0", "--seed", "9")
    assert text("--temperature", "1.5", "--top-k", "1", "--seed", "5") == greedy
    assert ok_json(cli(capfd, "generate", uri, "--prompt", "ab", "-n", "0", "--tracking-uri",
                       store.uri, "--json"))["text"] == "ab"  # fmt: skip


def test_unknown_prompt_characters_are_one_warning(
    store: Store, capfd: pytest.CaptureFixture[str]
) -> None:
    result = cli(capfd, "generate", str(store.checkpoints["ngram"]), "--prompt", "aXbYX",
                 "-n", "5", "--json")  # fmt: skip
    figures = ok_json(result)
    assert figures["unknown"] == 3 and str(figures["text"]).startswith("aXbYX")
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("warning: 3 characters"), lines
    assert "'X', 'Y'" in lines[0] and "<unk>" in lines[0]


def hand_log_prob(loaded: LoadedModel, ids: np.ndarray) -> float:
    """log p(ids[1:]) computed token by token, the way the model was scored in its run:
    the state carried from the first token for a model trained by stateful BPTT, else a
    fresh window of at most context_len tokens (the n-gram; the LSTM trained on windows)."""
    model = loaded.model
    if loaded.scoring == "carried state":
        total, state = 0.0, None
        assert isinstance(model, torch.nn.Module)
        model.eval()
        with torch.no_grad():
            for t in range(len(ids) - 1):
                logits, state = model(torch.tensor([[int(ids[t])]]), state)
                logp = torch.log_softmax(logits[0, -1].double(), dim=-1)
                total += float(logp[int(ids[t + 1])])
        return total
    return sum(
        float(model.log_proba(ids[None, max(0, t - loaded.context_len) : t])[0, ids[t]])
        for t in range(1, len(ids))
    )


@pytest.mark.parametrize("name", ["ngram", "lstm"])
def test_score_text_is_the_sequence_log_prob(
    store: Store, name: str, capfd: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    text = "abcabdcabXbcaabccbadcbabcab" * 2
    loaded = resolve_model(store.checkpoints[name])
    ids, unknown = encode_prompt(text, loaded.vocab, loaded.level)
    by_hand = hand_log_prob(loaded, ids)
    carry = loaded.scoring == "carried state"
    assert sequence_log_prob(loaded.model, ids, CONTEXT_LEN, carry_state=carry) == pytest.approx(
        by_hand, rel=1e-6
    )
    file = tmp_path / "text.txt"
    file.write_text(text, encoding="utf-8")
    for uri in (f"runs:/{store.run_ids[name]}/model", f"models:/{REGISTERED}@{ALIAS[name]}"):
        for source in (["--text", text], ["--file", str(file)]):
            result = cli(capfd, "score", uri, *source, "--tracking-uri", store.uri, "--json")
            figures = ok_json(result)
            assert figures["log_prob_nats"] == pytest.approx(by_hand, rel=1e-6)
            assert figures["log_prob_bits"] == pytest.approx(by_hand / math.log(2), rel=1e-6)
            assert figures["tokens_scored"] == len(text) - 1 == figures["characters_scored"]
            assert figures["bpc"] == pytest.approx(-by_hand / math.log(2) / (len(text) - 1))
            assert figures["nll"] == pytest.approx(-by_hand / (len(text) - 1))
            assert figures["unknown"] == unknown == 2
            assert figures["scoring"] == loaded.scoring  # as scored in its run
            assert "warning: 2 characters of the text" in result.stderr
    plain = cli(capfd, "score", str(store.checkpoints[name]), "--text", "abcab")
    assert plain.returncode == 0 and "bpc: " in plain.stdout and "tokens_scored: 4" in plain.stdout


def test_score_text_applies_a_cleaning_preset(
    store: Store, capfd: pytest.CaptureFixture[str]
) -> None:
    ckpt = str(store.checkpoints["ngram"])
    cleaned = ok_json(cli(capfd, "score", ckpt, "--text", "ABCAB", "--clean", "seed", "--json"))
    lower = ok_json(cli(capfd, "score", ckpt, "--text", "abcab", "--json"))
    assert cleaned["unknown"] == 0 and cleaned["clean"] == "seed"
    assert cleaned["log_prob_nats"] == pytest.approx(lower["log_prob_nats"])


def test_score_a_split_from_a_uri_matches_the_run(
    store: Store, capfd: pytest.CaptureFixture[str]
) -> None:
    for name in ("ngram", "lstm"):
        uri = f"models:/{REGISTERED}@{ALIAS[name]}"
        figures = ok_json(cli(capfd, "score", uri, "--tracking-uri", store.uri, "--json"))
        assert figures["split"] == "test" and figures["source"] == SOURCE
        assert figures["test_bpc"] == pytest.approx(store.test_bpc[name], rel=1e-9)


NO_RUN = "0123456789abcdef0123456789abcdef"
#: name -> (arguments, fragments of the one error line); {run} is the n-gram's run id,
#: {tmp} a fresh folder
BAD: dict[str, tuple[list[str], list[str]]] = {
    "unknown run id": (
        ["generate", f"runs:/{NO_RUN}/model", "--prompt", "ab"],
        ["no MLflow run", NO_RUN],
    ),
    "unknown alias": (
        ["generate", f"models:/{REGISTERED}@nope", "--prompt", "ab"],
        ["no alias 'nope'", "champion (version 1)", "baseline (version 2)"],
    ),
    "unknown registered model": (
        ["generate", "models:/no-such-model@champion", "--prompt", "ab"],
        ["no registered model 'no-such-model'", REGISTERED],
    ),
    "unknown version": (
        ["generate", f"models:/{REGISTERED}/7", "--prompt", "ab"],
        ["no version 7", "1, 2"],
    ),
    "models uri without version": (
        ["generate", f"models:/{REGISTERED}", "--prompt", "ab"],
        ["names no registered model"],
    ),
    "missing artifact": (
        ["generate", "runs:/{run}/nope", "--prompt", "ab"],
        ["no artifact 'nope'", "model/"],
    ),
    "unknown scheme": (
        ["generate", "s3://bucket/model", "--prompt", "ab"],
        ["unknown URI scheme 's3'"],
    ),
    "missing checkpoint": (
        ["generate", "{tmp}/missing.pt", "--prompt", "ab"],
        ["model not found", "missing.pt"],
    ),
    "folder without checkpoint": (["generate", "{tmp}", "--prompt", "ab"], ["no checkpoint.pt"]),
    "no prompt": (["generate", "runs:/{run}/model"], ["give --prompt"]),
    "empty prompt": (["generate", "runs:/{run}/model", "--prompt", ""], ["--prompt", "empty"]),
    "negative n": (["generate", "runs:/{run}/model", "--prompt", "a", "-n", "-1"], ["-n", ">= 0"]),
    "negative temperature": (
        ["generate", "runs:/{run}/model", "--prompt", "a", "--temperature", "-1"],
        ["--temperature", "-1"],
    ),
    "top-k 0": (
        ["generate", "runs:/{run}/model", "--prompt", "a", "--top-k", "0"],
        ["--top-k", ">= 1"],
    ),
    "missing file": (
        ["score", "runs:/{run}/model", "--file", "{tmp}/no.txt"],
        ["--file", "no.txt"],
    ),
    "text and split": (
        ["score", "runs:/{run}/model", "--text", "abc", "--split", "val"],
        ["--text/--file", "--split"],
    ),
    "text too short": (["score", "runs:/{run}/model", "--text", "a"], ["at least two"]),
    "text and file": (
        ["score", "runs:/{run}/model", "--text", "ab", "--file", "{tmp}"],
        ["one of them"],
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_inputs_are_one_error_line(
    store: Store, case: str, capfd: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    args, fragments = BAD[case]
    filled = [a.format(run=store.run_ids["ngram"], tmp=tmp_path) for a in args]
    result = cli(capfd, *filled, "--tracking-uri", store.uri)
    assert_one_line_error(result, *fragments)
    assert result.stdout == ""


def test_a_missing_store_is_not_created(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "none.db"
    result = cli(capfd, "generate", f"runs:/{NO_RUN}/model", "--prompt", "ab",
                 "--tracking-uri", f"sqlite:///{db}")  # fmt: skip
    assert_one_line_error(result, "no MLflow store", str(db))
    assert not db.exists()


@pytest.mark.slow
def test_generate_and_score_as_a_user_runs_them(store: Store) -> None:
    uri = f"models:/{REGISTERED}@champion"
    tracking = ["--tracking-uri", store.uri]
    generated = run_cli("generate", uri, "--prompt", "abc", "-n", "20", "--seed", "1", *tracking)
    assert generated.returncode == 0, generated.stderr
    assert generated.stderr == "" and generated.stdout.startswith("abc")
    assert generated.stdout.count("\n") == 1  # the text, then one newline
    scored = run_cli("score", uri, "--text", "abcabc", "--json", *tracking)
    assert json.loads(scored.stdout)["tokens_scored"] == 5
    bad = run_cli("generate", f"models:/{REGISTERED}@gone", "--prompt", "a", *tracking)
    assert_one_line_error(bad, "no alias 'gone'", "champion")
