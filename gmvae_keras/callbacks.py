"""Callbacks that change the model's state during training."""

import keras


class TemperatureAnnealing(keras.callbacks.Callback):
    """Anneals the Gumbel-Softmax temperature between epochs.

    At the start of epoch `e` (0-based) the temperature becomes
    `start + (end - start) * min(e / epochs, 1)`: linear from `start` to
    `end` over the first `epochs` epochs, then constant. The value is written
    into the model's `gumbel_softmax.temperature` variable (no retracing) and
    into the epoch logs as `temperature`.

    Args:
        start: temperature of the first epoch.
        end: temperature from epoch `epochs` on.
        epochs: length of the annealing, >= 1.
    """

    def __init__(self, start=1.0, end=0.5, epochs=50):
        super().__init__()
        if start <= 0 or end <= 0:
            raise ValueError(f"temperatures must be > 0, got start={start}, end={end}")
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        self.start = float(start)
        self.end = float(end)
        self.epochs = int(epochs)

    def temperature_at(self, epoch):
        return self.start + (self.end - self.start) * min(epoch / self.epochs, 1.0)

    def on_epoch_begin(self, epoch, logs=None):
        self.model.gumbel_softmax.temperature.assign(self.temperature_at(epoch))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["temperature"] = float(self.model.gumbel_softmax.temperature.numpy())
