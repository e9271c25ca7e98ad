"""The CLI as a user runs it: subprocesses, exit codes, one-line errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.conftest import WONDERLAND, assert_one_line_error, run_cli

pytestmark = pytest.mark.slow
SMALL = "synthetic:markov?length=6000"


def _tiny_config(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(
        "data: {context_len: 8}\n"
        "models:\n"
        "  - {plugin: ngram, params: {order: 3}}\n"
        "  - {plugin: lstm, params: {embedding_dim: 8, hidden_size: 16}}\n"
        "train: {batch_size: 64, max_batches_per_epoch: 20}\n"
    )
    return path


def test_data_inspect_reproduces_the_tutorial_counts() -> None:
    result = run_cli("data", "inspect", str(WONDERLAND), "--clean", "seed", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["characters"] == 142644
    assert report["vocab_size"] == 44
    assert report["specials"] == ["<unk>"]
    assert report["documents"] == 1
    assert sum(report["splits"].values()) == 142644
    assert re.fullmatch(r"[0-9a-f]{64}", report["sha256"])


def test_data_inspect_table_output() -> None:
    result = run_cli("data", "inspect", SMALL)
    assert result.returncode == 0, result.stderr
    assert "vocab_size" in result.stdout and "sha256" in result.stdout


def test_run_prints_leaderboard_and_records_every_model(
    prefect_server: str, tracking_uri: str, tmp_path: Path
) -> None:
    result = run_cli(
        "run",
        "--config",
        str(_tiny_config(tmp_path)),
        "--data",
        SMALL,
        "--clean",
        "none",
        "--models",
        "ngram,lstm",
        "--epochs",
        "1",
        "--tracking-uri",
        tracking_uri,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    for column in ("test bpc", "ppl", "acc@1", "train s", "ngram", "lstm"):
        assert column in result.stdout
    parent_id = re.search(r"MLflow parent run: ([0-9a-f]{32})", result.stdout).group(1)  # type: ignore[union-attr]
    client = MlflowClient(tracking_uri)
    parent = client.get_run(parent_id)
    assert parent.data.params["train.epochs"] == "1"
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'"
    )
    assert sorted(c.info.run_name for c in children) == ["lstm", "ngram"]
    assert all("test_bpc" in c.data.metrics for c in children)
    assert (
        client.get_experiment(parent.info.experiment_id).name
        == "seqlab/synthetic-markov/next-token"
    )

    # a later bad run against the same store loses nothing already recorded
    bad = run_cli("run", "--data", "/no/such/file.txt", "--tracking-uri", tracking_uri)
    assert_one_line_error(bad, "/no/such/file.txt")
    assert client.get_run(parent_id).info.status == "FINISHED"
    assert len(client.search_runs([parent.info.experiment_id])) == 3


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("make_source", "fragments"),
    [
        (lambda d: str(d / "missing.txt"), ["missing.txt", "no such file"]),
        (lambda d: str(_write(d / "empty.txt", b"")), ["empty.txt", "empty"]),
        (lambda d: str(_write(d / "blob.bin", bytes(range(256)) * 8)), ["blob.bin", "binary"]),
        (
            lambda d: str(_write(d / "latin.txt", "caf\xe9 au lait".encode("latin-1") * 30)),
            ["latin.txt", "byte 3", "--errors ignore"],
        ),
        (
            lambda d: str((d / "bins").mkdir() or _write(d / "bins" / "x.bin", b"\0" * 99).parent),
            ["no text files"],
        ),
        (lambda d: "ftp://example.org/x.txt", ["unknown source scheme", "ftp"]),
        (
            lambda d: str(_write(d / "short.txt", b"tiny text\n")),
            ["corpus too short", "context_len"],
        ),
    ],
    ids=["missing", "empty", "binary", "undecodable", "no-text-dir", "scheme", "too-short"],
)
def test_bad_data_is_one_line(
    prefect_server: str, tracking_uri: str, tmp_path: Path, make_source, fragments
) -> None:
    source = make_source(tmp_path)
    result = run_cli("run", "--data", source, "--models", "ngram", "--tracking-uri", tracking_uri)
    assert_one_line_error(result, *fragments)


def test_errors_ignore_opts_into_the_tutorial_policy(tmp_path: Path) -> None:
    path = _write(tmp_path / "latin.txt", "caf\xe9 au lait. ".encode("latin-1") * 40)
    strict = run_cli("data", "inspect", str(path), "--json")
    assert_one_line_error(strict, "byte 3")
    ignored = run_cli("data", "inspect", str(path), "--errors", "ignore", "--json")
    assert ignored.returncode == 0, ignored.stderr
    assert json.loads(ignored.stdout)["characters"] == len("caf au lait. " * 40)


def test_unknown_plugin_lists_the_known_ones() -> None:
    result = run_cli("run", "--data", SMALL, "--models", "ngram,transformer")
    assert_one_line_error(result, "unknown plugin 'transformer'", "lstm", "ngram")


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--epochs", "0"], ["train.epochs"]),
        (["--level", "byte"], ["data.level"]),
        (["--clean", "fancy"], ["data.clean"]),
        (["--tracking-uri", "./mlruns"], ["tracking-uri"]),
    ],
)
def test_invalid_config_value_names_the_field(args: list[str], fragments: list[str]) -> None:
    result = run_cli("run", "--data", SMALL, *args)
    assert_one_line_error(result, *fragments)


@pytest.mark.parametrize(
    ("model", "field"),
    [
        ("{plugin: lstm, params: {hidden_size: -3}}", "hidden_size"),
        ("{plugin: ngram, params: {order: 0}}", "order"),
        ("{plugin: ngram, params: {smoothing: lidstone, k: 0}}", "k"),
        ("{plugin: ngram, params: {smoothing: absolute, discount: 1.5}}", "discount"),
    ],
    ids=["hidden_size", "order", "k", "discount"],
)
def test_invalid_plugin_param_in_config_file(tmp_path: Path, model: str, field: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(f"models:\n  - {model}\n")
    result = run_cli("run", "--config", str(path), "--data", SMALL)
    plugin = model.split("plugin: ")[1].split(",")[0]
    assert_one_line_error(result, f"models.{plugin}", field)


@pytest.mark.parametrize("plugin", ["ngram", "lstm", "rnn", "gru"])
def test_check_plugin_passes_for_builtins(plugin: str) -> None:
    result = run_cli("check-plugin", plugin)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "save_load_roundtrip" in result.stdout
    assert "no check failed" in result.stdout
    assert "FAIL" not in result.stdout


def test_plugins_json_lists_builtins() -> None:
    result = run_cli("plugins", "--json")
    assert result.returncode == 0, result.stderr
    listed = {p["name"]: p for p in json.loads(result.stdout)}
    for name in ("ngram", "lstm"):
        assert listed[name]["distribution"] == "seqlab"
        assert listed[name]["status"] == "ok"


def test_wonderland_done_when_and_checkpoint_scoring(
    prefect_server: str, tracking_uri: str, tmp_path: Path
) -> None:
    """The issue's acceptance command, then the logged checkpoints scored again."""
    import mlflow

    result = run_cli(
        "run",
        "--data",
        str(WONDERLAND),
        "--clean",
        "seed",
        "--models",
        "ngram,lstm",
        "--epochs",
        "1",
        "--tracking-uri",
        tracking_uri,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    parent_id = re.search(r"MLflow parent run: ([0-9a-f]{32})", result.stdout).group(1)  # type: ignore[union-attr]
    client = MlflowClient(tracking_uri)
    exp_id = client.get_run(parent_id).info.experiment_id
    assert client.get_experiment(exp_id).name == "seqlab/wonderland/next-token"
    children = client.search_runs(
        [exp_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'"
    )
    assert sorted(c.info.run_name for c in children) == ["lstm", "ngram"]
    for child in children:
        bpc = child.data.metrics["test_bpc"]
        assert 1.5 < bpc < 3.0, bpc  # uniform over 45 symbols would be 5.49
        assert child.data.metrics["test_n_tokens"] == 14264
        ckpt = mlflow.artifacts.download_artifacts(
            f"{child.info.artifact_uri}/model/checkpoint.pt",
            dst_path=str(tmp_path / child.info.run_id),
        )
        scored = run_cli("score", ckpt, "--json")
        assert scored.returncode == 0, scored.stderr
        assert json.loads(scored.stdout)["test_bpc"] == pytest.approx(bpc, rel=1e-9)

    # the same checkpoint against other data: its vocabulary does not match
    mismatch = run_cli("score", ckpt, "--data", SMALL, "--clean", "none")
    assert_one_line_error(mismatch, "vocabulary", "does not match")


def test_export_arpa_from_a_checkpoint(tmp_path: Path) -> None:
    """A fitted n-gram saved as a checkpoint becomes an ARPA file that reproduces it."""
    import numpy as np

    from pipeline_core.config import DataConfig
    from pipeline_core.experiment import fit_data
    from pipeline_core.vectorize import vectorize
    from plugins.ngram import NGramModel
    from plugins.ngram_arpa import read_arpa

    corpus = vectorize("the cat sat on the mat. " * 50, DataConfig(context_len=4))
    model = NGramModel(len(corpus.vocab), {"order": 3})
    model.fit(fit_data(corpus))
    ckpt = model.save(tmp_path / "m.pt", vocab=corpus.vocab.tokens, plugin="ngram")
    result = run_cli("export-arpa", str(ckpt), str(tmp_path / "m.arpa"))
    assert result.returncode == 0, result.stderr
    arpa = read_arpa(tmp_path / "m.arpa")
    context = corpus.test[None, -2:].astype(np.int64)
    ours = model.log_proba(context)[0]
    tokens = corpus.vocab.tokens
    history = [tokens[i] for i in context[0]]
    for token_id in (1, 2, 3):
        expected = ours[token_id] / np.log(10)
        assert arpa.log10_prob(tokens[token_id], history) == pytest.approx(expected, abs=1e-6)
