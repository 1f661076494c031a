"""gmvae_keras._quiet: TensorFlow's C++ start-up notices stay off stderr, other lines stay on it."""

import os
import subprocess
import sys
import textwrap

import pytest

from gmvae_keras._quiet import STARTUP_NOTICES

from conftest import REPO_ROOT


def _run(code, **env):
    base = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        cwd=REPO_ROOT,
        env={**base, **env},
        timeout=240,
    )


def test_importing_tensorflow_prints_no_startup_notice():
    result = _run(
        """
        import gmvae_keras._quiet as quiet
        quiet.quiet_tensorflow()
        import tensorflow as tf
        print(tf.constant(2.0).numpy() * 3)
        """
    )
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    assert result.stdout.strip() == b"6.0"
    for notice in STARTUP_NOTICES:
        assert notice not in result.stderr, result.stderr.decode()


def test_other_stderr_lines_are_written_back_in_order():
    result = _run(
        r"""
        import os, sys
        from gmvae_keras import _quiet
        with _quiet._dropping_lines(_quiet.STARTUP_NOTICES):
            os.write(2, b"first\n")
            os.write(2, b"I0000 port.cc:153] oneDNN custom operations are on. You may see\n")
            print("second", file=sys.stderr)
            os.write(2, b"third, without a newline")
        print("after", file=sys.stderr)
        """
    )
    assert result.returncode == 0, result.stderr.decode()
    assert result.stderr == b"first\nsecond\nthird, without a newlineafter\n"


def test_a_user_asking_for_every_log_line_gets_them():
    result = _run(
        """
        import os, sys
        import gmvae_keras._quiet as quiet
        quiet.quiet_tensorflow()
        assert "tensorflow" not in sys.modules
        assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0"
        """,
        TF_CPP_MIN_LOG_LEVEL="0",
    )
    assert result.returncode == 0, result.stderr.decode()


@pytest.mark.parametrize(
    "command",
    [
        ["gmvae_keras.main", "--dataset=nope"],
        ["gmvae_keras.export", "--model_dir={missing}"],
        ["gmvae_keras.predict", "--model_dir={missing}", "image.png"],
        ["gmvae_keras.suggest", "--model_dir={missing}", "--count=1"],
        ["gmvae_keras.figures", "--model_dir={missing}"],
    ],
    ids=lambda command: command[0],
)
def test_every_command_line_says_bad_input_in_one_line_without_startup_notices(command, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    command = [part.format(missing=tmp_path / "no-such-run") for part in command]
    result = subprocess.run(
        [sys.executable, "-m", *command], capture_output=True, cwd=REPO_ROOT, env=env, text=True, timeout=240
    )
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("error: "), result.stderr
