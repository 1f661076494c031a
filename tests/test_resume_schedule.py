"""A run resumed with more epochs trains on a learning-rate schedule of the new length."""

import keras
import pytest

from gmvae_keras.callbacks import LearningRateLogger
from gmvae_keras.config import Config
from gmvae_keras.train import _refit_schedule, build_model, learning_rate, train_and_evaluate

from conftest import tiny_config, write_idx_dataset


@pytest.fixture
def logged_learning_rates(monkeypatch):
    """`{epoch: learning rate}` as LearningRateLogger writes it into the epoch logs."""
    logged = {}
    original = LearningRateLogger.on_epoch_end

    def record(self, epoch, logs=None):
        original(self, epoch, logs)
        logged[epoch + 1] = logs["learning_rate"]

    monkeypatch.setattr(LearningRateLogger, "on_epoch_end", record)
    return logged


def test_resuming_a_cosine_run_with_more_epochs_rebuilds_its_schedule(tmp_path, logged_learning_rates, capsys):
    write_idx_dataset(tmp_path / "data", n_train=200, n_test=50, seed=1)
    steps = 2
    config = tiny_config(tmp_path / "data", epochs=1, steps_per_epoch=steps, lr_schedule="cosine")
    model_dir = tmp_path / "run"
    train_and_evaluate(config, model_dir)
    assert logged_learning_rates[1] == pytest.approx(0.0)  # the 1-epoch schedule has ended
    capsys.readouterr()

    # Epoch 2 of 3 ends before the new schedule does (2 of 2 would end at 0 either way).
    config.epochs = 3
    train_and_evaluate(config, model_dir)
    out = capsys.readouterr().out
    schedule = learning_rate(config, steps)
    # The step count goes on from the checkpoint's: after epoch 2 the rate is the new schedule's at 2 * steps.
    expected = float(keras.ops.convert_to_numpy(schedule(2 * steps)))
    assert expected > 0
    assert logged_learning_rates[2] == pytest.approx(expected, rel=1e-6)
    assert f"resuming {model_dir}: learning-rate schedule rebuilt for 3 epochs of 2 steps (was 2 steps)" in out
    model = keras.saving.load_model(model_dir / "checkpoints" / "epoch-0003.keras")
    assert int(model.optimizer.iterations) == 3 * steps
    assert model.optimizer.get_config()["learning_rate"]["config"]["decay_steps"] == 3 * steps


def test_a_mixed_float16_model_gets_its_new_schedule_inside_its_loss_scale_optimizer(global_dtype_policy):
    # Under the run's global policy, as train.train_and_evaluate builds it.
    keras.config.set_dtype_policy("mixed_float16")
    config = Config(feature_size=8, latent_size=4, k=3, epochs=1, lr_schedule="cosine", precision="mixed_float16")
    steps = 2
    model = build_model(config, 10, (28, 28, 1), steps)
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert model.encoder.blocks[0].compute_dtype == "float16"

    config.epochs = 2
    assert _refit_schedule(model, config, steps) == "2 epochs of 2 steps (was 2 steps)"
    assert model.optimizer.inner_optimizer.get_config()["learning_rate"]["config"]["decay_steps"] == 2 * steps
    assert _refit_schedule(model, config, steps) is None  # it fits now
    # The same epochs with more steps each (another batch size) rebuild it too.
    assert _refit_schedule(model, config, 3) == "2 epochs of 3 steps (was 4 steps)"
