"""Every path argument refuses a bad path in one line, before anything is written."""

import dataclasses
import importlib.util
import os
import re
import subprocess
import sys

import pytest

from conftest import REPO_ROOT, write_idx_dataset

AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
ROOT_REASON = "runs as root, whom a read-only folder does not stop; the simulated case covers it"


@pytest.fixture(scope="module")
def mnist_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mnist")
    write_idx_dataset(folder, n_train=200, n_test=50, seed=1)
    return folder


def _snapshot(folder):
    return sorted((str(p.relative_to(folder)), p.is_dir() or p.read_bytes()) for p in folder.rglob("*"))


def _one_error_line(stderr):
    assert "Traceback" not in stderr, stderr[-2000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr[-2000:]
    return errors[0]


def _main(*args, cwd):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    command = [sys.executable, "-m", "gmvae_keras.main", "--dataset=mnist", "--num_labeled=20", "--batch_size=40"]
    return subprocess.run(command + list(args), capture_output=True, text=True, cwd=cwd, env=env, timeout=280)


def _read_only_folder(path):
    path.mkdir()
    path.chmod(0o555)
    return path


@pytest.mark.parametrize(
    "case, message",
    [
        ("file", "--model_dir={path} is a file, not a folder"),
        ("under_a_file", "--model_dir={path} cannot be created: {file} is a file, not a folder"),
        pytest.param(
            "read_only",
            "--model_dir={path} cannot be created: {parent} is not writable",
            marks=pytest.mark.skipif(AS_ROOT, reason=ROOT_REASON),
        ),
    ],
)
def test_main_refuses_a_model_dir_it_cannot_write(mnist_files, tmp_path, case, message):
    (tmp_path / "file.txt").write_text("precious")
    path = {
        "file": tmp_path / "file.txt",
        "under_a_file": tmp_path / "file.txt" / "run",
        "read_only": tmp_path / "locked" / "run",
    }[case]
    if case == "read_only":
        _read_only_folder(tmp_path / "locked")
    before = _snapshot(tmp_path)
    result = _main(f"--data_dir={mnist_files}", f"--model_dir={path}", cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    expected = message.format(path=path, file=tmp_path / "file.txt", parent=path.parent)
    assert _one_error_line(result.stderr) == f"error: {expected}"
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize(
    "case, message",
    [("file", "--data_dir={path} is a file, not a folder"), ("missing", "--data_dir={path} does not exist")],
)
def test_main_refuses_a_data_dir_that_is_no_folder(tmp_path, case, message):
    path = tmp_path / "data"
    if case == "file":
        path.write_bytes(b"not a folder")
    before = _snapshot(tmp_path)
    result = _main(f"--data_dir={path}", f"--model_dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert _one_error_line(result.stderr) == f"error: {message.format(path=path)}"
    assert _snapshot(tmp_path) == before


def test_an_unwritable_model_dir_is_refused_before_anything_is_written(mnist_files, tmp_path, monkeypatch):
    from gmvae_keras import paths
    from gmvae_keras.config import Config
    from gmvae_keras.train import train_and_evaluate

    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    # Simulates a read-only folder, which chmod cannot make for root.
    monkeypatch.setattr(
        paths.os, "access", lambda p, mode: False if os.fspath(p) == str(locked) else real_access(p, mode)
    )
    config = Config(dataset="mnist", data_dir=str(mnist_files), num_labeled=20, batch_size=40, epochs=1, verbose=0)
    with pytest.raises(paths.PathError, match=re.escape(f"--model_dir={locked} is not writable")):
        train_and_evaluate(config, locked)
    message = f"--model_dir={locked / 'run'} cannot be created: {locked} is not writable"
    with pytest.raises(paths.PathError, match=re.escape(message)):
        train_and_evaluate(config, locked / "run")
    assert list(locked.iterdir()) == []


def _load_tool(name):
    spec = importlib.util.spec_from_file_location(f"tools_{name}", REPO_ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _refused(call, capsys):
    """The one error line of `call()`, which must return or exit with status 2."""
    try:
        code = call()
    except SystemExit as e:
        code = e.code
    assert code == 2
    return _one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model_dir", "{tmp}/file.txt"], "--model_dir={tmp}/file.txt is a file, not a folder"),
        (["--model_dir", "{tmp}/nothing"], "--model_dir={tmp}/nothing does not exist"),
        (["--export_dir", "{tmp}/file.txt"], "--export_dir={tmp}/file.txt is a file, not a folder"),
        (["--export_dir", "{tmp}/file.txt/e"], "--export_dir={tmp}/file.txt/e cannot be created: {tmp}/file.txt is a"),
        (["--export_dir", "{tmp}/notes"], "--export_dir={tmp}/notes holds files other than a SavedModel"),
    ],
    ids=["model_dir-file", "model_dir-missing", "export_dir-file", "export_dir-under-a-file", "export_dir-not-export"],
)
def test_export_refuses_bad_paths_and_clobbers_nothing(tiny_run, tmp_path, capsys, argv, message):
    from gmvae_keras.export import main as export_main

    (tmp_path / "file.txt").write_text("precious")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "thesis.tex").write_text("precious")
    argv = [arg.format(tmp=tmp_path) for arg in argv]
    if argv[0] != "--model_dir":
        argv = ["--model_dir", str(tiny_run)] + argv
    before = _snapshot(tmp_path)
    assert message.format(tmp=tmp_path) in _refused(lambda: export_main(argv), capsys)
    assert _snapshot(tmp_path) == before


@pytest.fixture
def run_copy(tiny_run, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for path in tiny_run.iterdir():
        if path.is_file():
            (run / path.name).write_bytes(path.read_bytes())
    return run


def test_figures_refuses_a_model_dir_that_is_a_file(tmp_path, capsys):
    from gmvae_keras.figures import main as figures_main

    (tmp_path / "file.txt").write_text("precious")
    before = _snapshot(tmp_path)
    message = _refused(lambda: figures_main(["--model_dir", str(tmp_path / "file.txt")]), capsys)
    assert message == f"error: --model_dir={tmp_path / 'file.txt'} is a file, not a folder"
    assert _snapshot(tmp_path) == before


def test_figures_refuses_a_run_whose_figures_folder_is_a_file(run_copy, tmp_path, capsys):
    from gmvae_keras.figures import main as figures_main

    (run_copy / "figures").write_text("precious")
    before = _snapshot(tmp_path)
    message = _refused(lambda: figures_main(["--model_dir", str(run_copy)]), capsys)
    assert message == f"error: --model_dir={run_copy}: {run_copy / 'figures'} is a file, not a folder"
    assert _snapshot(tmp_path) == before


def test_figures_refuses_an_unwritable_model_dir(run_copy, tmp_path, capsys, monkeypatch):
    from gmvae_keras import paths
    from gmvae_keras.figures import main as figures_main

    real_access = os.access
    # Simulates a read-only folder, which chmod cannot make for root.
    monkeypatch.setattr(
        paths.os,
        "access",
        lambda p, mode: False if os.fspath(p) == str(run_copy) and mode & os.W_OK else real_access(p, mode),
    )
    before = _snapshot(tmp_path)
    message = _refused(lambda: figures_main(["--model_dir", str(run_copy)]), capsys)
    assert message == f"error: --model_dir={run_copy} is not writable"
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("module", ["gmvae_keras.figures", "gmvae_keras.export"])
def test_a_run_whose_config_is_not_this_versions_is_refused_in_one_line(run_copy, tmp_path, module):
    config = run_copy / "config.json"
    config.write_text(config.read_text().rstrip().rstrip("}") + ', "no_such_option": 1}')
    before = _snapshot(tmp_path)
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    command = [sys.executable, "-m", module, f"--model_dir={run_copy}"]
    proc = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=280)
    assert proc.returncode == 2
    message = _one_error_line(proc.stderr)
    assert message == f"error: {config} is not a gmvae_keras configuration (unknown configuration keys: no_such_option)"
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("module", ["figures", "export"])
def test_a_run_whose_config_is_not_json_is_refused_in_one_line(run_copy, tmp_path, capsys, module):
    import importlib

    command = importlib.import_module(f"gmvae_keras.{module}").main
    config = run_copy / "config.json"
    config.write_text('{"dataset": "mnist",')  # cut short, as by a full disk
    before = _snapshot(tmp_path)
    message = _refused(lambda: command(["--model_dir", str(run_copy)]), capsys)
    assert message.startswith(f"error: cannot read {config}: ")
    assert _snapshot(tmp_path) == before


def test_overwrite_starts_afresh_without_the_old_runs_figures(run_copy):
    from gmvae_keras import checkpoint as ckpt
    from gmvae_keras.train import train_and_evaluate

    config = ckpt.read_config(run_copy)
    (run_copy / "figures").mkdir()
    (run_copy / "figures" / "confusion.png").write_bytes(b"of the old run")
    metrics = train_and_evaluate(dataclasses.replace(config, margin=2.0, overwrite=True), run_copy)
    assert not (run_copy / "figures").exists()
    assert ckpt.read_config(run_copy).margin == 2.0
    assert ckpt.read_json(run_copy / "metrics.json") == metrics


@pytest.mark.parametrize(
    "content, message", [("{", r"^cannot read .*state\.json: "), ("[]", r"^.*state\.json is not a JSON object$")]
)
def test_resuming_a_run_whose_state_is_not_a_json_object_is_refused(run_copy, tmp_path, content, message):
    from gmvae_keras import checkpoint as ckpt
    from gmvae_keras.train import train_and_evaluate

    config = ckpt.read_config(run_copy)
    (run_copy / "state.json").write_text(content)
    before = _snapshot(tmp_path)
    with pytest.raises(ckpt.RunError, match=message):
        train_and_evaluate(dataclasses.replace(config, epochs=2), run_copy)
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--runs_dir={tmp}/file.txt"], "--runs_dir={tmp}/file.txt is a file, not a folder"),
        (
            ["--runs_dir={tmp}/file.txt/r"],
            "--runs_dir={tmp}/file.txt/r cannot be created: {tmp}/file.txt is a file, not a folder",
        ),
        (["--out={tmp}"], "--out={tmp} is a folder, not a file"),
        (
            ["--out={tmp}/file.txt/r.md"],
            "--out={tmp}/file.txt/r.md cannot be created: {tmp}/file.txt is a file, not a folder",
        ),
        (["--data_dir={tmp}/file.txt"], "--data_dir={tmp}/file.txt is a file, not a folder"),
        (["--data_dir={tmp}/nothing"], "--data_dir={tmp}/nothing does not exist"),
    ],
    ids=[
        "runs_dir-file",
        "runs_dir-under-a-file",
        "out-folder",
        "out-under-a-file",
        "data_dir-file",
        "data_dir-missing",
    ],
)
def test_reproduce_refuses_bad_paths_before_training(tmp_path, capsys, monkeypatch, argv, message):
    tool = _load_tool("reproduce")

    def no_training(command):
        raise AssertionError(f"a bad path must be refused before any training: {command}")

    monkeypatch.setattr(tool, "run_seed", no_training)
    (tmp_path / "file.txt").write_text("precious")
    argv = ["--dataset=mnist", "--seeds=1", "--settings=cpu", f"--runs_dir={tmp_path / 'runs'}"] + [
        arg.format(tmp=tmp_path) for arg in argv
    ]
    before = _snapshot(tmp_path)
    assert _refused(lambda: tool.main(argv), capsys) == f"error: {message.format(tmp=tmp_path)}"
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--datasets_dir={tmp}/nothing"], "--datasets_dir={tmp}/nothing does not exist"),
        (["--datasets_dir={tmp}/file.txt"], "--datasets_dir={tmp}/file.txt is a file, not a folder"),
        (["--workdir={tmp}/file.txt"], "--workdir={tmp}/file.txt is a file, not a folder"),
        (
            ["--workdir={tmp}/file.txt/w"],
            "--workdir={tmp}/file.txt/w cannot be created: {tmp}/file.txt is a file, not a folder",
        ),
    ],
    ids=["datasets_dir-missing", "datasets_dir-file", "workdir-file", "workdir-under-a-file"],
)
def test_compare_commits_refuses_bad_paths_before_any_worktree(tmp_path, capsys, argv, message):
    tool = _load_tool("compare_commits")
    (tmp_path / "file.txt").write_text("precious")
    (tmp_path / "datasets" / "mnist").mkdir(parents=True)
    argv = [
        "HEAD",
        "HEAD",
        f"--datasets_dir={tmp_path / 'datasets'}",
        f"--workdir={tmp_path / 'work'}",
        "--recipes=mnist-cpu",
    ] + [arg.format(tmp=tmp_path) for arg in argv]
    before = _snapshot(tmp_path)
    assert _refused(lambda: tool.main(argv), capsys) == f"error: {message.format(tmp=tmp_path)}"
    assert _snapshot(tmp_path) == before
