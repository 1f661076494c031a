import os
import struct
import subprocess
import sys

from gmvae_keras.figures import DPI, read_validation_history
from gmvae_keras.figures import main as figures_main

from conftest import REPO_ROOT


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_figures_are_pngs_of_the_expected_size(tiny_run, capsys):
    assert figures_main(["--model_dir", str(tiny_run), "--tsne_points", "40", "--samples", "5"]) == 0
    figures = tiny_run / "figures"
    expected = {
        "generated.png": (int(5 * 0.6 * DPI), int((10 * 0.6 + 0.4) * DPI)),
        "tsne.png": (8 * DPI, 7 * DPI),
        # 20 test images in rows of 10: 2 original rows + 2 reconstruction rows.
        "reconstructions.png": (int(10 * 0.6 * DPI), int((4 * 0.6 + 0.4) * DPI)),
        "confusion_matrix.png": (7 * DPI, 6 * DPI),
        "validation_by_epoch.png": (7 * DPI, 4 * DPI),
    }
    for name, size in expected.items():
        assert png_size(figures / name) == size, name
    assert "tsne:" in capsys.readouterr().out
    events = list((tiny_run / "logs" / "figures").glob("events.out.tfevents.*"))
    assert events


def test_figures_command_errors_are_one_line(tmp_path, capsys):
    assert figures_main(["--model_dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err


def test_figures_command_prints_only_its_error_line(tmp_path):
    # As a command, after TensorFlow has loaded: none of its start-up notices around the one line.
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run(
        [sys.executable, "-m", "gmvae_keras.figures", f"--model_dir={tmp_path}"],
        capture_output=True,
        cwd=REPO_ROOT,
        env=env,
        timeout=240,
    )
    assert result.returncode == 2
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "config.json" in lines[0], lines


def test_validation_history_keeps_the_value_an_epoch_was_written_with_last(tmp_path):
    import tensorflow as tf

    # A run cut short in its third epoch after logging it, then resumed: epoch 3 is logged twice.
    for values in ({0: 40.0, 1: 50.0, 2: 51.0}, {2: 55.0, 3: 60.0}):
        writer = tf.summary.create_file_writer(str(tmp_path))
        with writer.as_default():
            for step, value in values.items():
                tf.summary.scalar("epoch_cluster_accuracy", value, step=step)
                tf.summary.scalar("epoch_nmi", value / 2, step=step)
        writer.close()
    history = read_validation_history(tmp_path)
    assert history["cluster_accuracy"][0].tolist() == [1, 2, 3, 4]
    assert history["cluster_accuracy"][1].tolist() == [40.0, 50.0, 55.0, 60.0]
    assert history["nmi"][1].tolist() == [20.0, 25.0, 27.5, 30.0]
