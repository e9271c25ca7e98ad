"""The bad-input matrix: every way a user can get an input wrong is answered by exit
code 2 and one ``error: ...`` line naming what is wrong (a usage error may add the
``Usage:`` line before it), never a traceback, and never at the cost of a run already
recorded in MLflow.

Each case runs the real CLI in a process of its own (forked from one interpreter that
imported seqlab once: tests/cli_forks.py). A module fixture first records a small
comparison into a SQLite store and snapshots it (the database bytes, and every run's id,
status, metrics and artifact list); every case checks the snapshot afterwards. Most
cases fail before Prefect starts; those that need the data prepared run last.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.cli_forks import run_many
from tests.conftest import CliResult, run_cli

pytestmark = pytest.mark.slow

MARKOV = "synthetic:markov?length=3000"
TEXT = (
    "The quick brown fox jumps over the lazy dog. Alice was beginning to get very tired "
    "of sitting by her sister on the bank, and of having nothing to do.\n"
) * 40


@dataclass(frozen=True)
class Store:
    """The recorded comparison: where it lives and what it held when recorded."""

    root: Path
    uri: str
    db: Path
    snapshot: dict[str, Any]
    fingerprint: str


def _fingerprint(root: Path) -> str:
    """sha256 over the database and every artifact file: equal means nothing changed."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.name.endswith(".lock")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _artifacts(client: Any, run_id: str, path: str | None = None) -> list[str]:
    out: list[str] = []
    for item in client.list_artifacts(run_id, path):
        out.extend(_artifacts(client, run_id, item.path) if item.is_dir else [item.path])
    return sorted(out)


def _snapshot(uri: str) -> dict[str, Any]:
    """Every run of the store: status, end time, metrics, params and artifact list."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = {}
    for run in client.search_runs(experiments, max_results=1000):
        runs[run.info.run_id] = {
            "status": run.info.status,
            "end_time": run.info.end_time,
            "metrics": dict(run.data.metrics),
            "params": dict(run.data.params),
            "artifacts": _artifacts(client, run.info.run_id),
        }
    return runs


@pytest.fixture(scope="module")
def store(prefect_server: str, tmp_path_factory: pytest.TempPathFactory) -> Store:
    root = tmp_path_factory.mktemp("recorded")
    uri = f"sqlite:///{root / 'mlruns.db'}"
    result = run_cli("run", "--data", MARKOV, "--models", "ngram", "--tracking-uri", uri, cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    snapshot = _snapshot(uri)
    assert len(snapshot) == 2  # the parent and the n-gram's child run
    assert any("model/checkpoint.pt" in r["artifacts"] for r in snapshot.values())
    return Store(root, uri, root / "mlruns.db", snapshot, _fingerprint(root))


def assert_store_unchanged(store: Store) -> None:
    if _fingerprint(store.root) != store.fingerprint:  # bytes moved: compare what matters
        assert _snapshot(store.uri) == store.snapshot


# --------------------------------------------------------------------------- inputs

TRANSDUCE = "task: transduce\n"
SEQ2SEQ = "models: [{plugin: seq2seq}]\n"
CONFIGS = {
    "bad_yaml.yaml": "data:\n\tsource: x\n",
    "list.yaml": "- data\n- models\n",
    "unknown_top.yaml": "dataa: {source: x}\n",
    "unknown_nested.yaml": "data: {sourse: x}\n",
    "wrong_type.yaml": "train: {epochs: three}\n",
    "out_of_range.yaml": "data: {context_len: 0}\n",
    "splits.yaml": "data: {splits: [0.5, 0.4, 0.3]}\n",
    "models_not_list.yaml": "models: ngram\n",
    "model_no_plugin.yaml": "models:\n  - {name: a}\n",
    "duplicate_models.yaml": "models:\n  - {plugin: ngram}\n  - {plugin: ngram}\n",
    "no_models.yaml": "models: []\n",
    "model_train.yaml": "models:\n  - {plugin: lstm, train: {lr: -1}}\n",
    "ngram_order.yaml": "models:\n  - {plugin: ngram, params: {order: 0}}\n",
    "ngram_smoothing.yaml": "models:\n  - {plugin: ngram, params: {smoothing: magic}}\n",
    "ngram_unknown.yaml": "models:\n  - {plugin: ngram, params: {ordre: 3}}\n",
    "ngram_laplace.yaml": "models:\n  - {plugin: ngram, params: {smoothing: laplace, k: 2}}\n",
    "lstm_type.yaml": "models:\n  - {plugin: lstm, params: {hidden_size: big}}\n",
    "lstm_unknown.yaml": "models:\n  - {plugin: lstm, params: {layers: 2}}\n",
    "step.yaml": "data: {step: 100000}\nmodels:\n  - {plugin: ngram, params: {order: 2}}\n",
    # the recurrent family and its tasks
    "rnn_hidden.yaml": "models:\n  - {plugin: rnn, params: {hidden_size: 0}}\n",
    "gru_layers.yaml": "models:\n  - {plugin: gru, params: {num_layers: 0}}\n",
    "lstm_dropout.yaml": "models:\n  - {plugin: lstm, params: {dropout: 1.0}}\n",
    "birnn_cell.yaml": "models:\n  - {plugin: birnn, params: {cell: transformer}}\n",
    "crnn_kernel.yaml": "models:\n  - {plugin: crnn, params: {kernel_size: 0}}\n",
    "s2s_tf.yaml": TRANSDUCE + "models: [{plugin: seq2seq, params: {teacher_forcing: 1.5}}]\n",
    "s2s_beam.yaml": TRANSDUCE + "models: [{plugin: seq2seq, params: {beam_size: 0}}]\n",
    "transduce_beam.yaml": TRANSDUCE + "task_options: {beam_size: 0}\n" + SEQ2SEQ,
    "transduce_key.yaml": TRANSDUCE + "task_options: {pears: tsv}\n" + SEQ2SEQ,
    "transduce_no_tsv.yaml": TRANSDUCE + "task_options: {pairs: tsv}\n" + SEQ2SEQ,
    "transduce_ngram.yaml": TRANSDUCE + "models: [{plugin: ngram}]\n",
    "blank_max.yaml": "task: fill-blank\ntask_options: {max_positions: 0}\n"
    "models: [{plugin: ngram}]\n",
}


@pytest.fixture(scope="module")
def paths(store: Store, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Every bad file a case names, made once."""
    import torch

    from plugins.lstm import LSTMModel

    tmp = tmp_path_factory.mktemp("inputs")
    (tmp / "empty.txt").write_bytes(b"")
    (tmp / "blank.txt").write_text("  \n\t\n")
    (tmp / "binary.bin").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8)
    (tmp / "latin1.txt").write_bytes("caf\u00e9 cr\u00e8me br\u00fbl\u00e9e\n".encode("latin-1"))
    (tmp / "text.txt").write_text(TEXT)
    (tmp / "nonascii.txt").write_text("\u00e9\u00e8\u00ea \u00fc\u00f1 \u00e7\u00e0\n" * 50)
    (tmp / "short.txt").write_text("hello there\n")
    (tmp / "afile").write_text("a regular file\n")
    (tmp / "emptydir").mkdir()
    (tmp / "bindir").mkdir()
    (tmp / "bindir" / "a.bin").write_bytes(b"\x00\x01\x02" * 100)
    (tmp / "bindir" / "b.txt").write_bytes(b"")
    for name, text in CONFIGS.items():
        (tmp / name).write_text(text)
    (tmp / "undecodable.yaml").write_bytes(b"data: {source: \xff\xfe}\n")
    (tmp / "pairs.tsv").write_text("alice\tAlice\nthe rabbit\tThe Rabbit\nno tab here\n" * 40)
    # the sequence-level tasks: labelled examples (classify) and numbers (regress)
    labelled = "".join(f"hello world {i}\tgreet\ngoodbye now {i}\tbye\n" for i in range(20))
    (tmp / "no_label.tsv").write_text(labelled + "a line without its label\n")
    (tmp / "one_label.tsv").write_text(labelled.replace("\tbye", "\tgreet"))
    # too short for any window: the example's own fault is named, not the window's
    (tmp / "tiny_no_label.tsv").write_text("hello\tgreet\nbye\n")
    (tmp / "one_folder" / "pos").mkdir(parents=True)
    for i in range(3):
        (tmp / "one_folder" / "pos" / f"{i}.txt").write_text(f"a positive review {i} " * 5)
    series = ["a,b", *(f"{i}.5,{i}" for i in range(40))]
    for name, bad in {"non_numeric": "3,x", "empty_cell": "3,", "nan": "NaN,3"}.items():
        (tmp / f"{name}.csv").write_text("\n".join([*series[:8], bad, *series[8:]]) + "\n")
    steps = ["0.1,0;0.2,1;0.3,0\t0.2"] * 30
    steps[6] = "0.1,0;abc,1;0.3,0\t0.2"
    (tmp / "steps.txt").write_text("\n".join(steps) + "\n")
    (tmp / "tsv.yaml").write_text(
        f"task: transduce\ntask_options: {{pairs: tsv, tsv: {tmp / 'pairs.tsv'}}}\n"
        "models: [{plugin: seq2seq}]\n"
    )

    recorded = sorted(store.root.glob("mlartifacts/**/model/checkpoint.pt"))
    ngram_ckpt = tmp / "ngram.pt"
    ngram_ckpt.write_bytes(recorded[0].read_bytes())
    data = ngram_ckpt.read_bytes()
    (tmp / "truncated.pt").write_bytes(data[: len(data) // 2])
    torch.save({"format": 99, "plugin": "ngram"}, tmp / "wrong_format.pt")
    payload = torch.load(ngram_ckpt, weights_only=True)
    torch.save({k: v for k, v in payload.items() if k != "state"}, tmp / "no_state.pt")
    lstm = LSTMModel.create(7, {"embedding_dim": 4, "hidden_size": 8})
    lstm.save(tmp / "lstm.pt", vocab=payload["vocab"], plugin="lstm", extra=payload["extra"])
    return {
        "tmp": str(tmp),
        "store": store.uri,
        "ngram": str(ngram_ckpt),
        "lstm": str(tmp / "lstm.pt"),
    }


@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]
    fragments: tuple[str, ...]
    cwd: str | None = None


def case(id: str, args: str | list[str], *fragments: str, cwd: str | None = None) -> Any:
    argv = tuple(args.split()) if isinstance(args, str) else tuple(args)
    return pytest.param(Case(id, argv, fragments, cwd), id=id)


MODELS_SET = "models=[{{plugin: lstm, params: {{num_layers: 9}}}}]"
BIG_STATES = "synthetic:markov?alphabet=26&order=5"
BIG_TABLE = "synthetic:markov?alphabet=10&order=6"
STATEFUL = " --set train.bptt=stateful --set train.batch_size=1000"
MIN_FREQ = "--set data.min_freq=1000"
ALL_UNK = ("<unk>", "min_freq=1000", "100.0%")
RUN = "run --tracking-uri {store} --models ngram"  # the recorded store, a fast model
CFG = "run --tracking-uri {store} --config {tmp}/"  # + a config file of CONFIGS
LSTM = "run --tracking-uri {store} --models lstm --data " + MARKOV
FRESH = f"run --models ngram --data {MARKOV} --tracking-uri"  # + a tracking URI
INSPECT = "data inspect {tmp}/"
# the sequence-level tasks, on a model that can learn them; one tiny epoch at most
TINY = "--models lstm --epochs 1 --set train.max_batches_per_epoch=1"
CLASSIFY = f"run --tracking-uri {{store}} {TINY} --task classify --data {{tmp}}/"
REGRESS = f"run --tracking-uri {{store}} {TINY} --task regress --data {{tmp}}/"
KNOWN_SYNTHETIC = ("adding", "copy", "markov", "parity", "reber")

CASES = [
    # ---- usage: flags and arguments the command line itself refuses
    case("epochs-not-int", f"{RUN} --epochs abc", "--epochs", "integer"),
    case("unknown-flag", f"{RUN} --bogus-flag", "--bogus-flag"),
    case("unknown-command", "frobnicate", "frobnicate"),
    case("score-no-argument", "score", "MODEL"),
    case("export-arpa-no-output", "export-arpa {ngram}", "output"),
    case("inspect-no-source", "data inspect", "source"),
    case("inspect-context-not-int", INSPECT + "text.txt --context-len x", "--context-len"),
    case("set-without-equals", f"{RUN} --set train.bptt", "--set", "KEY=VALUE"),
    case("set-bad-yaml", f"{RUN} --set train.lr=[", "--set train.lr", "YAML"),
    case("set-unknown-key", f"{RUN} --set train.lrr=0.1", "train.lrr"),
    case("set-not-a-mapping", f"{RUN} --set train.epochs.x=1", "train.epochs"),
    # ---- values out of range or of the wrong kind, given as flags
    case("epochs-zero", f"{RUN} --epochs 0", "train.epochs", "0"),
    case("level-unknown", f"{RUN} --level sentence", "data.level", "sentence"),
    case("clean-unknown", f"{RUN} --clean bogus", "data.clean", "bogus"),
    case("errors-unknown", f"{RUN} --errors maybe", "data.errors", "maybe"),
    case("models-empty", "run --tracking-uri {store} --models ,", "--models"),
    case("models-unknown", "run --tracking-uri {store} --models ngram,nosuch", "nosuch", "ngram"),
    case("task-unknown", f"{RUN} --task translate", "--task", "translate"),
    case("lr-negative", f"{RUN} --set train.lr=-1", "train.lr", "-1"),
    case("batch-size-zero", f"{RUN} --set train.batch_size=0", "train.batch_size"),
    case("context-len-zero", f"{RUN} --set data.context_len=0", "data.context_len"),
    case("step-zero", f"{RUN} --set data.step=0", "data.step"),
    case("splits-sum", f"{RUN} --set data.splits=[0.5,0.5,0.5]", "data.splits", "sum to 1"),
    case("max-vocab-zero", f"{RUN} --set data.max_vocab=0", "data.max_vocab"),
    case("min-freq-zero", f"{RUN} --set data.min_freq=0", "data.min_freq"),
    case("bptt-unknown", f"{RUN} --set train.bptt=forever", "train.bptt", "forever"),
    case("device-unknown", f"{RUN} --set train.device=tpu", "train.device", "tpu"),
    case("resume-unknown-run", "run --tracking-uri {store} --resume 0123456789abcdef", "--resume"),
    # ---- config files
    case("config-missing", CFG + "nope.yaml", "nope.yaml", "not found"),
    case("config-directory", CFG + "emptydir", "emptydir"),
    case("config-bad-yaml", CFG + "bad_yaml.yaml", "bad_yaml.yaml", "line 2"),
    case("config-undecodable", CFG + "undecodable.yaml", "undecodable.yaml"),
    case("config-not-mapping", CFG + "list.yaml", "list.yaml", "mapping"),
    case("config-unknown-key", CFG + "unknown_top.yaml", "dataa"),
    case("config-unknown-nested", CFG + "unknown_nested.yaml", "data.sourse"),
    case("config-wrong-type", CFG + "wrong_type.yaml", "train.epochs", "three"),
    case("config-out-of-range", CFG + "out_of_range.yaml", "data.context_len"),
    case("config-splits", CFG + "splits.yaml", "data.splits"),
    case("config-models-not-list", CFG + "models_not_list.yaml", "models"),
    case("config-model-no-plugin", CFG + "model_no_plugin.yaml", "models.0.plugin"),
    case("config-duplicate-models", CFG + "duplicate_models.yaml", "duplicate", "ngram"),
    case("config-no-models", CFG + "no_models.yaml", "models"),
    case("config-model-train", CFG + "model_train.yaml", "models.lstm.train.lr"),
    # ---- plugin options (a model's params)
    case("ngram-order-zero", CFG + "ngram_order.yaml", "models.ngram", "order"),
    case("ngram-smoothing", CFG + "ngram_smoothing.yaml", "smoothing", "magic"),
    case("ngram-unknown-param", CFG + "ngram_unknown.yaml", "ordre"),
    case("ngram-laplace-k", CFG + "ngram_laplace.yaml", "k", "laplace"),
    case("lstm-wrong-type", CFG + "lstm_type.yaml", "hidden_size", "big"),
    case("lstm-unknown-param", CFG + "lstm_unknown.yaml", "layers"),
    case(
        "lstm-layers-too-many",
        ["run", "--tracking-uri", "{store}", "--set", MODELS_SET],
        "num_layers",
        "9",
    ),
    # ---- data sources
    case("source-missing", f"{RUN} --data {{tmp}}/missing.txt", "missing.txt"),
    case("source-empty", f"{RUN} --data {{tmp}}/empty.txt", "empty.txt", "empty"),
    case("source-blank", INSPECT + "blank.txt", "blank.txt", "whitespace"),
    case("source-binary", f"{RUN} --data {{tmp}}/binary.bin", "binary.bin", "binary"),
    case("source-undecodable", f"{RUN} --data {{tmp}}/latin1.txt", "latin1.txt", "byte 3"),
    case("source-empty-dir", f"{RUN} --data {{tmp}}/emptydir", "emptydir", "no text"),
    case("source-dir-no-text", INSPECT + "bindir", "bindir", "2 binary or empty"),
    case("source-glob-nothing", INSPECT + "nothing*.txt", "nothing*.txt", "matched no"),
    case("source-not-regular", "data inspect /dev/null", "/dev/null", "not a regular file"),
    case("source-bad-scheme", f"{RUN} --data ftp://example.com/x.txt", "'ftp'", "known"),
    case("source-url-no-host", f"{RUN} --data http://", "http://", "host"),
    case("source-gutenberg-abc", f"{RUN} --data gutenberg:abc", "gutenberg:abc", "'abc'"),
    # ---- synthetic sources and their parameters
    case("synthetic-unknown-name", f"{RUN} --data synthetic:lorenz", "'lorenz'", "markov"),
    case("synthetic-unknown-param", f"{RUN} --data synthetic:markov?ordr=2", "'ordr'"),
    case("synthetic-order-negative", f"{RUN} --data synthetic:markov?order=-1", "order", "-1"),
    case("synthetic-alphabet", f"{RUN} --data synthetic:markov?alphabet=100", "alphabet", "100"),
    case("synthetic-length-text", f"{RUN} --data synthetic:markov?length=abc", "length", "abc"),
    case("synthetic-length-zero", "data inspect synthetic:markov?length=0", "length"),
    case("synthetic-twice", "data inspect synthetic:markov?order=2&order=3", "'order'", "twice"),
    case("synthetic-nan", "data inspect synthetic:markov?concentration=nan", "concentration"),
    case("synthetic-bad-query", "data inspect synthetic:markov?order", "synthetic:markov"),
    case("synthetic-states", f"{RUN} --data {BIG_STATES}", "26**5", "states"),
    case("synthetic-memory", f"{RUN} --data {BIG_TABLE}", "alphabet=10, order=6", "MB"),
    # ---- the newer synthetic sources: T too small, unknown names and parameters
    case(
        "adding-length-one",
        f"{RUN} --task regress --data synthetic:adding?length=1",
        "synthetic:adding",
        "length='1'",
        "greater than or equal to 2",
    ),
    case(
        "adding-one-example",
        "data inspect synthetic:adding?examples=1",
        "synthetic:adding",
        "examples='1'",
    ),
    case(
        "parity-length-zero",
        f"{RUN} --task classify --data synthetic:parity?length=0",
        "synthetic:parity",
        "length='0'",
        "greater than or equal to 1",
    ),
    case(
        "copy-lag-too-long",
        f"{RUN} --data synthetic:copy?lag=5000&length=3000",
        "synthetic:copy",
        "lag=5000",
        "length=3000",
        "50200",
    ),
    case(
        "copy-lag-too-long-inspect",
        "data inspect synthetic:copy?lag=10000",
        "synthetic:copy",
        "lag=10000",
        "length=60000",
    ),
    case("synthetic-unknown-lists-all", f"{RUN} --data synthetic:fibonacci", *KNOWN_SYNTHETIC),
    case(
        "copy-unknown-param",
        f"{RUN} --data synthetic:copy?lagg=5",
        "synthetic:copy",
        "'lagg'",
        "lag, length, seed",
    ),
    case(
        "copy-lag-text",
        f"{RUN} --data synthetic:copy?lag=abc",
        "synthetic:copy",
        "lag='abc'",
        "integer",
    ),
    case(
        "parity-unknown-param", "data inspect synthetic:parity?bits=8", "synthetic:parity", "'bits'"
    ),
    case(
        "adding-length-float",
        "data inspect synthetic:adding?length=2.5",
        "synthetic:adding",
        "length='2.5'",
    ),
    # ---- a task the plugin does not declare (refused before Prefect starts)
    case("classify-ngram", f"{RUN} --task classify", "'ngram'", "classify"),
    case("regress-ngram", f"{RUN} --task regress --data synthetic:adding", "'ngram'", "regress"),
    case(
        "regress-crnn",
        "run --tracking-uri {store} --models crnn --task regress --data synthetic:adding",
        "'crnn'",
        "regress",
    ),
    # ---- data inspect options
    case("inspect-context-zero", INSPECT + "text.txt --context-len 0", "context_len"),
    case("inspect-level", INSPECT + "text.txt --level sentence", "level", "sentence"),
    case("inspect-clean", INSPECT + "text.txt --clean bogus", "clean", "bogus"),
    case("inspect-errors", INSPECT + "latin1.txt --errors maybe", "errors", "maybe"),
    case("inspect-too-short", INSPECT + "short.txt", "too short", "context_len"),
    case("inspect-cleaned-away", INSPECT + "nonascii.txt --clean seed", "nonascii.txt"),
    case("inspect-max-vocab-zero", INSPECT + "text.txt --max-vocab 0", "max_vocab"),
    case("inspect-all-unk", INSPECT + "text.txt --level word --min-freq 1000", *ALL_UNK),
    # ---- checkpoints: score and export-arpa
    case("score-missing", "score {tmp}/nope.pt", "nope.pt", "not found"),
    case("score-directory", "score {tmp}/emptydir", "emptydir"),
    case("score-not-checkpoint", "score {tmp}/text.txt", "text.txt", "not a seqlab checkpoint"),
    case("score-truncated", "score {tmp}/truncated.pt", "truncated.pt", "not a seqlab"),
    case("score-wrong-format", "score {tmp}/wrong_format.pt", "wrong_format.pt", "format"),
    case("score-no-state", "score {tmp}/no_state.pt", "no_state.pt", "state"),
    case("score-other-vocabulary", "score {ngram} --data {tmp}/text.txt", "ngram.pt", "vocabulary"),
    case("score-split-unknown", "score {ngram} --split dev", "--split", "dev"),
    case("score-data-missing", "score {ngram} --data {tmp}/missing.txt", "missing.txt"),
    case("score-clean-unknown", "score {ngram} --clean bogus", "clean", "bogus"),
    case("arpa-missing", "export-arpa {tmp}/nope.pt {tmp}/out.arpa", "nope.pt"),
    case("arpa-neural", "export-arpa {lstm} {tmp}/out.arpa", "lstm.pt", "ARPA"),
    case("arpa-no-state", "export-arpa {tmp}/no_state.pt {tmp}/out.arpa", "no_state.pt", "state"),
    case(
        "arpa-under-file", "export-arpa {ngram} {tmp}/afile/sub/out.arpa", "afile", "not a folder"
    ),
    case("arpa-proc", "export-arpa {ngram} /proc/x.arpa", "/proc/x.arpa"),
    case("arpa-to-directory", "export-arpa {ngram} {tmp}/emptydir", "emptydir", "directory"),
    # ---- tracking URIs that cannot hold a store (refused before Prefect starts)
    case("tracking-no-path", f"{FRESH} sqlite:///", "'sqlite:///'", "no SQLite database"),
    case("tracking-two-slashes", f"{FRESH} sqlite://m.db", "sqlite://m.db"),
    case("tracking-memory", f"{FRESH} sqlite:///:memory:", ":memory:"),
    case("tracking-under-file", f"{FRESH} sqlite:///{{tmp}}/afile/m.db", "afile", "not a folder"),
    case("tracking-under-proc", f"{FRESH} sqlite:////proc/seqlab/m.db", "/proc/seqlab"),
    case("tracking-scheme", f"{FRESH} file:///tmp/mlruns", "file:///tmp/mlruns", "tracking"),
    case("tracking-store-is-dir", f"{FRESH} sqlite:///{{tmp}}/emptydir", "emptydir"),
    case(
        "tracking-read-only-cwd",
        f"run --models ngram --data {MARKOV}",
        "/sys/mlruns.db",
        cwd="/sys",
    ),
    # ---- the recurrent family, its tasks and their options
    case("rnn-hidden-zero", CFG + "rnn_hidden.yaml", "hidden_size", "greater than or equal to 1"),
    case("gru-layers-zero", CFG + "gru_layers.yaml", "num_layers", "0"),
    case("lstm-dropout-one", CFG + "lstm_dropout.yaml", "dropout", "less than 1"),
    case("birnn-unknown-cell", CFG + "birnn_cell.yaml", "cell", "transformer"),
    case("crnn-kernel-zero", CFG + "crnn_kernel.yaml", "kernel_size", "0"),
    case("seq2seq-tf-ratio", CFG + "s2s_tf.yaml", "teacher_forcing", "1.5"),
    case("seq2seq-beam-zero", CFG + "s2s_beam.yaml", "beam_size", "0"),
    case("transduce-beam-zero", CFG + "transduce_beam.yaml", "task_options.beam_size", "0"),
    case("transduce-unknown-option", CFG + "transduce_key.yaml", "task_options.pears"),
    case("transduce-tsv-missing", CFG + "transduce_no_tsv.yaml", "tsv"),
    case("transduce-ngram", CFG + "transduce_ngram.yaml", "ngram", "transduce"),
    case("fill-blank-max-zero", CFG + "blank_max.yaml", "task_options.max_positions", "0"),
    # ---- bad data that shows once the corpus is prepared (inside the flow, before any run)
    case("tsv-wrong-columns", CFG + "tsv.yaml --data {tmp}/pairs.tsv", "pairs.tsv", "line 3"),
    case("corpus-too-short", f"{RUN} --data {{tmp}}/short.txt", "too short", "context_len"),
    case("corpus-cleaned-away", f"{RUN} --data {{tmp}}/nonascii.txt --clean seed", "'seed'"),
    case("step-larger-than-train", CFG + "step.yaml --data " + MARKOV, "data.step=100000"),
    case("batch-cannot-fill", LSTM + " --set train.batch_size=5000", "batch_size=5000", "2,400"),
    case("stateful-streams", LSTM + STATEFUL, "batch_size=1000", "context_len=10"),
    case("word-all-unk", f"{RUN} --data {{tmp}}/text.txt --level word {MIN_FREQ}", *ALL_UNK),
    # ---- labelled examples (classify) and numbers (regress) that are wrong inside
    case("classify-no-label", CLASSIFY + "no_label.tsv", "no_label.tsv line 41", "no label"),
    case(
        "classify-one-label", CLASSIFY + "one_label.tsv", "one_label.tsv", "1 distinct", "'greet'"
    ),
    case("classify-one-folder", CLASSIFY + "one_folder", "one_folder", "1 distinct", "'pos'"),
    case("classify-tiny", CLASSIFY + "tiny_no_label.tsv", "tiny_no_label.tsv line 2", "no label"),
    case(
        "regress-non-numeric",
        REGRESS + "non_numeric.csv",
        "non_numeric.csv",
        "row 8, column b",
        "'x'",
    ),
    case(
        "regress-empty-cell",
        REGRESS + "empty_cell.csv",
        "empty_cell.csv",
        "row 8, column b",
        "empty cell",
    ),
    case("regress-nan", REGRESS + "nan.csv", "nan.csv", "row 8, column a", "NaN"),
    case("regress-step", REGRESS + "steps.txt", "steps.txt line 7, row 2, column 1", "'abc'"),
    case("regress-text", REGRESS + "text.txt", "text.txt line 1", "regress", "<TAB>target"),
]


def assert_bad_input(result: CliResult, *fragments: str) -> None:
    """Exit 2; stderr is one ``error:`` line (after the ``Usage:`` line for a usage
    error) that contains every fragment; no traceback anywhere."""
    assert "Traceback" not in result.stderr + result.stdout, result.stderr[-3000:]
    assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    if len(lines) == 2 and lines[0].startswith("Usage:"):
        lines = lines[1:]
    assert len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith("error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def test_the_matrix_has_at_least_60_cases() -> None:
    assert len(CASES) >= 60
    ids = [p.values[0].id for p in CASES]
    assert len(set(ids)) == len(ids)


@pytest.fixture(scope="module")
def outcomes(store: Store, paths: dict[str, str]) -> dict[str, CliResult]:
    """Every case's command line, each in its own process forked from one warmed-up
    interpreter (tests/cli_forks.py: the real entry point, without ~3 s of imports per
    case), in the matrix's order."""
    cases = [p.values[0] for p in CASES]
    argvs = [
        ([a.format(**paths) for a in c.args], Path(c.cwd) if c.cwd else store.root) for c in cases
    ]
    return dict(zip((c.id for c in cases), run_many(argvs), strict=True))


@pytest.mark.parametrize("bad", CASES)
def test_bad_input_is_one_line_and_keeps_the_store(
    bad: Case, store: Store, paths: dict[str, str], outcomes: dict[str, CliResult]
) -> None:
    assert_bad_input(outcomes[bad.id], *(f.format(**paths) for f in bad.fragments))
    assert_store_unchanged(store)


def test_a_forked_case_answers_as_a_fresh_process_does(
    store: Store, paths: dict[str, str], outcomes: dict[str, CliResult]
) -> None:
    """The harness changes nothing a user would see: two cases (one refused by the
    command line, one inside the flow) give the same output run the ordinary way."""
    for bad in (CASES[0].values[0], CASES[-1].values[0]):
        args = [a.format(**paths) for a in bad.args]
        fresh = run_cli(*args, cwd=Path(bad.cwd) if bad.cwd else store.root, timeout=180)
        forked = outcomes[bad.id]
        assert (forked.returncode, forked.stderr) == (fresh.returncode, fresh.stderr)
