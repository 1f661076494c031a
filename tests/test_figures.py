import struct

import numpy as np
import pytest

from conftest import write_idx_dataset
from gmvae_keras.config import Config
from gmvae_keras.figures import DPI, main as figures_main
from gmvae_keras.train import train_and_evaluate


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    write_idx_dataset(folder, n_train=200, n_test=60, seed=3)
    config = Config(
        dataset="mnist", data_dir=str(folder), num_labeled=20, batch_size=40, epochs=1, steps_per_epoch=2,
        feature_size=8, latent_size=4, k=3, eval_batch_size=64, image_summary_every=0, verbose=0,
    )
    model_dir = tmp_path_factory.mktemp("run") / "run"
    train_and_evaluate(config, model_dir)
    return model_dir


def test_figures_are_pngs_of_the_expected_size(tiny_run, capsys):
    assert figures_main(["--model_dir", str(tiny_run), "--tsne_points", "40", "--samples", "5"]) == 0
    figures = tiny_run / "figures"
    expected = {
        "generated.png": (int(5 * 0.6 * DPI), int((10 * 0.6 + 0.4) * DPI)),
        "tsne.png": (8 * DPI, 7 * DPI),
        # 20 test images in rows of 10: 2 original rows + 2 reconstruction rows.
        "reconstructions.png": (int(10 * 0.6 * DPI), int((4 * 0.6 + 0.4) * DPI)),
        "confusion_matrix.png": (7 * DPI, 6 * DPI),
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
