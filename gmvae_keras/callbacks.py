"""Callbacks that change the model's state during training or report on it."""

import functools

import keras
import numpy as np
import tensorflow as tf

from gmvae_keras import layers, metrics, prediction


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


class EpochNoiseSeeds(keras.callbacks.Callback):
    """Restarts the model's sampling noise at every epoch from the seed and the epoch alone.

    At the start of epoch `e` the state of the `keras.random.SeedGenerator`
    of each sampling layer (`gumbel_softmax`, `gaussian_sample`) becomes a
    value drawn from `(seed, e, layer)`. A `.keras` file does not hold these
    states, so without this a resumed run would draw the noise of its
    first epoch from the layers' initial seeds.

    Args:
        seed: the run's seed, >= 0.
    """

    LAYERS = ("gumbel_softmax", "gaussian_sample")

    def __init__(self, seed=0):
        super().__init__()
        self.seed = int(seed)

    def state_at(self, epoch, layer):
        """The `[key, counter]` state of sampling layer number `layer` at the start of `epoch`."""
        key = np.random.SeedSequence([self.seed, epoch, layer]).generate_state(1)[0] & 0x7FFFFFFF
        return np.array([key, 0])

    def on_epoch_begin(self, epoch, logs=None):
        for index, name in enumerate(self.LAYERS):
            state = getattr(self.model, name).seed_generator.state
            state.assign(keras.ops.convert_to_tensor(self.state_at(epoch, index), dtype=state.dtype))


class LearningRateLogger(keras.callbacks.Callback):
    """Adds the optimizer's current learning rate to the epoch logs."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))


class EpochSummary(keras.callbacks.Callback):
    """Prints one line per epoch: every loss term, the validation scores, temperature, time and images/s.

    Args:
        epochs: total epochs of the run, for the "epoch e/E" prefix.
        print_fn: where the line goes (default `print`).
    """

    TERMS = (
        ("loss", "loss"),
        ("reconstruction_loss", "L_R"),
        ("gaussian_loss", "L_G"),
        ("categorical_loss", "L_C"),
        ("assignment_loss", "L_A"),
        ("metric_loss", "L_M"),
        ("assignment_accuracy", "assign_acc"),
    )

    # After the validation error, ACC and NMI, in this order.
    SCORES = (
        ("val_clusters_used", "clusters_used={:.2f}"),
        ("val_smallest_share", "smallest_share={:.2f}"),
        ("val_uncovered_share", "uncovered={:.3f}"),
        ("feature_cluster_agreement", "mixture_agreement={:.3f}"),
        ("temperature", "temperature={:.3f}"),
        ("epoch_seconds", "time={:.1f}s"),
        ("images_per_second", "{:.0f} img/s"),
    )

    def __init__(self, epochs, print_fn=None):
        super().__init__()
        self.epochs = epochs
        self.print_fn = print_fn or functools.partial(print, flush=True)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        parts = [f"epoch {epoch + 1}/{self.epochs}"]
        parts += [f"{short}={logs[name]:.4f}" for name, short in self.TERMS if name in logs]
        if "val_loss" in logs:
            parts.append(f"val_loss={logs['val_loss']:.4f}")
        for name, short in (("val_error", "val_error"), ("val_cluster_accuracy", "val_ACC"), ("val_nmi", "val_NMI")):
            if name in logs:
                parts.append(f"{short}={logs[name]:.2f}%")
        parts += [line.format(logs[name]) for name, line in self.SCORES if name in logs]
        self.print_fn(" ".join(parts))


def image_grid(images, columns):
    """Tiles `[n, H, W, C]` images into one `[rows*H, columns*W, C]` image."""
    images = np.asarray(images)
    n, h, w, c = images.shape
    rows = -(-n // columns)
    padded = np.zeros((rows * columns, h, w, c), images.dtype)
    padded[:n] = images
    return padded.reshape(rows, columns, h, w, c).transpose(0, 2, 1, 3, 4).reshape(rows * h, columns * w, c)


class ImageSummaries(keras.callbacks.Callback):
    """Writes image grids to TensorBoard every `every` epochs.

    `reconstructions`: the given images (odd rows) above their
    reconstructions (even rows); `generated`: one row of `samples` images
    per category, decoded from z ~ p(z|y) with a fixed seed.

    Args:
        log_dir: folder of the summary writer.
        images: a few `[n, H, W, C]` float images in [0, 1].
        every: period in epochs (the last epoch of a run is not forced).
        samples: generated images per category.
        seed: seed of the generated samples.
    """

    def __init__(self, log_dir, images, every=5, samples=10, seed=0):
        super().__init__()
        self.log_dir = str(log_dir)
        self.images = images
        self.every = int(every)
        self.samples = int(samples)
        self.seed = seed
        self._writer = None

    def on_epoch_end(self, epoch, logs=None):
        if self.every <= 0 or (epoch + 1) % self.every:
            return
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        model = self.model
        recon = keras.ops.convert_to_numpy(model(self.images, training=False)["reconstruction"])
        columns = len(self.images)
        pairs = np.concatenate([self.images, recon])
        generated = np.concatenate([model.generate(c, self.samples, seed=self.seed) for c in range(model.num_classes)])
        with self._writer.as_default(step=epoch):
            tf.summary.image("reconstructions", image_grid(pairs, columns)[None])
            tf.summary.image("generated_per_category", image_grid(generated, self.samples)[None])
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class ValidationMetrics(keras.callbacks.Callback):
    """Scores the model on a held-out set after every epoch.

    One pass of the model's prediction rule gives `val_error` (classification
    error, %), `val_cluster_accuracy` (ACC, %, best cluster-to-class
    matching) and `val_nmi` (%), and, from the predictions alone,
    `val_clusters_used` (`metrics.cluster_usage`: 10 when 10 clusters hold equal
    shares, 1 when every image is in one), and two indicators of merged
    classes that read no validation labels: `val_smallest_share`
    (`metrics.smallest_share`) and, given the labeled training images,
    `val_uncovered_share` (`metrics.uncovered_share`, k-means on x̂ with
    three clusters per class). With `clustering=True` it logs
    `val_loss`, `prediction.unsupervised_loss` (no labels read), and no
    `val_error`: a clustering model's categories are not the classes. All are
    added to the epoch logs: place it before the callbacks that read them
    (checkpointing, summaries, TensorBoard).

    Args:
        images: `[n, H, W, C]` uint8 or float images in [0, 1].
        labels: `[n]` int labels.
        batch_size: inference batch size.
        clustering: score an unsupervised clustering model.
        labeled_images: the labeled training images, for
            `val_uncovered_share` (None: not logged).
    """

    def __init__(self, images, labels, batch_size=1000, clustering=False, labeled_images=None):
        super().__init__()
        self.images = images
        self.labels = np.asarray(labels)
        self.batch_size = int(batch_size)
        self.clustering = bool(clustering)
        self.labeled_images = labeled_images

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or len(self.labels) == 0:
            return
        # The label-free scores first: a clustering run selects its model by them.
        if self.clustering:
            logs["val_loss"] = prediction.unsupervised_loss(self.model, self.images, self.batch_size)
        features, logits = prediction.features_and_logits(self.model, self.images, self.batch_size)
        predictions = prediction.probabilities(self.model, features, logits, batch_size=self.batch_size).argmax(-1)
        num_classes = self.model.num_classes
        logs["val_clusters_used"] = metrics.cluster_usage(predictions, num_classes)
        logs["val_smallest_share"] = metrics.smallest_share(predictions, num_classes)
        if self.labeled_images is not None and len(self.labeled_images):
            labeled_features = prediction.features_and_logits(self.model, self.labeled_images, self.batch_size)[0]
            logs["val_uncovered_share"] = metrics.uncovered_share(features, labeled_features, 3 * num_classes)
        scores = prediction.scores(self.labels, predictions, self.clustering)
        logs.update({"val_" + name: value for name, value in scores.items()})


class FeatureClusters(keras.callbacks.Callback):
    """Fits the model's Gaussian mixture over x̂ every `every` epochs (`--feature_clusters`; not in the paper).

    At the end of every `every`-th epoch: the features x̂ of `images` (a
    fixed sample of the training images), their top
    `layers.feature_mixture_dims` principal components, a Gaussian mixture
    with one diagonal component per category on them (scikit-learn, seeded
    by the seed and the epoch), its components matched one-to-one to the
    categories q(y|x̂) currently predicts for those images (Hungarian
    method), so that each category keeps its prior p(z|y). The mixture goes
    into the model (`layers.FeatureMixture.assign`), and so into its
    checkpoint. Logs `feature_cluster_agreement`: the share of the images
    whose matched component is their argmax q(y|x̂).

    Args:
        images: `[n, H, W, C]` uint8 or float training images, n >= the categories.
        every: period in epochs, >= 1.
        seed: seed of the mixture's initialisation.
    """

    def __init__(self, images, every, seed=0):
        super().__init__()
        if int(every) < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.images = images
        self.every = int(every)
        self.seed = int(seed)

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every:
            return
        from scipy.optimize import linear_sum_assignment
        from sklearn.mixture import GaussianMixture

        model = self.model
        features, logits = prediction.features_and_logits(model, self.images)
        features = features.astype(np.float64)
        center = features.mean(axis=0)
        # The top principal directions: the leading right-singular vectors of the centred features.
        dims = layers.feature_mixture_dims(features.shape[1])
        projection = np.linalg.svd(features - center, full_matrices=False)[2][:dims].T
        points = (features - center) @ projection
        mixture = GaussianMixture(
            model.num_classes,
            covariance_type="diag",
            n_init=2,
            # Distinct for every (seed, epoch) and below 2**32 whatever the seed.
            random_state=int(np.random.SeedSequence([self.seed, epoch]).generate_state(1)[0]),
        ).fit(points)
        components = mixture.predict(points)
        # Every component and category, even one that no image is predicted as.
        table = np.zeros((model.num_classes, model.num_classes), np.int64)
        np.add.at(table, (components, logits.argmax(axis=-1)), 1)
        rows, cols = linear_sum_assignment(table, maximize=True)  # component rows[i] -> category cols[i]
        order = np.empty(model.num_classes, np.int64)
        order[cols] = rows  # order[category] = its component
        model.feature_mixture.assign(
            center, projection, mixture.means_[order], mixture.covariances_[order], mixture.weights_[order]
        )
        if logs is not None:
            logs["feature_cluster_agreement"] = float(table[rows, cols].sum() / len(components))


class NonFiniteLoss(RuntimeError):
    """A loss term became NaN or infinite; the message is one line."""


class TerminateOnNonFinite(keras.callbacks.Callback):
    """Stops training at the first step whose loss terms are not finite.

    Raises `NonFiniteLoss` naming the epoch, the step and the terms. Raising
    (rather than setting `stop_training`) skips the epoch-end callbacks, so
    neither the checkpoint nor the best model is overwritten with the bad
    weights.

    Args:
        names: log keys to check.
    """

    def __init__(self, names=("loss",)):
        super().__init__()
        self.names = tuple(names)
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        bad = {name: float(logs[name]) for name in self.names if name in logs and not np.isfinite(float(logs[name]))}
        if bad:
            listed = ", ".join(f"{name}={value}" for name, value in bad.items())
            raise NonFiniteLoss(
                f"non-finite loss at epoch {self._epoch + 1}, step {batch + 1} ({listed}); training stopped, "
                f"the checkpoint of epoch {self._epoch} and the best model are unchanged"
            )
