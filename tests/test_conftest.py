"""The test suite's own guards: real-data tests that may not skip, the Hypothesis profiles, and no
`--deterministic` state left behind by a test."""

import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO_ROOT

REAL_DATA_TEST = """
def test_reads_mnist(real_dataset):
    assert real_dataset("mnist").name == "mnist"
"""


def run_pytest(folder, env):
    """Runs pytest on `folder` (its own conftest.py and tests) in a fresh process."""
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-rs", "-p", "no:cacheprovider", str(folder)],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def suite(tmp_path):
    """A copy of tests/conftest.py beside one test of the real MNIST files."""
    folder = tmp_path / "suite"
    folder.mkdir()
    shutil.copy(REPO_ROOT / "tests" / "conftest.py", folder / "conftest.py")
    (folder / "test_real.py").write_text(REAL_DATA_TEST)
    env = {k: v for k, v in os.environ.items() if k not in ("GMVAE_REQUIRE_DATASETS", "CI")}
    return folder, env


@pytest.mark.parametrize("root_exists", [True, False])
def test_real_data_test_skips_with_its_reason_when_not_required(suite, tmp_path, root_exists):
    folder, env = suite
    root = tmp_path / "datasets"
    if root_exists:
        root.mkdir()
    result = run_pytest(folder, {**env, "GMVAE_DATASETS": str(root)})
    assert result.returncode == 0, result.stdout[-2000:]
    assert "1 skipped" in result.stdout
    reason = (
        f"test_real.py::test_reads_mnist needs the real mnist files: no folder mnist in {root} (set GMVAE_DATASETS)"
    )
    assert reason in result.stdout and "SKIPPED [1]" in result.stdout


@pytest.mark.parametrize("root_exists", [True, False])
def test_real_data_test_fails_instead_of_skipping_when_required(suite, tmp_path, root_exists):
    folder, env = suite
    root = tmp_path / "datasets"
    if root_exists:
        root.mkdir()
    result = run_pytest(folder, {**env, "GMVAE_DATASETS": str(root), "GMVAE_REQUIRE_DATASETS": "1"})
    assert result.returncode == 1, result.stdout[-2000:]
    assert "1 failed" in result.stdout and "skipped" not in result.stdout
    assert "GMVAE_REQUIRE_DATASETS=1 but test_real.py::test_reads_mnist needs the real mnist files" in result.stdout


def test_real_data_test_runs_when_required_and_present(suite, tmp_path):
    folder, env = suite
    (tmp_path / "datasets" / "mnist").mkdir(parents=True)
    result = run_pytest(folder, {**env, "GMVAE_DATASETS": str(tmp_path / "datasets"), "GMVAE_REQUIRE_DATASETS": "1"})
    assert result.returncode == 0 and "1 passed" in result.stdout, result.stdout[-2000:]


@pytest.mark.parametrize("ci, profile", [("true", "ci"), (None, "dev"), ("1", "dev")])
def test_hypothesis_profile_follows_the_ci_variable(ci, profile):
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    code = "import conftest, hypothesis; s = hypothesis.settings(); print(s.derandomize, s.max_examples, s.print_blob)"
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT / "tests",
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    expected = {"ci": "True 30 True", "dev": "False 100 False"}[profile]
    assert result.stdout.split() == expected.split()


def test_determinism_disable_undoes_enable():
    import tensorflow as tf
    from tensorflow.python.framework import config as tf_config

    from gmvae_keras import determinism

    determinism.enable()
    assert determinism._enabled and tf_config.is_op_determinism_enabled()
    determinism.disable()
    assert not determinism._enabled and not tf_config.is_op_determinism_enabled()
    assert tf.config.optimizer.get_experimental_options()["arithmetic_optimization"] is True
