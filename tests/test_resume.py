"""Resume is exact: a run stopped after an epoch and resumed ends with the weights of a run never stopped."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import gmvae_keras.model  # noqa: F401  registers the custom layers
from gmvae_keras import GMVAE
from gmvae_keras import checkpoint as ckpt
from gmvae_keras.callbacks import EpochNoiseSeeds

from conftest import REPO_ROOT, tiny_values, write_idx_dataset

# `--deterministic` turns TensorFlow's op determinism on for a whole process, and logical devices must be set
# before TensorFlow runs any op: the three trainings of a case run in a process of their own. The interrupted
# run stops as Ctrl-C would, after its first epoch is checkpointed, and its resume starts from the run directory.
SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import tensorflow as tf

    values, root, devices = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    if devices > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * devices)
    assert len(tf.config.list_logical_devices("CPU")) == devices

    from gmvae_keras import callbacks
    from gmvae_keras.config import Config
    from gmvae_keras.train import train_and_evaluate

    train_and_evaluate(Config(**values), root + "/whole")

    summary = callbacks.EpochSummary.on_epoch_end

    def stop_after_the_first_epoch(self, epoch, logs=None):
        summary(self, epoch, logs)
        raise KeyboardInterrupt

    callbacks.EpochSummary.on_epoch_end = stop_after_the_first_epoch
    try:
        train_and_evaluate(Config(**values), root + "/resumed")
        raise AssertionError("the run was not interrupted")
    except KeyboardInterrupt:
        pass
    # Stopped, not finished: the run scored nothing.
    assert not os.path.exists(root + "/resumed/metrics.json")
    callbacks.EpochSummary.on_epoch_end = summary
    train_and_evaluate(Config(**values), root + "/resumed")
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


def _last_weights(model_dir):
    state = ckpt.read_json(model_dir / "state.json")
    model = keras.saving.load_model(ckpt.last_checkpoint(model_dir, state))
    return state["epoch"], model.get_weights()


def _assert_resume_is_exact(values, tmp_path, devices=1):
    script = tmp_path / "resume.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [sys.executable, str(script), json.dumps(values), str(tmp_path), str(devices)],
        capture_output=True,
        text=True,
        timeout=280,
        env=env,
        cwd=REPO_ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    _, resume_line, after_resume = result.stdout.partition(f"resuming {tmp_path / 'resumed'} after epoch 1")
    assert resume_line and "epoch 2/2" in after_resume
    assert json.loads((tmp_path / "resumed" / "metrics.json").read_text())["epochs"] == 2
    whole_epochs, whole = _last_weights(tmp_path / "whole")
    resumed_epochs, resumed = _last_weights(tmp_path / "resumed")
    assert whole_epochs == resumed_epochs == 2
    differ = [i for i, (a, b) in enumerate(zip(whole, resumed, strict=True)) if not np.array_equal(a, b)]
    assert not differ, f"{len(differ)} of {len(whole)} weights differ after the resume"


def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(mnist_files, tmp_path):
    # The constant learning rate (the default) is the same in every epoch; an epoch is one pass (4 steps).
    _assert_resume_is_exact(_config(mnist_files), tmp_path)


def test_a_resumed_mirrored_run_on_two_devices_ends_with_the_weights_of_an_uninterrupted_one(mnist_files, tmp_path):
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
