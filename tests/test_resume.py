"""Resume is exact: a run killed mid-epoch and resumed ends with the weights of a run never stopped."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest

import gmvae_keras.model  # noqa: F401  registers the custom layers
from gmvae_keras import GMVAE
from gmvae_keras import checkpoint as ckpt
from gmvae_keras.callbacks import EpochNoiseSeeds

from conftest import REPO_ROOT, tiny_values, write_idx_dataset

# `--deterministic` turns TensorFlow's op determinism on for a whole process, and logical devices must be set
# before TensorFlow runs any op: every training runs in a process of its own. With a fourth argument the run
# stops in the middle of its second epoch, after one step of it, and waits there to be killed.
SCRIPT = textwrap.dedent(
    """
    import json, pathlib, sys, time
    import tensorflow as tf

    values, model_dir, devices = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    if devices > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * devices)
    assert len(tf.config.list_logical_devices("CPU")) == devices

    from gmvae_keras import callbacks
    from gmvae_keras.config import Config
    from gmvae_keras.train import train_and_evaluate

    if len(sys.argv) > 4:
        marker = pathlib.Path(sys.argv[4])
        begin = callbacks.EpochSummary.on_epoch_begin

        def remember_the_epoch(self, epoch, logs=None):
            self.epoch_now = epoch
            begin(self, epoch, logs)

        def wait_to_be_killed(self, batch, logs=None):
            if self.epoch_now == 1:
                marker.touch()
                time.sleep(600)

        callbacks.EpochSummary.on_epoch_begin = remember_the_epoch
        callbacks.EpochSummary.on_train_batch_end = wait_to_be_killed
    train_and_evaluate(Config(**values), model_dir)
    """
)


@pytest.fixture(scope="module")
def mnist_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mnist")
    # 80 train images: an epoch of batches of 20 unlabeled and 20 labeled images is 4 steps.
    write_idx_dataset(folder, n_train=100, n_test=20, seed=8)
    return folder


def _config(data_dir, **overrides):
    # Every random stream of the input pipeline: both permutations and the second views' shifts and flips.
    perturbed = {"consistency_shift": 2, "consistency_flip": True}
    return tiny_values(data_dir, epochs=2, deterministic=True, **{**perturbed, **overrides})


def _last_checkpoint(model_dir):
    state = ckpt.read_json(model_dir / "state.json")
    return state["epoch"], keras.saving.load_model(ckpt.last_checkpoint(model_dir, state))


def _train(script, values, model_dir, devices, *marker):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    command = [sys.executable, str(script), json.dumps(values), str(model_dir), str(devices), *map(str, marker)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO_ROOT)


def _finished(process):
    out, err = process.communicate(timeout=280)
    assert process.returncode == 0, err[-3000:]
    return out


def _assert_resume_is_exact(values, tmp_path, devices=1):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    _finished(_train(script, values, tmp_path / "whole", devices))
    marker = tmp_path / "in-epoch-2"
    killed = _train(script, values, tmp_path / "resumed", devices, marker)
    try:
        deadline = time.monotonic() + 240
        while not marker.exists() and killed.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert marker.exists(), killed.communicate()[1][-3000:]
    finally:
        killed.send_signal(signal.SIGKILL)
        killed.communicate()
    assert killed.returncode == -signal.SIGKILL
    # Killed mid-epoch 2: epoch 1 is checkpointed with its optimizer state, nothing was scored.
    killed_epochs, killed_model = _last_checkpoint(tmp_path / "resumed")
    whole_epochs, whole = _last_checkpoint(tmp_path / "whole")
    assert whole_epochs == 2 and killed_epochs == 1
    assert 0 < int(killed_model.optimizer.iterations) < int(whole.optimizer.iterations)
    assert not (tmp_path / "resumed" / "metrics.json").exists()
    labeled = np.load(tmp_path / "resumed" / "labeled_indices.npy")
    out = _finished(_train(script, values, tmp_path / "resumed", devices))
    _, resume_line, after_resume = out.partition(f"resuming {tmp_path / 'resumed'} after epoch 1")
    assert resume_line and "epoch 2/2" in after_resume and "epoch 1/2" not in after_resume
    assert json.loads((tmp_path / "resumed" / "metrics.json").read_text())["epochs"] == 2
    np.testing.assert_array_equal(np.load(tmp_path / "resumed" / "labeled_indices.npy"), labeled)
    assert not list((tmp_path / "resumed").rglob(".*.tmp-*"))  # no half-written file left by the kill
    resumed_epochs, resumed = _last_checkpoint(tmp_path / "resumed")
    assert resumed_epochs == 2 and int(resumed.optimizer.iterations) == int(whole.optimizer.iterations)
    pairs = list(zip(whole.get_weights(), resumed.get_weights(), strict=True))
    differ = [i for i, (a, b) in enumerate(pairs) if not np.array_equal(a, b)]
    assert not differ, f"{len(differ)} of {len(pairs)} weights differ after the resume"


@pytest.mark.slow
def test_a_run_killed_mid_epoch_and_resumed_ends_with_the_weights_of_an_uninterrupted_one(mnist_files, tmp_path):
    # The constant learning rate (the default) is the same in every epoch; an epoch is one pass (4 steps).
    _assert_resume_is_exact(_config(mnist_files), tmp_path)


@pytest.mark.slow
def test_a_mirrored_run_killed_mid_epoch_and_resumed_ends_with_the_weights_of_an_uninterrupted_one(
    mnist_files, tmp_path
):
    # 3 of the 4 steps of a pass: the epochs of a run end mid-pass.
    _assert_resume_is_exact(_config(mnist_files, strategy="mirrored", steps_per_epoch=3), tmp_path, devices=2)


def test_the_noise_of_an_epoch_does_not_depend_on_the_epochs_before():
    model = GMVAE(image_shape=(28, 28, 1), num_classes=3, feature_size=4, latent_size=2, k=1, seed=0)
    generators = [model.gumbel_softmax.seed_generator, model.gaussian_sample.seed_generator]
    seeds = EpochNoiseSeeds(seed=5)
    seeds.set_model(model)

    def states_at(epoch):
        seeds.on_epoch_begin(epoch)
        return [g.state.numpy().tolist() for g in generators]

    at_two = states_at(2)
    for generator in generators:  # the draws of an epoch move the states on
        generator.next()
    assert states_at(2) == at_two
    assert at_two[0] != at_two[1] and states_at(3) != at_two
    assert EpochNoiseSeeds(seed=6).state_at(2, 0).tolist() != at_two[0]
