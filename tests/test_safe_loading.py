"""Safe loading (issue 7, item 5): checkpoints load with ``torch.load(weights_only=True)``.

A crafted pickle whose unpickling would run code is refused with one ``error:`` line
(exit 2) by ``seqlab score``, ``seqlab export-arpa`` and ``read_checkpoint``, and its side
effect never happens; torch's unpickler warnings never reach the console; corrupt and
foreign files get the same one line; and no code in the repository unpickles with
anything but ``weights_only=True`` (an AST scan of the source tree).
"""

from __future__ import annotations

import ast
import builtins
import os
import pickle
import shutil
import subprocess
import sys
import warnings
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
import torch

from pipeline_core.callbacks import load_trainer_checkpoint
from pipeline_core.contract import CHECKPOINT_FORMAT, FitData, read_checkpoint
from pipeline_core.errors import DataError
from pipeline_core.registry import load_checkpoint
from plugins.ngram import NGramModel
from seqlab.cli import main
from tests.conftest import REPO, CliResult, assert_one_line_error

# --------------------------------------------------------------------------- hostile files


class _RunsShell:
    """Unpickling calls ``os.system(command)``."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (self.command,))


class _RunsPython:
    """Unpickling calls ``builtins.exec(source)``."""

    def __init__(self, source: str) -> None:
        self.source = source

    def __reduce__(self) -> tuple[Any, ...]:
        return (builtins.exec, (self.source,))


def _touch(sentinel: Path) -> str:
    return f"touch '{sentinel}'"


def _write(sentinel: Path) -> str:
    return f"open({str(sentinel)!r}, 'w').write('pwned')"


def _zip_shell(path: Path, sentinel: Path) -> None:
    """A torch zip checkpoint that looks right but hides os.system in its state."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "plugin": "ngram",
        "state": _RunsShell(_touch(sentinel)),
    }
    torch.save(payload, path)


def _zip_exec(path: Path, sentinel: Path) -> None:
    """A torch zip checkpoint that is nothing but a call to exec."""
    torch.save(_RunsPython(_write(sentinel)), path)


def _legacy_pickle(path: Path, sentinel: Path) -> None:
    """A bare pickle (torch's legacy, non-zip format) calling os.system."""
    path.write_bytes(pickle.dumps({"format": 1, "x": _RunsShell(_touch(sentinel))}, protocol=2))


HOSTILE: dict[str, Callable[[Path, Path], None]] = {
    "zip-os-system": _zip_shell,
    "zip-exec": _zip_exec,
    "legacy-pickle": _legacy_pickle,
}


@pytest.fixture
def hostile(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """(checkpoint, sentinel): the sentinel exists only if the pickle ran."""
    sentinel = tmp_path / "SENTINEL"
    path = tmp_path / f"{request.param}.pt"
    HOSTILE[request.param](path, sentinel)
    yield path, sentinel
    assert not sentinel.exists(), "the hostile pickle ran"


@pytest.fixture(scope="module")
def real_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A genuine n-gram checkpoint, as ``seqlab run`` logs it."""
    folder = tmp_path_factory.mktemp("ckpt")
    vocab = ["<unk>", "a", "b", "c"]
    model = NGramModel(len(vocab), {"order": 2})
    model.fit(FitData(np.array([1, 2, 3, 1, 3, 2] * 20), None, len(vocab), 2))
    data = {"source": str(folder / "data.txt"), "clean": "none", "context_len": 2}
    return model.save(folder / "checkpoint.pt", vocab, "ngram", {"data": data})


@pytest.mark.slow
def test_the_hostile_files_really_run_code_when_unpickled_unsafely(tmp_path: Path) -> None:
    """The control: an unsafe load (in a child process) does run them, so the refusals
    below are what stops the side effect."""
    paths = {}
    for name, make in HOSTILE.items():
        paths[name] = (tmp_path / f"{name}.pt", tmp_path / f"SENTINEL-{name}")
        make(*paths[name])
    unsafe = "import sys, torch\nfor p in sys.argv[1:]: torch.load(p, weights_only=False)"
    args = [str(path) for path, _ in paths.values()]
    subprocess.run([sys.executable, "-c", unsafe, *args], capture_output=True, timeout=300)
    assert all(sentinel.exists() for _, sentinel in paths.values())


@pytest.mark.parametrize("hostile", sorted(HOSTILE), indirect=True)
def test_read_checkpoint_refuses_a_pickle_that_would_run_code(hostile: tuple[Path, Path]) -> None:
    path, _ = hostile
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for load in (read_checkpoint, load_checkpoint):
            with pytest.raises(DataError, match="refused to unpickle") as err:
                load(path)
            assert str(path) in str(err.value) and "\n" not in str(err.value)
    assert caught == [], [str(w.message) for w in caught]


@pytest.mark.parametrize("hostile", sorted(HOSTILE), indirect=True)
def test_a_hostile_trainer_checkpoint_is_ignored_not_run(hostile: tuple[Path, Path]) -> None:
    """``--resume`` reads ``checkpoints/last.pt`` the same way: refused, training restarts."""
    path, _ = hostile

    class Tracker:
        def download(self, run: object, artifact: str, dest: str) -> Path:
            return Path(shutil.copy(path, Path(dest) / "last.pt"))

    assert load_trainer_checkpoint(cast(Any, Tracker()), cast(Any, None)) is None


def _cli(capfd: pytest.CaptureFixture[str], *args: str) -> CliResult:
    """``seqlab ARGS`` in this process (fast), every warning shown as it would be."""
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        saved, sys.argv = sys.argv, ["seqlab", *args]
        try:
            with pytest.raises(SystemExit) as exit_info:
                main()
        finally:
            sys.argv = saved
    out, err = capfd.readouterr()
    return CliResult(int(exit_info.value.code or 0), out, err)


@pytest.mark.parametrize("hostile", sorted(HOSTILE), indirect=True)
@pytest.mark.parametrize("command", ["score", "export-arpa"])
def test_cli_refuses_a_pickle_that_would_run_code(
    hostile: tuple[Path, Path], command: str, capfd: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path, _ = hostile
    out = tmp_path / "out.arpa"
    args = [command, str(path)] + ([str(out)] if command == "export-arpa" else [])
    result = _cli(capfd, *args)
    assert_one_line_error(result, str(path), "refused to unpickle")
    assert result.stdout == "" and not out.exists()


@pytest.mark.slow
@pytest.mark.parametrize("hostile", ["zip-os-system", "legacy-pickle"], indirect=True)
@pytest.mark.parametrize("command", ["score", "export-arpa"])
def test_cli_subprocess_refuses_with_exactly_one_line(
    hostile: tuple[Path, Path], command: str, tmp_path: Path
) -> None:
    """As a user runs it, with every Python warning switched on: stderr is the one line."""
    path, _ = hostile
    out = tmp_path / "out.arpa"
    args = [command, str(path)] + ([str(out)] if command == "export-arpa" else [])
    proc = subprocess.run(
        [sys.executable, "-W", "always", "-m", "seqlab", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONWARNINGS": "always"},
    )
    result = CliResult(proc.returncode, proc.stdout, proc.stderr)
    assert_one_line_error(result, str(path), "refused to unpickle")
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert not out.exists()


# --------------------------------------------------------------------------- broken files


def _not_torch_zip(path: Path, real: Path) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes/readme.txt", "a zip, but not a torch file")


def _truncated(path: Path, real: Path) -> None:
    data = real.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _empty(path: Path, real: Path) -> None:
    path.write_bytes(b"")


def _text(path: Path, real: Path) -> None:
    path.write_text("hello, world\n")


def _resaved(change: Callable[[dict[str, Any]], Any]) -> Callable[[Path, Path], None]:
    def make(path: Path, real: Path) -> None:
        torch.save(change(torch.load(real, weights_only=True)), path)

    return make


BROKEN: dict[str, tuple[Callable[[Path, Path], None], str]] = {
    "zip-not-torch": (_not_torch_zip, "not a seqlab checkpoint"),
    "truncated": (_truncated, "not a seqlab checkpoint"),
    "empty": (_empty, "not a seqlab checkpoint"),
    "text": (_text, "not a seqlab checkpoint"),
    "numpy-array": (
        lambda p, r: torch.save({"format": 1, "x": np.arange(3)}, p),
        "refused to unpickle",
    ),
    "format-2": (_resaved(lambda c: {**c, "format": 2}), "format 1 expected"),
    "format-missing": (_resaved(lambda c: {k: v for k, v in c.items() if k != "format"}), "format"),
    "format-as-text": (_resaved(lambda c: {**c, "format": "1"}), "format 1 expected"),
    "a-list": (_resaved(lambda c: [c]), "format 1 expected"),
    "a-tensor": (lambda p, r: torch.save(torch.zeros(3), p), "format 1 expected"),
    "no-init-args": (_resaved(lambda c: {"format": 1, "plugin": "ngram"}), "'init_args'"),
    "bad-vocab-size": (
        _resaved(lambda c: {**c, "init_args": {**c["init_args"], "vocab_size": "4"}}),
        "'init_args'",
    ),
    "no-state": (_resaved(lambda c: {k: v for k, v in c.items() if k != "state"}), "'state'"),
    "state-not-tensors": (_resaved(lambda c: {**c, "state": {"counts_1": [1, 2]}}), "'state'"),
    "vocab-not-strings": (_resaved(lambda c: {**c, "vocab": [0, 1, 2, 3]}), "'vocab'"),
    "extra-not-a-dict": (_resaved(lambda c: {**c, "extra": "data"}), "'extra'"),
    "extra-data-not-a-dict": (_resaved(lambda c: {**c, "extra": {"data": 3}}), "'extra.data'"),
}


@pytest.fixture
def broken(request: pytest.FixtureRequest, tmp_path: Path, real_checkpoint: Path) -> Path:
    make, _ = BROKEN[request.param]
    path = tmp_path / f"{request.param}.pt"
    make(path, real_checkpoint)
    return path


@pytest.mark.parametrize(
    ("broken", "fragment"), [(k, v[1]) for k, v in BROKEN.items()], indirect=["broken"]
)
def test_broken_checkpoints_are_one_line_errors(
    broken: Path, fragment: str, capfd: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with pytest.raises(DataError, match=fragment):
        read_checkpoint(broken)
    out = tmp_path / "out.arpa"
    for args in (["score", str(broken)], ["export-arpa", str(broken), str(out)]):
        assert_one_line_error(_cli(capfd, *args), str(broken), fragment)
    assert not out.exists()


def test_the_real_checkpoint_still_loads(real_checkpoint: Path, tmp_path: Path) -> None:
    payload = read_checkpoint(real_checkpoint)
    assert payload["format"] == CHECKPOINT_FORMAT and payload["plugin"] == "ngram"
    model = load_checkpoint(real_checkpoint, vocab=payload["vocab"])
    assert model.is_fitted
    out = tmp_path / "out.arpa"
    assert model.to_arpa(out, payload["vocab"]) == out  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- the source tree

#: What is scanned: every directory of shipped or example code (tests/ itself is not:
#: the control above calls an unsafe load on purpose, in a child process).
SCANNED = ["seqlab", "pipeline_core", "plugins", "flows", "benchmarks", "tests/fixtures"]
#: Calls that unpickle arbitrary objects, whatever their arguments.
UNPICKLERS = {
    "pickle.load",
    "pickle.loads",
    "pickle.Unpickler",
    "cPickle.load",
    "cPickle.loads",
    "dill.load",
    "dill.loads",
    "cloudpickle.load",
    "cloudpickle.loads",
    "joblib.load",
    "pd.read_pickle",
    "pandas.read_pickle",
    "mlflow.pytorch.load_model",
    "torch.serialization.load",
}
_PICKLE_MODULES = {"pickle", "cPickle", "dill", "cloudpickle", "joblib", "torch"}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _true_keyword(call: ast.Call, name: str) -> bool:
    return any(
        kw.arg == name and isinstance(kw.value, ast.Constant) and kw.value.value is True
        for kw in call.keywords
    )


def unsafe_loads(source: str, filename: str = "<source>") -> list[str]:
    """``file:line: call`` for every load in ``source`` that could unpickle code."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.ImportFrom) and node.module in _PICKLE_MODULES:
            names = {a.name for a in node.names}
            if names & {"load", "loads", "Unpickler"}:
                found.append(f"{filename}:{node.lineno}: from {node.module} import load")
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        bad = (
            name in UNPICKLERS
            or (name == "torch.load" and not _true_keyword(node, "weights_only"))
            or (name in ("np.load", "numpy.load") and _true_keyword(node, "allow_pickle"))
        )
        if bad:
            found.append(f"{filename}:{node.lineno}: {name}(...)")
    return found


def test_the_scanner_catches_unsafe_loads() -> None:
    bad = [
        "torch.load(path)",
        "torch.load(path, weights_only=False)",
        "torch.load(path, map_location='cpu',\n    weights_only=flag)",
        "import pickle\npickle.load(fh)",
        "pickle.loads(blob)",
        "from pickle import loads",
        "from torch import load",
        "np.load('x.npy', allow_pickle=True)",
        "mlflow.pytorch.load_model(uri)",
        "pd.read_pickle('x.pkl')",
    ]
    for snippet in bad:
        assert unsafe_loads(snippet), snippet
    good = [
        "torch.load(path, map_location='cpu', weights_only=True)",
        "np.load('ids.npy')",
        "'''torch.load(weights_only=False) in a docstring'''",
        "torch.save(payload, path)",
    ]
    for snippet in good:
        assert not unsafe_loads(snippet), snippet


def test_no_code_in_the_repository_unpickles_unsafely() -> None:
    files = sorted(
        p
        for folder in SCANNED
        for p in (REPO / folder).rglob("*.py")
        if "build" not in p.relative_to(REPO).parts
    )
    assert len(files) > 20  # the tree was found
    found = [
        hit
        for path in files
        for hit in unsafe_loads(path.read_text(encoding="utf-8"), str(path.relative_to(REPO)))
    ]
    assert found == [], "use torch.load(..., weights_only=True):\n" + "\n".join(found)
