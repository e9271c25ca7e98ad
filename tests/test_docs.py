"""The documentation stays true to the code it documents.

* README.md's configuration reference is regenerated from the pydantic models and
  compared with the committed copy: a field added, renamed, re-typed, re-bounded or
  re-described without ``python -m pipeline_core.config_reference`` fails here.
* docs/plugin-authoring.md and the third-party fixture plugins import only the public
  surface (``seqlab.api``, ``seqlab.testing``), as a third party must.
* The guide's example plugins (count-based, stateless neural, stateful recurrent) pass
  the conformance kit, and its snippets run in order.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from pipeline_core import config_reference as ref
from pipeline_core.config import DataConfig, ModelSpec, RunConfig, TrackingConfig, TrainConfig
from pipeline_core.contract import SequenceModel, TorchSequenceModel
from seqlab.testing import check_plugin

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
GUIDE = REPO / "docs" / "plugin-authoring.md"
FIXTURES = REPO / "tests" / "fixtures"
REGENERATE = "run `python -m pipeline_core.config_reference` to regenerate it"


def readme_reference() -> str:
    return ref.current_section(README.read_text(encoding="utf-8"))


# ---- the configuration reference --------------------------------------------------------
def test_readme_reference_matches_the_models() -> None:
    text = README.read_text(encoding="utf-8")
    assert text.count(ref.START) == 1 and text.count(ref.END) == 1, "README lost its markers"
    expected = ref.render_reference().strip()
    assert readme_reference() == expected, f"README's configuration reference drifted; {REGENERATE}"


SECTIONS: list[tuple[type[BaseModel], str]] = [
    (RunConfig, ""),
    (DataConfig, "data."),
    (ModelSpec, "models[]."),
    (TrainConfig, "train."),
    (TrackingConfig, "tracking."),
]


@pytest.mark.parametrize(("model", "prefix"), SECTIONS, ids=[m.__name__ for m, _ in SECTIONS])
def test_reference_names_every_field(model: type[BaseModel], prefix: str) -> None:
    section = readme_reference()
    rows = {line.split("|")[1].strip() for line in section.splitlines() if line.startswith("| `")}
    nested = {
        name: f"{name}[]." if name == "models" else f"{name}."
        for name in ("data", "models", "train", "tracking", "execution", "registry")
    }
    missing = []
    for name, info in model.model_fields.items():
        if model is RunConfig and name in nested:
            if f"### `{nested[name]}*`" not in section:
                missing.append(f"section {nested[name]}*")
            continue
        if f"`{prefix}{name}`" not in rows:
            missing.append(f"{prefix}{name}")
        if not info.description:
            missing.append(f"{prefix}{name} (no description= in pipeline_core/config.py)")
    assert not missing, f"README's configuration reference lacks {missing}; {REGENERATE}"


def _row(key: str) -> str:
    return next(ln for ln in readme_reference().splitlines() if ln.startswith(f"| `{key}` |"))


def test_reference_shows_types_defaults_choices_and_bounds() -> None:
    assert _row("train.bptt").split("|")[3:5] == [" `windows` ", " `windows`, `stateful` "]
    epochs = _row("train.epochs")
    assert " int " in epochs and "`3`" in epochs and ">= 1, <= 10000" in epochs
    assert "> 0, <= 10" in _row("train.lr")
    assert "float or null" in _row("train.clip_norm") and "\\|\\|g\\|\\|" in _row("train.clip_norm")
    assert "`[0.8, 0.1, 0.1]`" in _row("data.splits")
    assert "required" in _row("models[].plugin")
    assert "`true`, `false`" in _row("train.progress")


def test_replace_section_is_idempotent_and_keeps_the_rest() -> None:
    text = f"# title\n\nbefore\n{ref.START}\nold\n{ref.END}\nafter\n"
    once = ref.replace_section(text, "new body")
    assert once == f"# title\n\nbefore\n{ref.START}\nnew body\n{ref.END}\nafter\n"
    assert ref.replace_section(once, "new body") == once
    for broken in ("no markers", f"{ref.END}\n{ref.START}", f"{ref.START}{ref.START}{ref.END}"):
        with pytest.raises(ValueError):
            ref.replace_section(broken, "x")


def test_command_rewrites_and_check_exits_1_on_drift(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{ref.START}\nstale\n{ref.END}\noutro\n", encoding="utf-8")
    assert ref.main(["--check", "--readme", str(readme)]) == 1
    assert "stale" in readme.read_text(encoding="utf-8")  # --check writes nothing
    assert ref.main(["--readme", str(readme)]) == 0
    assert ref.main(["--check", "--readme", str(readme)]) == 0
    text = readme.read_text(encoding="utf-8")
    assert text.startswith("intro\n") and text.endswith("\noutro\n")
    assert ref.current_section(text) == ref.render_reference().strip()
    (tmp_path / "none.md").write_text("no markers\n", encoding="utf-8")
    assert ref.main(["--check", "--readme", str(tmp_path / "none.md")]) == 2
    capsys.readouterr()


def test_reference_is_deterministic() -> None:
    assert ref.render_reference() == ref.render_reference()
    assert ref.config_keys()[0] == "task"


# ---- plugins import only the public surface ---------------------------------------------
PUBLIC = ("seqlab.api", "seqlab.testing")
INTERNAL = ("pipeline_core", "plugins", "flows")


def guide_python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", GUIDE.read_text(encoding="utf-8"), re.S)


def private_imports(source: str) -> list[str]:
    """Imports of seqlab's internals, or of a seqlab module other than the public two."""
    bad = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
            if node.module == "seqlab":  # from seqlab import api, cli, ...
                names = [f"seqlab.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            root = name.split(".")[0]
            if root in INTERNAL or (root == "seqlab" and name not in PUBLIC):
                bad.append(name)
    return bad


def fixture_sources() -> list[Path]:
    return sorted(FIXTURES.glob("*/src/**/*.py"))


def test_private_import_detector() -> None:
    assert private_imports("from seqlab.api import SequenceModel\nimport numpy") == []
    assert private_imports("import pipeline_core.contract") == ["pipeline_core.contract"]
    assert private_imports("def f():\n    from plugins.lstm import LSTMModel") == ["plugins.lstm"]
    assert private_imports("from seqlab import cli, api") == ["seqlab.cli"]
    assert private_imports("import seqlab") == ["seqlab"]


def test_guide_code_imports_only_seqlab_api_and_testing() -> None:
    blocks = guide_python_blocks()
    assert len(blocks) >= 3
    found = {i: private_imports(block) for i, block in enumerate(blocks)}
    assert not {i: bad for i, bad in found.items() if bad}, "the guide imports internals"
    joined = "\n".join(blocks)
    assert "from seqlab.api import" in joined and "from seqlab.testing import" in joined


def test_fixture_plugins_import_only_seqlab_api_and_testing() -> None:
    sources = fixture_sources()
    assert any(p.parts[-2] == "seqlab_toyplugin" for p in sources), sources
    found = {str(p.relative_to(REPO)): private_imports(p.read_text()) for p in sources}
    assert not {p: bad for p, bad in found.items() if bad}, "a fixture plugin imports internals"


def test_docs_use_contract_v2_names() -> None:
    for path in (README, GUIDE):
        text = path.read_text(encoding="utf-8")
        for stale in ("loss_positions", "from pipeline_core", "fit(data, settings"):
            assert stale not in text, f"{path.name} still says {stale!r}"


# ---- the guide's examples pass the kit --------------------------------------------------
def plugin_blocks() -> list[tuple[str, str]]:
    """(class names, block) for each python block that defines a plugin class."""
    out = []
    for block in guide_python_blocks():
        names = [
            node.name
            for node in ast.parse(block).body
            if isinstance(node, ast.ClassDef)
            and any(
                isinstance(b, ast.Name) and b.id in ("SequenceModel", "TorchSequenceModel")
                for b in node.bases
            )
        ]
        if names:
            out.append((",".join(names), block))
    return out


def exec_block(block: str, namespace: dict[str, Any] | None = None) -> dict[str, Any]:
    ns = namespace if namespace is not None else {"__name__": "plugin_authoring_guide"}
    exec(compile(block, str(GUIDE), "exec"), ns)
    return ns


def guide_plugins(block: str, names: str) -> list[type[SequenceModel]]:
    """The plugin classes a block defines, from the block alone (it must be self-contained)."""
    ns = exec_block(block)
    return [ns[name] for name in names.split(",")]


PLUGIN_BLOCKS = plugin_blocks()


def test_guide_shows_each_kind_of_plugin() -> None:
    classes = [cls for names, block in PLUGIN_BLOCKS for cls in guide_plugins(block, names)]
    neural = [c for c in classes if issubclass(c, TorchSequenceModel)]
    assert [c for c in classes if not issubclass(c, TorchSequenceModel)], "no count-based one"
    assert [c for c in neural if not c.stateful], "no stateless neural plugin"
    assert [c for c in neural if c.stateful], "no stateful recurrent plugin"
    assert any(c.__name__ == "Bigram" for c in classes)  # tests/test_conformance.py uses it


@pytest.mark.parametrize(("names", "block"), PLUGIN_BLOCKS, ids=[n for n, _ in PLUGIN_BLOCKS])
def test_guide_plugin_passes_the_kit(names: str, block: str) -> None:
    for cls in guide_plugins(block, names):
        results = check_plugin(cls, f"guide-{cls.__name__}")
        failed = [f"{r.check}: {r.message}" for r in results if r.status in ("failed", "xpass")]
        assert failed == [], f"the guide's {cls.__name__} fails the kit"
        assert any(r.status == "passed" for r in results)


def test_guide_snippets_run_in_order() -> None:
    """Every python block, executed top to bottom in one namespace, as a reader would."""
    ns: dict[str, Any] = {"__name__": "plugin_authoring_guide"}
    for block in guide_python_blocks():
        exec_block(block, ns)
    assert callable(ns["test_conformance"])
    assert ns["rows"].shape == (120, 5) and len(ns["records"]) == 2
