"""The model registry after a comparison (pipeline_core.champion): the best finished
model by the task's rank metric on the validation split (bpc for next-token, log_loss for
classify, mse for regress) is registered; ``champion`` moves only when it is earned on the
same data, task and metric. Real comparisons on a real SQLite MLflow store, plus the pure
rule."""

from __future__ import annotations

import contextlib
import io
import math
from dataclasses import dataclass, replace
from typing import Any

import mlflow
import pytest
from mlflow import MlflowClient

from pipeline_core.champion import (
    ALIAS,
    Candidate,
    Champion,
    RegistryError,
    decide,
    describe,
    pick_candidate,
    register_best,
)
from pipeline_core.config import RunConfig, validate_model
from pipeline_core.experiment import BASELINE, ModelResult
from pipeline_core.metrics import Scores

pytestmark = pytest.mark.slow
SOURCE = "synthetic:markov?length=8000"
OTHER_SOURCE = "synthetic:markov?length=8000&seed=1"
NAME = "seqlab-synthetic-markov"
TINY_LSTM = {"plugin": "lstm", "params": {"embedding_dim": 8, "hidden_size": 16}}


def ngram(order: int) -> dict[str, Any]:
    return {"plugin": "ngram", "name": f"ngram{order}", "params": {"order": order}}


def _config(
    uri: str, models: list[dict[str, Any]], source: str = SOURCE, register: bool = True
) -> RunConfig:
    return validate_model(
        RunConfig,
        {
            "data": {"source": source, "clean": "none", "context_len": 8},
            "models": models,
            "train": {
                "epochs": 2,
                "batch_size": 64,
                "lr": 0.01,
                "max_batches_per_epoch": 10,
                "progress": False,
                "num_threads": 1,
            },
            "tracking": {"tracking_uri": uri, "samples": 0, "gradient_flow": False},
            "registry": {"enabled": register},
        },
    )


@dataclass
class Story:
    """Six comparisons in a row on one store, and what the registry said after each."""

    uri: str
    results: dict[str, Any]
    versions: dict[str, list[str]]  # registered versions after each step
    champion: dict[str, str]  # the champion version after each step
    printed: str  # print_leaderboard of the comparison on other data


@pytest.fixture(scope="module")
def story(prefect_server: str, tmp_path_factory: pytest.TempPathFactory) -> Story:
    from flows.compare import compare_flow
    from seqlab.cli import print_leaderboard

    uri = f"sqlite:///{tmp_path_factory.mktemp('registry') / 'mlruns.db'}"
    client = MlflowClient(uri)
    steps = {
        "first": _config(uri, [ngram(2), TINY_LSTM]),
        "worse": _config(uri, [ngram(1)]),
        "better": _config(uri, [ngram(3)]),
        "other-data": _config(uri, [ngram(3)], source=OTHER_SOURCE),
        "no-register": _config(uri, [ngram(1)], register=False),
    }
    story = Story(uri, {}, {}, {}, "")
    for step, config in [*steps.items(), ("resume", steps["better"])]:
        resume = story.results["better"].parent_run_id if step == "resume" else None
        story.results[step] = compare_flow(config, resume)
        found = client.search_model_versions(f"name='{NAME}'")
        story.versions[step] = sorted((str(v.version) for v in found), key=int)
        story.champion[step] = str(client.get_model_version_by_alias(NAME, ALIAS).version)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):  # rich's Console writes to sys.stdout as it is
        print_leaderboard(story.results["other-data"])
    story.printed = out.getvalue()
    return story


def _parent(story: Story, step: str) -> Any:
    return MlflowClient(story.uri).get_run(story.results[step].parent_run_id)


def test_first_comparison_registers_version_1_as_champion(story: Story) -> None:
    result = story.results["first"]
    reg = result.registry
    assert (reg.decision, reg.version, reg.champion_version) == ("first", "1", "1")
    assert story.versions["first"] == ["1"] and story.champion["first"] == "1"
    # the best finished plugin model by validation bpc, with its tags
    best = min(result.results, key=lambda r: r.val_scores.bpc)
    client = MlflowClient(story.uri)
    version = client.get_model_version(NAME, "1")
    assert version.source == f"runs:/{best.run_id}/model" and version.run_id == best.run_id
    parent = _parent(story, "first")
    assert version.tags == {
        "seqlab.data_sha256": parent.data.tags["seqlab.data_sha256"],
        "seqlab.task": "next-token",
        "seqlab.rank_metric": "bpc",
        "seqlab.val_bpc": repr(best.val_scores.bpc),
        "seqlab.plugin": best.plugin,
        "seqlab.parent_run_id": result.parent_run_id,
        "seqlab.model": best.label,
    }
    assert parent.data.tags["seqlab.registry.decision"] == "first"
    assert parent.data.tags["seqlab.registry.version"] == "1"
    assert parent.data.tags["seqlab.registry.rank_metric"] == "bpc"
    assert parent.data.metrics["candidate_val_bpc"] == pytest.approx(best.val_scores.bpc)
    assert "champion_val_bpc_before" not in parent.data.metrics
    assert (reg.rank_metric, reg.candidate_val) == ("bpc", reg.candidate_val_bpc)
    assert reg.message.startswith(f"registry: {NAME} version 1 ({best.label}) is the new champion")


def test_a_worse_comparison_registers_a_version_and_keeps_the_alias(story: Story) -> None:
    reg = story.results["worse"].registry
    assert (reg.decision, reg.version, reg.champion_version) == ("kept", "2", "1")
    assert story.versions["worse"] == ["1", "2"] and story.champion["worse"] == "1"
    assert reg.candidate_val_bpc > reg.champion_val_bpc_before
    assert "kept version 1 as champion (its val bpc" in reg.message
    parent = _parent(story, "worse")
    assert parent.data.tags["seqlab.registry.decision"] == "kept"
    assert parent.data.metrics["champion_val_bpc_before"] == pytest.approx(
        reg.champion_val_bpc_before
    )


def test_a_better_comparison_moves_the_alias(story: Story) -> None:
    reg = story.results["better"].registry
    assert (reg.decision, reg.version, reg.champion_version) == ("better", "3", "3")
    assert story.champion["better"] == "3"
    assert reg.candidate_val_bpc < reg.champion_val_bpc_before
    assert f"{reg.candidate_val_bpc:.4f} < {reg.champion_val_bpc_before:.4f}" in reg.message


def test_other_data_registers_without_moving_the_alias_and_says_so(story: Story) -> None:
    reg = story.results["other-data"].registry
    assert (reg.decision, reg.version, reg.champion_version) == ("other-data", "4", "3")
    assert story.versions["other-data"] == ["1", "2", "3", "4"]
    assert story.champion["other-data"] == "3"
    expected = "champion version 3 was trained on other data (sha256 "
    assert expected in reg.message and "registered version 4" in reg.message
    assert "without moving the alias" in reg.message
    printed = " ".join(story.printed.split())
    assert "registry: " + reg.message.removeprefix("registry: ") in printed


def test_no_register_registers_nothing(story: Story) -> None:
    reg = story.results["no-register"].registry
    assert reg.decision == "disabled" and reg.version is None
    assert story.versions["no-register"] == story.versions["other-data"]
    assert _parent(story, "no-register").data.tags["seqlab.registry.decision"] == "disabled"


def test_a_resume_goes_through_the_registry_without_registering_twice(story: Story) -> None:
    result = story.results["resume"]
    assert result.resumed == ["ngram3"]
    reg = result.registry
    assert (reg.decision, reg.version, reg.champion_version) == ("already-registered", "3", "3")
    assert story.versions["resume"] == story.versions["other-data"]


def test_parent_holds_the_comparison_view(story: Story) -> None:
    client = MlflowClient(story.uri)
    parent = _parent(story, "first")
    paths = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"leaderboard.csv", "leaderboard.md", "leaderboard.png", "learning_curves.png"} <= paths
    md = mlflow.artifacts.load_text(f"{parent.info.artifact_uri}/leaderboard.md").splitlines()
    assert md[0].startswith("| model | plugin | status | test_bpc |")
    assert md[1].startswith("|---|---|---|---:|")
    rows = sorted(line.split(" | ")[0] for line in md[2:])
    assert rows == ["| lstm", "| ngram2", "| oracle"]  # the oracle: the source's true law
    # every model's history came back with its result (the figure's data)
    histories = {r.label: r.history for r in story.results["first"].results}
    assert len(histories["lstm"]) == 2 and len(histories["ngram2"]) == 1


def test_child_runs_share_metric_names_and_param_keys(story: Story) -> None:
    client = MlflowClient(story.uri)
    runs = [client.get_run(r.run_id) for r in story.results["first"].results]
    assert sorted(r.data.tags["seqlab.plugin"] for r in runs) == ["lstm", "ngram"]
    shared = {"train_nll", "val_nll", "val_bpc", "tokens_per_s", "train_seconds"}
    final = [{m for m in r.data.metrics if m.startswith(("test_", "val_"))} for r in runs]
    assert final[0] == final[1] and {"test_bpc", "val_bpc", "test_acc1"} <= final[0]
    for run in runs:
        assert shared <= set(run.data.metrics), run.data.tags["seqlab.plugin"]
    top = [{k for k in r.data.params if not k.startswith("model.")} for r in runs]
    assert top[0] == top[1]
    assert "plugin" in top[0]
    assert any(k.startswith("train.") for k in top[0])
    assert any(k.startswith("data.") for k in top[0])


def test_a_failed_registration_is_one_line_and_leaves_no_version(
    story: Story, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline_core.tracking import RunRef, get_tracker

    tracker = get_tracker(story.uri)
    first = story.results["first"]
    config = _config(story.uri, [ngram(2)])
    config = config.model_copy(
        update={"registry": config.registry.model_copy(update={"name": "x"})}
    )

    def gone(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("the tracking server went away\n  (connection refused)")

    monkeypatch.setattr(tracker.client, "set_registered_model_alias", gone)
    parent = RunRef(first.parent_run_id, _parent(story, "first").info.experiment_id)
    with pytest.raises(RegistryError) as caught:
        register_best(config, tracker, parent, first.results, "sha")
    message = str(caught.value)
    assert "\n" not in message and "tracking server went away" in message
    assert message.startswith("registry: could not register")
    client = MlflowClient(story.uri)
    assert client.search_model_versions("name='x'") == []
    assert client.search_registered_models(filter_string="name='x'") == []


def test_a_champion_tagged_before_the_rank_metric_is_still_compared(story: Story) -> None:
    """A next-token champion registered before ``seqlab.rank_metric`` existed (only
    ``seqlab.val_bpc``) is read on a real store and beaten numerically."""
    from pipeline_core.tracking import RunRef, get_tracker

    client, tracker = MlflowClient(story.uri), get_tracker(story.uri)
    first = _parent(story, "first")
    sha = first.data.tags["seqlab.data_sha256"]
    config = _config(story.uri, [ngram(2)])
    config = config.model_copy(
        update={"registry": config.registry.model_copy(update={"name": "legacy"})}
    )

    def parent() -> RunRef:
        run = client.create_run(first.info.experiment_id)
        return RunRef(run.info.run_id, first.info.experiment_id)

    reg = register_best(config, tracker, parent(), story.results["worse"].results, sha)
    assert (reg.decision, reg.version) == ("first", "1")
    client.delete_model_version_tag("legacy", "1", "seqlab.rank_metric")
    assert "seqlab.rank_metric" not in client.get_model_version("legacy", "1").tags
    reg = register_best(config, tracker, parent(), story.results["better"].results, sha)
    assert (reg.decision, reg.version, reg.champion_version) == ("better", "2", "2")
    assert reg.champion_val_bpc_before == pytest.approx(
        story.results["worse"].registry.candidate_val_bpc
    )
    assert str(client.get_model_version_by_alias("legacy", ALIAS).version) == "2"


# ---- tasks ranked by another metric --------------------------------------------------
PARITY = "synthetic:parity?length=4&examples=160&seed=1"
ADDING = "synthetic:adding?length=6&examples=400"
SMALL = {"embedding_dim": 8, "hidden_size": 24}
#: one epoch at a small rate learns little; twelve at a large one learn the task
WEAK = {"epochs": 1, "lr": 0.001}
STRONG = {"epochs": 12, "lr": 0.03}


def _task_config(
    uri: str, task: str, source: str, models: list[dict[str, Any]], train: dict[str, Any]
) -> RunConfig:
    return validate_model(
        RunConfig,
        {
            "task": task,
            "data": {"source": source, "clean": "none"},
            "models": models,
            "train": {"batch_size": 16, "progress": False, "num_threads": 1, **train},
            "tracking": {"tracking_uri": uri, "samples": 0, "gradient_flow": False},
        },
    )


@dataclass
class Ranked:
    """Three comparisons of one task on one store: weak, strong, weak again."""

    uri: str
    metric: str
    results: dict[str, Any]
    champion: dict[str, str]
    printed: str  # print_leaderboard of the strong comparison


def _ranked(root: Any, task: str, source: str, metric: str) -> Ranked:
    from flows.compare import compare_flow
    from seqlab.cli import print_leaderboard

    uri = f"sqlite:///{root / 'mlruns.db'}"
    lstm = {"plugin": "lstm", "params": SMALL}
    gru = {"plugin": "gru", "params": SMALL}
    steps = {
        "first": _task_config(uri, task, source, [lstm, gru], WEAK),
        "better": _task_config(uri, task, source, [lstm], STRONG),
        "worse": _task_config(uri, task, source, [lstm, gru], WEAK),
    }
    ranked = Ranked(uri, metric, {}, {}, "")
    client = MlflowClient(uri)
    for step, config in steps.items():
        result = compare_flow(config)
        ranked.results[step] = result
        version = client.get_model_version_by_alias(result.registry.name, ALIAS).version
        ranked.champion[step] = str(version)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        print_leaderboard(ranked.results["better"])
    ranked.printed = " ".join(out.getvalue().split())
    return ranked


@pytest.fixture(scope="module", params=["classify", "regress"])
def ranked(
    request: pytest.FixtureRequest, prefect_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Ranked:
    if request.param == "classify":
        return _ranked(tmp_path_factory.mktemp("classify"), "classify", PARITY, "log_loss")
    return _ranked(tmp_path_factory.mktemp("regress"), "regress", ADDING, "mse")


def _val(result: Any, metric: str) -> float:
    return float(getattr(result.val_scores, metric))


def test_a_task_registers_its_best_by_its_own_val_metric(ranked: Ranked) -> None:
    metric, result = ranked.metric, ranked.results["first"]
    reg = result.registry
    assert reg.name == f"seqlab-synthetic-{'parity' if metric == 'log_loss' else 'adding'}"
    assert (reg.decision, reg.version, reg.champion_version) == ("first", "1", "1")
    assert reg.rank_metric == metric
    # the first comparison offers two models: the lower val figure of the metric wins
    assert len(result.results) == 2
    assert all(math.isnan(r.val_scores.bpc) for r in result.results)  # no bpc to rank by
    best = min(result.results, key=lambda r: _val(r, metric))
    assert reg.model == best.label and reg.candidate_val == pytest.approx(_val(best, metric))
    assert reg.candidate_val_bpc is None
    client = MlflowClient(ranked.uri)
    version = client.get_model_version(reg.name, "1")
    assert version.run_id == best.run_id
    assert version.tags["seqlab.rank_metric"] == metric
    assert version.tags[f"seqlab.val_{metric}"] == repr(_val(best, metric))
    assert version.tags["seqlab.task"] == ("classify" if metric == "log_loss" else "regress")
    assert "seqlab.val_bpc" not in version.tags
    parent = client.get_run(result.parent_run_id).data
    assert parent.tags["seqlab.registry.rank_metric"] == metric
    assert parent.metrics[f"candidate_val_{metric}"] == pytest.approx(_val(best, metric))
    assert f"champion_val_{metric}_before" not in parent.metrics
    assert "candidate_val_bpc" not in parent.metrics
    assert f"(no champion before; val {metric} " in reg.message


def test_a_better_run_on_the_tasks_metric_moves_the_alias(ranked: Ranked) -> None:
    metric, first = ranked.metric, ranked.results["first"].registry
    reg = ranked.results["better"].registry
    assert (reg.decision, reg.version, reg.champion_version) == ("better", "2", "2")
    assert ranked.champion["better"] == "2"
    assert reg.champion_val_before == pytest.approx(first.candidate_val)
    assert reg.candidate_val < reg.champion_val_before
    line = f"(val {metric} {reg.candidate_val:.4f} < {reg.champion_val_before:.4f} of version 1)"
    assert line in reg.message
    assert reg.message in ranked.printed  # the line under the leaderboard names the metric
    parent = MlflowClient(ranked.uri).get_run(ranked.results["better"].parent_run_id).data
    assert parent.metrics[f"champion_val_{metric}_before"] == pytest.approx(first.candidate_val)
    assert parent.metrics[f"candidate_val_{metric}"] == pytest.approx(reg.candidate_val)


def test_a_worse_run_on_the_tasks_metric_keeps_the_alias(ranked: Ranked) -> None:
    metric = ranked.metric
    reg = ranked.results["worse"].registry
    assert (reg.decision, reg.version, reg.champion_version) == ("kept", "3", "2")
    assert ranked.champion["worse"] == "2"
    # the same weak settings as the first comparison: the same figure, above the champion's
    assert reg.candidate_val == pytest.approx(ranked.results["first"].registry.candidate_val)
    assert reg.champion_val_before == pytest.approx(ranked.results["better"].registry.candidate_val)
    assert f"kept version 2 as champion (its val {metric} " in reg.message


# ---- the pure rule ---------------------------------------------------------------------
SHA = "aaaa" * 16
CANDIDATE = Candidate("lstm", "lstm", "run", 2.0, SHA, "next-token", "parent")
CLASSIFIER = Candidate("gru", "gru", "run", 0.25, SHA, "classify", "parent", "log_loss")


@pytest.mark.parametrize(
    ("champion", "expected", "fragment"),
    [
        (None, "first", "is the new champion (no champion before; val bpc 2.0000)"),
        (Champion("2", 2.5, SHA, "next-token", "bpc"), "better", "(val bpc 2.0000 < 2.5000"),
        (Champion("2", 2.0, SHA, "next-token", "bpc"), "kept", "kept version 2 as champion"),
        (Champion("2", 1.5, SHA, "next-token", "bpc"), "kept", "(its val bpc 1.5000 <= 2.0000)"),
        (Champion("2", 9.0, "bbbb" * 16, "next-token", "bpc"), "other-data", "sha256 bbbbbbbb"),
        (Champion("2", 9.0, SHA, "fill-blank", "bpc"), "other-task", "another task (fill-blank"),
        (Champion("2", 1.0, SHA, "next-token", "cer"), "other-task", "(val cer, not val bpc)"),
        (Champion("2", 9.0, None, "next-token", "bpc"), "unrecorded", "records no data sha256"),
        (Champion("2", 9.0, SHA, None, "bpc"), "unrecorded", "records no data sha256"),
        (Champion("2", None, SHA, "next-token", "bpc"), "unrecorded", "task or val bpc (not"),
        (Champion("2", None, SHA, "next-token"), "unrecorded", "records no data"),
    ],
)
def test_decide_every_branch(champion: Champion | None, expected: str, fragment: str) -> None:
    decision = decide(CANDIDATE, champion)
    assert decision == expected
    message = describe("reg", decision, "3", CANDIDATE, champion)
    assert message.startswith("registry: reg ") and fragment in message
    moves = expected in ("first", "better")
    assert ("is the new champion" in message) == moves
    assert ("without moving the alias" in message) == (not moves and expected != "kept")


def test_champion_from_tags_reads_what_register_best_writes() -> None:
    back = Champion.from_tags("7", CANDIDATE.tags())
    assert back == Champion("7", 2.0, CANDIDATE.data_sha256, "next-token", "bpc")
    assert Champion.from_tags("7", {"seqlab.val_bpc": "nan"}).val_score is None
    assert Champion.from_tags("7", None) == Champion("7")
    tags = CLASSIFIER.tags()
    assert tags["seqlab.rank_metric"] == "log_loss" and tags["seqlab.val_log_loss"] == "0.25"
    assert "seqlab.val_bpc" not in tags
    assert Champion.from_tags("7", tags) == Champion("7", 0.25, SHA, "classify", "log_loss")


def test_a_champion_tagged_before_the_rank_metric_reads_as_bpc() -> None:
    """Versions registered before ``seqlab.rank_metric`` carry only ``seqlab.val_bpc``."""
    old = {"seqlab.data_sha256": SHA, "seqlab.task": "next-token", "seqlab.val_bpc": "2.5"}
    champion = Champion.from_tags("4", old)
    assert champion == Champion("4", 2.5, SHA, "next-token", "bpc")
    assert decide(CANDIDATE, champion) == "better"
    assert decide(replace(CANDIDATE, val_score=3.0), champion) == "kept"
    # a tag of another metric is not read as the candidate's
    assert Champion.from_tags("4", {**old, "seqlab.rank_metric": "cer"}).val_score is None


@pytest.mark.parametrize(
    ("champion", "expected", "fragment"),
    [
        (None, "first", "(no champion before; val log_loss 0.2500)"),
        (Champion("2", 0.5, SHA, "classify", "log_loss"), "better", "(val log_loss 0.2500 < 0.5"),
        (Champion("2", 0.1, SHA, "classify", "log_loss"), "kept", "(its val log_loss 0.1000 <="),
        (Champion("2", 0.1, SHA, "classify", "bpc"), "other-task", "(val bpc, not val log_loss)"),
        (Champion("2", 9.0, SHA, "regress", "mse"), "other-task", "(regress, not classify)"),
        (Champion("2", None, SHA, "classify", "log_loss"), "unrecorded", "or val log_loss"),
    ],
)
def test_the_rule_compares_the_tasks_own_metric(
    champion: Champion | None, expected: str, fragment: str
) -> None:
    decision = decide(CLASSIFIER, champion)
    assert decision == expected
    message = describe("reg", decision, "3", CLASSIFIER, champion)
    assert fragment in message and "bpc" not in message.replace("val bpc, not", "")


def test_pick_candidate_ranks_by_the_metric_it_is_given() -> None:
    def row(label: str, log_loss: float, mse: float) -> ModelResult:
        nan = math.nan
        scores = Scores(nan, nan, nan, nan, nan, 1, 1, log_loss=log_loss, mse=mse)
        return ModelResult(label, "lstm", "r", scores, scores)

    rows = [row("a", 0.5, 0.1), row("b", 0.2, 0.3), row("c", math.nan, 0.2)]
    assert pick_candidate(rows) is None  # no finite val bpc anywhere
    assert getattr(pick_candidate(rows, "log_loss"), "label", None) == "b"
    assert getattr(pick_candidate(rows, "mse"), "label", None) == "a"


def test_pick_candidate_skips_baselines_failures_and_missing_figures() -> None:
    def row(label: str, bpc: float, plugin: str = "ngram", error: str | None = None) -> ModelResult:
        scores = Scores(nll=1.0, bpc=bpc, ppl=1.0, acc1=0.0, acc5=0.0, n_tokens=1, n_chars=1)
        return ModelResult(label, plugin, "r", scores, scores, error=error)

    rows = [
        row("copy", 0.1, plugin=BASELINE),
        row("broken", 0.2, error="boom"),
        row("inf", math.inf),
        row("b", 1.5),
        row("a", 1.0),
        row("a-tie", 1.0),
        ModelResult("unscored", "ngram", "r"),
    ]
    best = pick_candidate(rows)
    assert best is not None and best.label == "a"
    assert pick_candidate(rows[:3]) is None
