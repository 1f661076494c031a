"""The semi-supervised Gaussian Mixture VAE guided by auxiliary tasks."""

import dataclasses

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from gmvae_keras import determinism, losses
from gmvae_keras.layers import GaussianSample, GumbelSoftmax, full_precision
from gmvae_keras.networks import (
    CategoricalInference,
    Decoder,
    Encoder,
    GaussianInference,
    GaussianPrior,
)
from gmvae_keras.prediction import rule_probabilities, unit_float
from gmvae_keras.settings import ModelSettings, drop_removed_options


def _multi_worker(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or resolver is None:
        return False
    return sum(len(tasks) for tasks in resolver.cluster_spec().as_dict().values()) > 1


LOSS_TERMS = (
    "reconstruction_loss",
    "gaussian_loss",
    "categorical_loss",
    "assignment_loss",
    "metric_loss",
)


# Principal components of x̂ that the `feature_clusters` mixture is fitted on (at most f_sz).
FEATURE_CLUSTER_DIMS = 10


def feature_cluster_dims(feature_size):
    """The principal components of x̂ the `feature_clusters` mixture lives in: at most f_sz."""
    return min(FEATURE_CLUSTER_DIMS, int(feature_size))


@keras.saving.register_keras_serializable(package="gmvae_keras")
class GMVAE(keras.Model):
    """GMVAE of "Semi-supervised Learning using Deep Generative Models and
    Auxiliary Tasks" (Arias Figueroa, 2019).

    Generative model: y ~ Uniform(c), z ~ p(z|y) = N(μ(y), σ²(y)),
    x ~ p(x|z). Inference: x̂ = g(x) (deterministic features), y ~ q(y|x̂)
    (Gumbel-Softmax relaxed), z ~ q(z|x̂,y). `train_step` minimises

        L = L_R + w_G·L_G + w_C·L_C + w_A·L_A + w_M·L_M

    (see `gmvae_keras.losses`) on a batch dict
    `{"images": [B,H,W,C], "labels": [n_l], "unlabeled_labels": [B-n_l]}`
    whose first `B - n_l` images are unlabeled and last `n_l` labeled.
    Unlabeled samples get labels from a k-NN vote among the labeled
    features of the batch (`losses.assign_labels`); L_A and L_M use the
    true labels of the labeled part and these assigned labels.
    `unlabeled_labels` is optional and only feeds the `assignment_accuracy`
    metric. With `n_l = 0` or `w_A = w_M = 0` the auxiliary losses are not
    computed (unsupervised clustering); `w_M = 0` alone is the paper's
    ablation. `test_step` takes `(images, labels)` (or the same dict) and
    reports `error`, the classification error (%) of the prediction.

    Beyond the paper, each off by default:
    - `assignment_balance="vote"`: each batch's assignment is rebalanced so
      every class gets about an equal share (`losses.balance_assignment`).
    - a batch dict with `views` (a shifted or mirrored copy of `images`):
      L_A's cross-entropy is `s·CE(q(y|g(view))) + (1 - s)·CE(q(y|g(image)))`
      with `s = consistency_share`, its labels assigned on the images.
    - `feature_clusters > 0` (clustering): the model holds a diagonal
      Gaussian mixture over the top principal components of x̂, fitted by
      `callbacks.FeatureClusters` (`set_feature_clusters`); once fitted, L_A
      is the cross-entropy of q(y|x̂) against each image's most likely
      component (`losses.mixture_assignment`).
    - `prediction="knn"`: the model predicts by L_A's plain k-NN vote among
      the labeled training images it stores (`set_labeled_set`); its
      predicted distribution is the vote's shares. Predictions of either rule
      are made by `gmvae_keras.prediction`.

    Mixed precision: built with `dtype="mixed_bfloat16"` or
    `"mixed_float16"` (or under that global policy), the networks compute in
    16 bits and keep float32 weights, while the sampling layers, the variance
    heads, the prior and the decoder's sigmoid compute in float32
    (`layers.full_precision`), and `call` and `classify` return float32: the
    log-densities, the distances, the k-NN vote and every loss are float32.
    The sublayers take the model's policy, so a saved mixed model reloads
    mixed whatever the global policy. `mixed_float16` needs a
    `keras.optimizers.LossScaleOptimizer` (`train.build_model` adds it).

    Args:
        image_shape: `(H, W, C)`, 28×28×C, 32×32×C or 64×64×C.
        num_classes: c.
        temperature: initial Gumbel-Softmax temperature.
        labeled_set_size: labeled images stored for `prediction="knn"`
            (0 otherwise).
        seed: seed of the sampling layers.
        **kwargs: the model's settings by name (`feature_size`,
            `latent_size`, `reconstruction`, the loss weights, `margin`, `k`,
            `prediction`, ...: every field of `settings.ModelSettings`, which
            documents, defaults and checks them), and the rest for
            `keras.Model`. Each setting becomes an attribute of the model.
    """

    def __init__(self, image_shape, num_classes, temperature=1.0, labeled_set_size=0, seed=None, **kwargs):
        # The settings are declared, defaulted and checked in `ModelSettings` alone; the rest goes to keras.Model.
        values = {name: kwargs.pop(name) for name in ModelSettings.names() if name in kwargs}
        super().__init__(**kwargs)
        settings = ModelSettings.from_values(values)
        settings.validate()
        prediction, k = settings.prediction, settings.k
        if prediction == "knn" and not k <= int(labeled_set_size):
            raise ValueError(
                f"prediction='knn' needs labeled_set_size >= k={k} stored labeled images, got {labeled_set_size}"
            )
        if prediction == "classifier" and int(labeled_set_size) != 0:
            raise ValueError(f"labeled_set_size is for prediction='knn'; got {labeled_set_size} with 'classifier'")
        if int(num_classes) < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.image_shape = tuple(int(d) for d in image_shape)
        self.num_classes = int(num_classes)
        # One attribute per setting, as the constructor's arguments.
        for name, value in dataclasses.asdict(settings).items():
            setattr(self, name, value)
        self.temperature = float(temperature)
        self.labeled_set_size = int(labeled_set_size)
        self.seed = seed

        # The model's own policy, not the global one: a reloaded model computes as it was built.
        policy, full = self.dtype_policy, full_precision(self.dtype_policy)
        self.encoder = Encoder(self.image_shape, self.feature_size, name="encoder", dtype=policy)
        self.categorical_inference = CategoricalInference(
            self.num_classes, self.feature_size, name="categorical_inference", dtype=policy
        )
        self.gumbel_softmax = GumbelSoftmax(self.temperature, seed=seed, name="gumbel_softmax", dtype=full)
        self.gaussian_inference = GaussianInference(self.latent_size, name="gaussian_inference", dtype=policy)
        self.gaussian_sample = GaussianSample(
            seed=None if seed is None else seed + 1, name="gaussian_sample", dtype=full
        )
        self.gaussian_prior = GaussianPrior(self.latent_size, name="gaussian_prior", dtype=full)
        self.decoder = Decoder(self.image_shape, self.latent_size, name="decoder", dtype=policy)

        self.trackers = {
            name: keras.metrics.Mean(name=name) for name in ("loss",) + LOSS_TERMS + ("assignment_accuracy",)
        }
        self.error_tracker = keras.metrics.Mean(name="error")
        self._loss_function = None
        if self.prediction == "knn":
            # Images rather than features: features change with every step.
            self.labeled_images = self.add_weight(
                name="labeled_images",
                shape=(self.labeled_set_size,) + self.image_shape,
                initializer="zeros",
                trainable=False,
            )
            self.labeled_image_labels = self.add_weight(
                name="labeled_image_labels",
                shape=(self.labeled_set_size,),
                initializer="zeros",
                dtype="int32",
                trainable=False,
            )
        if self.feature_clusters:
            # The mixture of `set_feature_clusters`, saved with the model; L_A reads it once `fitted` is 1.
            dims = feature_cluster_dims(self.feature_size)
            c, f = self.num_classes, self.feature_size
            self.feature_cluster_weights = {
                name: self.add_weight(name=f"feature_cluster_{name}", shape=shape, initializer=init, trainable=False)
                for name, shape, init in (
                    ("center", (f,), "zeros"),
                    ("projection", (f, dims), "zeros"),
                    ("means", (c, dims), "zeros"),
                    ("variances", (c, dims), "ones"),
                    ("log_weights", (c,), "zeros"),
                    ("fitted", (), "zeros"),
                )
            }
        self.build((None,) + self.image_shape)

    # ------------------------------------------------------------------ build

    def build(self, input_shape):
        if self.built:
            return
        batch = input_shape[0]
        self.encoder.build(input_shape)
        features_shape = (batch, self.feature_size)
        y_shape = (batch, self.num_classes)
        self.categorical_inference.build(features_shape)
        self.gumbel_softmax.build(y_shape)
        self.gaussian_inference.build((features_shape, y_shape))
        z_shape = (batch, self.latent_size)
        self.gaussian_sample.build((z_shape, z_shape))
        self.gaussian_prior.build(y_shape)
        self.decoder.build(z_shape)
        self.built = True

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras builds a model under a strategy by first reducing a data batch
        # across replicas, which fails for dict batches under
        # MultiWorkerMirroredStrategy. This model is built in __init__; only
        # the optimizer may be left to build.
        if self.built and (self.optimizer is None or self.optimizer.built):
            return
        if self.built and self.optimizer is not None:
            with self.distribute_strategy.scope():
                self.optimizer.build(self.trainable_variables)
            return
        super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    # ------------------------------------------------------------------- call

    def _full(self, x):
        """`x` in the variables' dtype: float32 under a mixed policy, where the networks compute in 16 bits."""
        return ops.cast(x, self.dtype_policy.variable_dtype)

    def call(self, images, training=None):
        """Full forward pass; returns a dict of what the losses read, in full precision (`_full`)."""
        features = self.encoder(images, training=training)
        logits = self.categorical_inference(features)
        y = self.gumbel_softmax(logits, training=training)
        z_mean, z_variance = self.gaussian_inference([features, y])
        z = self.gaussian_sample([z_mean, z_variance], training=training)
        prior_mean, prior_variance = self.gaussian_prior(y)
        reconstruction = self.decoder(z, training=training)
        # Every loss, density and distance is computed from these: in float32 under a mixed policy.
        return {
            "features": self._full(features),
            "logits": self._full(logits),
            "z_mean": self._full(z_mean),
            "z_variance": self._full(z_variance),
            "z": self._full(z),
            "prior_mean": self._full(prior_mean),
            "prior_variance": self._full(prior_variance),
            "reconstruction": self._full(reconstruction),
        }

    def classify(self, images, training=False):
        """Features x̂ and logits of q(y|x̂), without the generative half, in full precision (`_full`)."""
        features = self.encoder(images, training=training)
        return self._full(features), self._full(self.categorical_inference(features))

    def set_feature_clusters(self, center, projection, means, variances, weights):
        """Stores the Gaussian mixture over x̂ that L_A trains q(y|x̂) towards (`feature_clusters > 0`).

        A point is `(x̂ - center) @ projection`; component `y` (category `y`)
        has `means[y]`, diagonal `variances[y]` and weight `weights[y]`.
        """
        if not self.feature_clusters:
            raise ValueError("set_feature_clusters is for feature_clusters > 0")
        mixture = self.feature_cluster_weights
        values = {
            "center": center,
            "projection": projection,
            "means": means,
            "variances": variances,
            "log_weights": np.log(np.maximum(np.asarray(weights, "float64"), 1e-12)),
            "fitted": 1.0,
        }
        for name, value in values.items():
            value = np.asarray(value, "float32")
            if value.shape != tuple(mixture[name].shape):
                raise ValueError(f"{name} must have shape {tuple(mixture[name].shape)}, got {value.shape}")
            mixture[name].assign(value)

    def set_labeled_set(self, images, labels):
        """Stores the labeled training images that `prediction="knn"` votes among.

        Args:
            images: `[labeled_set_size, H, W, C]`, uint8 0–255 or float in [0, 1].
            labels: `[labeled_set_size]` int labels in `[0, num_classes)`.
        """
        if self.prediction != "knn":
            raise ValueError("set_labeled_set is for prediction='knn'")
        images, labels = np.asarray(images), np.asarray(labels)
        if images.shape != (self.labeled_set_size,) + self.image_shape or labels.shape != (self.labeled_set_size,):
            raise ValueError(
                f"expected {self.labeled_set_size} images of shape {self.image_shape} and as many labels, "
                f"got images {images.shape} and labels {labels.shape}"
            )
        if not (0 <= labels.min() and labels.max() < self.num_classes):
            raise ValueError(f"labels must be in [0, {self.num_classes})")
        self.labeled_images.assign(unit_float(images))
        self.labeled_image_labels.assign(labels.astype("int32"))

    # ------------------------------------------------------------ training

    @property
    def metrics(self):
        return list(self.trackers.values()) + [self.error_tracker]

    def compute_losses(self, images, labels=None, training=True, views=None):
        """Every loss term of the batch, the weighted total and the assignments.

        `views`: the batch's second views for L_A (see the class
        docstring), or None.

        Returns:
            `(terms, total, assigned)`: a dict of the unweighted terms the
            batch computes (L_A and L_M only when they are on), the weighted
            sum and the labels assigned to the unlabeled part by the k-NN vote
            (None without labeled images).
        """
        outputs = self(images, training=training)
        terms = {
            "reconstruction_loss": losses.reconstruction_loss(images, outputs["reconstruction"], self.reconstruction),
            "gaussian_loss": losses.gaussian_loss(
                outputs["z"],
                outputs["z_mean"],
                outputs["z_variance"],
                outputs["prior_mean"],
                outputs["prior_variance"],
            ),
            "categorical_loss": losses.categorical_loss(outputs["logits"], self.categorical_kl),
        }
        assigned = None
        num_labeled = 0 if labels is None else labels.shape[0]
        if num_labeled != 0 and (self.assignment_weight > 0 or self.metric_weight > 0):
            features = outputs["features"]
            num_unlabeled = ops.shape(images)[0] - ops.shape(labels)[0]
            # One distance matrix serves the k-NN vote (its unlabeled × labeled
            # block, without gradient) and the lifted structured loss.
            distances = losses.pairwise_distance(features)
            assigned = losses.assign_labels(
                distances[:num_unlabeled, num_unlabeled:],
                labels,
                self.num_classes,
                self.k,
                self.assignment_balance,
            )
            all_labels = ops.concatenate([assigned, ops.cast(labels, "int32")], axis=0)
        if num_labeled == 0 and self.feature_clusters and self.assignment_weight > 0:
            mixture = self.feature_cluster_weights
            points = ops.matmul(outputs["features"] - mixture["center"], mixture["projection"])
            # Components are categories, not classes: no assignment accuracy to log.
            components = losses.mixture_assignment(
                points, mixture["means"], mixture["variances"], mixture["log_weights"]
            )
            terms["assignment_loss"] = mixture["fitted"] * losses.assignment_loss(components, outputs["logits"])
        elif assigned is not None and self.assignment_weight > 0:
            if views is None:
                terms["assignment_loss"] = losses.assignment_loss(all_labels, outputs["logits"])
            else:
                # s·CE(view) + (1 - s)·CE(image); with s = 1 the image's term is not even computed.
                share = self.consistency_share
                loss = share * losses.assignment_loss(all_labels, self.classify(views, training=training)[1])
                if share < 1.0:
                    loss += (1.0 - share) * losses.assignment_loss(all_labels, outputs["logits"])
                terms["assignment_loss"] = loss
        if assigned is not None and self.metric_weight > 0:
            terms["metric_loss"] = losses.lifted_structured_loss(all_labels, distances, self.margin)
        total = losses.total_loss(
            terms, self.gaussian_weight, self.categorical_weight, self.assignment_weight, self.metric_weight
        )
        return terms, total, assigned

    @staticmethod
    def _unpack(data):
        """`(images, labels, unlabeled_labels, views)` of a batch dict, tuple or tensor."""
        if isinstance(data, dict):
            return data["images"], data.get("labels"), data.get("unlabeled_labels"), data.get("views")
        if isinstance(data, (tuple, list)):
            images = data[0]
            labels = data[1] if len(data) > 1 else None
            return images, labels, None, None
        return data, None, None, None

    def train_step(self, data):
        images, labels, unlabeled_labels, views = self._unpack(data)
        replica = tf.distribute.get_replica_context()
        replicas = replica.num_replicas_in_sync if replica is not None else 1
        with tf.GradientTape() as tape:
            terms, total, assigned = self.compute_losses(images, labels, training=True, views=views)
            # Optimizers sum the replicas' gradients: scale each replica's mean
            # loss so that the sum is the mean over the global batch. A
            # LossScaleOptimizer (mixed_float16) also multiplies it by its loss
            # scale, so that small gradients survive float16, and divides the
            # gradients by it again in `apply`.
            scaled = self.optimizer.scale_loss(total / replicas)
        gradients = determinism.gradients(tape, scaled, self.trainable_variables)
        self.optimizer.apply(gradients, self.trainable_variables)

        values = {"loss": total, **terms}
        if assigned is not None and unlabeled_labels is not None:
            correct = ops.cast(ops.equal(assigned, ops.cast(unlabeled_labels, "int32")), "float32")
            values["assignment_accuracy"] = ops.mean(correct)
        if replicas > 1:
            # Every replica holds the same slice layout, so the global mean of
            # each term is the mean of the replicas' means.
            values = replica.all_reduce(tf.distribute.ReduceOp.MEAN, values)
        for name, value in values.items():
            self.trackers[name].update_state(value)
        # Only what this run computes: a clustering run logs no L_A or L_M.
        logs = {name: self.trackers[name].result() for name in values}
        if _multi_worker(tf.distribute.get_strategy()):
            # Keras averages multi-worker step outputs along axis 0, which
            # scalars lack: give each value one (the replicas agree anyway).
            logs = {name: ops.reshape(value, (1,)) for name, value in logs.items()}
        return logs

    def test_step(self, data):
        # With prediction="knn" every batch encodes the labeled set anew: Keras traces this step once
        # and reuses the trace in later `evaluate` calls, so features encoded once per evaluate would
        # need a variable of their own, which every saved model would then carry. Runs score with
        # `prediction.probabilities`, which encodes them once per call.
        images, labels, _, _ = self._unpack(data)
        features, logits = self.classify(images, training=False)
        labeled_features = labeled_labels = None
        if self.prediction == "knn":
            labeled_features = self._full(self.encoder(self.labeled_images, training=False))
            labeled_labels = self.labeled_image_labels
        probabilities = rule_probabilities(self.prediction, features, logits, labeled_features, labeled_labels, self.k)
        predicted = ops.cast(ops.argmax(probabilities, axis=-1), "int32")
        wrong = ops.not_equal(predicted, ops.cast(labels, "int32"))
        self.error_tracker.update_state(100.0 * ops.cast(wrong, "float32"))
        return {"error": self.error_tracker.result()}

    # ------------------------------------------------------ beyond training

    def unsupervised_loss(self, images, batch_size=1000):
        """The mean weighted L_R + w_G·L_G + w_C·L_C of images, in inference mode, reading no labels.

        Deterministic: y = q(y|x̂) and z = the mean of q(z|x̂,y) instead of
        samples. A clustering run selects its model by it on validation.
        """
        if self._loss_function is None:

            def generative_loss(images):
                # L_A of a clustering with `feature_clusters` trains q(y|x̂); the model is chosen by the rest.
                terms = self.compute_losses(images, training=False)[0]
                terms.pop("assignment_loss", None)
                return losses.total_loss(terms, self.gaussian_weight, self.categorical_weight, 0.0, 0.0)

            self._loss_function = tf.function(generative_loss, reduce_retracing=True)
        images = np.asarray(images)
        total = 0.0
        for start in range(0, len(images), batch_size):
            batch = unit_float(images[start : start + batch_size])
            total += float(self._loss_function(tf.constant(batch))) * len(batch)
        return total / max(len(images), 1)

    def generate(self, category, n, seed=None):
        """Sample `n` images of `category`: z ~ p(z|y), then the decoder's means."""
        if not 0 <= int(category) < self.num_classes:
            raise ValueError(f"category must be in [0, {self.num_classes}), got {category}")
        y = ops.one_hot(ops.full((int(n),), int(category), dtype="int32"), self.num_classes)
        mean, variance = self.gaussian_prior(y)
        noise = keras.random.normal(ops.shape(mean), seed=keras.random.SeedGenerator(seed))
        z = mean + ops.sqrt(variance) * noise
        return keras.ops.convert_to_numpy(self.decoder(z, training=False))

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "image_shape": self.image_shape,
                "num_classes": self.num_classes,
                **dataclasses.asdict(ModelSettings.model_settings(self)),
                "temperature": self.temperature,
                "labeled_set_size": self.labeled_set_size,
                "seed": self.seed,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        # Models saved by an older version may hold options removed since (at "off": dropped).
        return cls(**drop_removed_options(config, "the saved GMVAE"))
