"""`AveragedWeights`: the moving average of the weights between epochs, on a tiny model."""

import keras
import numpy as np
import pytest

from gmvae_keras.callbacks import AveragedWeights


class StopAfter(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt


class RecordWeights(keras.callbacks.Callback):
    """The model's weights and the optimizer's averages at each epoch end."""

    def __init__(self):
        super().__init__()
        self.model_weights, self.averages = [], []

    def on_epoch_end(self, epoch, logs=None):
        self.model_weights.append(_weights(self.model))
        self.averages.append(
            [keras.ops.convert_to_numpy(v) for v in self.model.optimizer._model_variables_moving_average]
        )


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 5)).astype("float32")
    y = (x @ rng.normal(size=(5, 1))).astype("float32")
    return x, y


def _model(use_ema=True):
    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(0.05, use_ema=use_ema, ema_momentum=0.8), loss="mse")
    return model


def _fit(model, callbacks, epochs, initial_epoch=0):
    x, y = _data()
    model.fit(x, y, batch_size=16, epochs=epochs, initial_epoch=initial_epoch, shuffle=False, verbose=0, callbacks=callbacks)


def _weights(model):
    return [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]


def test_training_follows_the_raw_weights_and_ends_on_the_average():
    # Keras's own EMA (no swapping) finalizes the average into the model at the end.
    reference = _model()
    _fit(reference, [], epochs=3)
    raw = _model(use_ema=False)
    _fit(raw, [], epochs=3)

    swapped = _model()
    record = RecordWeights()
    _fit(swapped, [AveragedWeights(), record], epochs=3)
    for got, want in zip(_weights(swapped), _weights(reference), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert not all(np.allclose(a, b) for a, b in zip(_weights(swapped), _weights(raw), strict=True))
    # Between epochs the model holds the average, the optimizer the raw weights.
    for model_weights, averages in zip(record.model_weights[:-1], record.averages[:-1], strict=True):
        assert not all(np.allclose(a, b) for a, b in zip(model_weights, averages, strict=True))


def test_a_run_resumed_from_an_epoch_checkpoint_matches_an_uninterrupted_one(tmp_path):
    whole = _model()
    _fit(whole, [AveragedWeights()], epochs=3)

    first = _model()
    with pytest.raises(KeyboardInterrupt):
        _fit(first, [AveragedWeights(), StopAfter(1)], epochs=3)
    first.save(tmp_path / "epoch-2.keras")
    resumed = keras.saving.load_model(tmp_path / "epoch-2.keras")
    _fit(resumed, [AveragedWeights()], epochs=3, initial_epoch=2)
    for got, want in zip(_weights(resumed), _weights(whole), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_batch_normalization_statistics_are_re_estimated_for_the_average():
    keras.utils.set_random_seed(4)
    model = keras.Sequential(
        [keras.Input((5,)), keras.layers.Dense(3), keras.layers.BatchNormalization(), keras.layers.Dense(1)]
    )
    model.compile(optimizer=keras.optimizers.Adam(0.05, use_ema=True, ema_momentum=0.8), loss="mse")
    sample = np.random.default_rng(5).normal(size=(48, 5)).astype("float32")
    _fit(model, [AveragedWeights(sample, batch_size=16)], epochs=2)
    dense, norm = model.layers[0], model.layers[1]
    hidden = keras.ops.convert_to_numpy(dense(sample))
    batch_means = hidden.reshape(3, 16, 3).mean(axis=1)
    batch_variances = hidden.reshape(3, 16, 3).var(axis=1)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(norm.moving_mean), batch_means.mean(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(norm.moving_variance), batch_variances.mean(0), rtol=1e-4, atol=1e-5
    )
    assert norm.momentum == 0.99  # restored
