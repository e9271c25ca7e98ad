"""Typed configs: defaults, one-line errors that name the field, YAML loading."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline_core.config import DataConfig, RunConfig, TrainConfig, load_run_config, validate_model
from pipeline_core.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_defaults_validate() -> None:
    config = RunConfig()
    assert config.data.context_len == 10
    assert config.data.splits == (0.8, 0.1, 0.1)
    assert [m.plugin for m in config.models] == ["ngram", "lstm"]


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"train": {"epochs": 0}}, "train.epochs"),
        ({"train": {"optimizer": "sgd"}}, "train.optimizer"),
        ({"data": {"context_len": 0}}, "data.context_len"),
        ({"data": {"level": "byte"}}, "data.level"),
        ({"data": {"splits": [0.5, 0.5, 0.5]}}, "data"),
        ({"data": {"bogus": 1}}, "data.bogus"),
    ],
)
def test_invalid_value_names_the_field(values: dict, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate_model(RunConfig, values)
    message = str(info.value)
    assert "\n" not in message
    assert field in message


def test_yaml_file_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  context_len: 7\ntrain:\n  epochs: 4\n")
    config = load_run_config(path, {"train.epochs": 2, "data.level": "word"})
    assert config.data.context_len == 7
    assert config.train.epochs == 2
    assert config.data.level == "word"


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("data:\n  context_len: [1,\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml line \d+"):
        load_run_config(path)


def test_missing_config_file() -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_run_config("/no/such/config.yaml")


@pytest.mark.parametrize("name", ["demo", "seed", "alice", "shakespeare"])
def test_shipped_configs_validate(name: str) -> None:
    config = load_run_config(REPO / "configs" / f"{name}.yaml")
    assert config.models


def test_train_config_rejects_bad_clip() -> None:
    with pytest.raises(ConfigError, match="clip_norm"):
        validate_model(TrainConfig, {"clip_norm": -1})
    assert validate_model(DataConfig, {"level": "word"}).level == "word"
