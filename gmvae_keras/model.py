"""The semi-supervised Gaussian Mixture VAE guided by auxiliary tasks."""

import dataclasses

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from gmvae_keras import determinism, losses
from gmvae_keras.layers import FeatureMixture, GaussianSample, GumbelSoftmax, full_precision
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


def _check_arguments(num_classes, labeled_set_size, settings):
    prediction, k = settings.prediction, settings.k
    if prediction == "knn" and not k <= int(labeled_set_size):
        raise ValueError(
            f"prediction='knn' needs labeled_set_size >= k={k} stored labeled images, got {labeled_set_size}"
        )
    if prediction == "classifier" and int(labeled_set_size) != 0:
        raise ValueError(f"labeled_set_size is for prediction='knn'; got {labeled_set_size} with 'classifier'")
    if int(num_classes) < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")


# What the networks' weight shapes depend on: two GMVAEs equal in these can exchange `GMVAE.NETWORKS`.
NETWORK_SIZES = ("image_shape", "num_classes", "feature_size", "latent_size")


def network_mismatches(source, **wanted):
    """`"<name> <source's> there, <wanted> here"` for each of `NETWORK_SIZES` in which `source` differs."""
    return [
        f"{name} {getattr(source, name)} there, {wanted[name]} here"
        for name in NETWORK_SIZES
        if getattr(source, name) != wanted[name]
    ]


def unpack_batch(data):
    """`(images, labels, unlabeled_labels, views)` of a batch dict, tuple or tensor."""
    if isinstance(data, dict):
        return data["images"], data.get("labels"), data.get("unlabeled_labels"), data.get("views")
    if isinstance(data, (tuple, list)):
        return data[0], (data[1] if len(data) > 1 else None), None, None
    return data, None, None, None


@keras.saving.register_keras_serializable(package="gmvae_keras")
class GMVAE(keras.Model):
    """GMVAE of "Semi-supervised Learning using Deep Generative Models and
    Auxiliary Tasks" (Arias Figueroa, 2019).

    Generative model: y ~ Uniform(c), z ~ p(z|y) = N(μ(y), σ²(y)),
    x ~ p(x|z). Inference: x̂ = g(x) (deterministic features), y ~ q(y|x̂)
    (Gumbel-Softmax relaxed), z ~ q(z|x̂,y). `train_step` minimises

        L = L_R + w_G·L_G + w_C·L_C + w_A·L_A + w_M·L_M

    (`compute_losses`; each term in `gmvae_keras.losses`, whose table names
    the flags beyond the paper) on a batch dict `{"images": [B,H,W,C],
    "labels": [n_l], "unlabeled_labels": [B-n_l]}` whose first `B - n_l`
    images are unlabeled and last `n_l` labeled (`unlabeled_labels`,
    optional, only feeds `assignment_accuracy`). With `n_l = 0` or
    `w_A = w_M = 0` the auxiliary losses are not computed (clustering).
    `test_step` takes `(images, labels)` and reports `error` (%) of the
    model's rule; predictions are made by `gmvae_keras.prediction`
    (`prediction="knn"` votes among the labeled images `set_labeled_set`
    stores).

    Mixed precision (`dtype="mixed_bfloat16"` or `"mixed_float16"`): the
    networks compute in 16 bits with float32 weights; the samplers, variance
    heads, prior and the decoder's sigmoid in float32
    (`layers.full_precision`); `call` and `classify` return float32, so
    every loss, distance and vote is float32. `mixed_float16` needs a
    `keras.optimizers.LossScaleOptimizer` (`train.build_model` adds it).

    Args:
        image_shape: `(H, W, C)`, 28×28×C, 32×32×C or 64×64×C.
        num_classes: c.
        temperature: initial Gumbel-Softmax temperature.
        labeled_set_size: labeled images stored for `prediction="knn"`
            (0 otherwise).
        seed: seed of the sampling layers.
        **kwargs: the model's settings by name (every field of
            `settings.ModelSettings`, which documents, defaults and checks
            them; each becomes an attribute), and the rest for `keras.Model`.
    """

    def __init__(self, image_shape, num_classes, temperature=1.0, labeled_set_size=0, seed=None, **kwargs):
        # The settings are declared, defaulted and checked in `ModelSettings` alone; the rest goes to keras.Model.
        values = {name: kwargs.pop(name) for name in ModelSettings.names() if name in kwargs}
        super().__init__(**kwargs)
        settings = ModelSettings.from_values(values)
        _check_arguments(num_classes, labeled_set_size, settings)
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
        if self.prediction == "knn":
            # Images rather than features: features change with every step.
            size, constant = self.labeled_set_size, {"initializer": "zeros", "trainable": False}
            self.labeled_images = self.add_weight(name="labeled_images", shape=(size,) + self.image_shape, **constant)
            self.labeled_image_labels = self.add_weight(
                name="labeled_image_labels", shape=(size,), dtype="int32", **constant
            )
        # `--feature_clusters`: the mixture over x̂ that L_A trains q(y|x̂) towards in a clustering.
        self.feature_mixture = None
        if self.feature_clusters:
            self.feature_mixture = FeatureMixture(
                self.num_classes, self.feature_size, name="feature_mixture", dtype=full
            )
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
        if self.feature_mixture is not None:
            self.feature_mixture.build(features_shape)
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
        outputs = dict(features=features, logits=logits, z_mean=z_mean, z_variance=z_variance, z=z)
        outputs.update(prior_mean=prior_mean, prior_variance=prior_variance, reconstruction=reconstruction)
        # Every loss, density and distance is computed from these: in float32 under a mixed policy.
        return {name: self._full(value) for name, value in outputs.items()}

    def classify(self, images, training=False):
        """Features x̂ and logits of q(y|x̂), without the generative half, in full precision (`_full`)."""
        features = self.encoder(images, training=training)
        return self._full(features), self._full(self.categorical_inference(features))

    def set_labeled_set(self, images, labels):
        """Stores the labeled training images `[labeled_set_size, H, W, C]` (uint8 or [0, 1]) that "knn" votes among."""
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

        Returns:
            `(terms, total, assigned)`: a dict of the unweighted terms the
            batch computes (L_A and L_M only when they are on), the weighted
            sum and the labels the k-NN vote assigned to the unlabeled part
            (None without labeled images). `views`: the batch's second views
            for L_A (`--consistency_*`), or None.
        """
        outputs = self(images, training=training)
        gaussian = ("z", "z_mean", "z_variance", "prior_mean", "prior_variance")
        terms = {
            "reconstruction_loss": losses.reconstruction_loss(images, outputs["reconstruction"], self.reconstruction),
            "gaussian_loss": losses.gaussian_loss(*(outputs[name] for name in gaussian)),
            "categorical_loss": losses.categorical_loss(outputs["logits"], self.categorical_kl),
        }
        assigned = None
        num_labeled = 0 if labels is None else labels.shape[0]
        if num_labeled != 0 and (self.assignment_weight > 0 or self.metric_weight > 0):
            assigned, auxiliary = self._auxiliary_losses(outputs, labels, views, training)
            terms.update(auxiliary)
        elif num_labeled == 0 and self.feature_mixture is not None and self.assignment_weight > 0:
            # Components are categories, not classes: no assignment accuracy to log.
            components = self.feature_mixture(outputs["features"])
            terms["assignment_loss"] = self.feature_mixture.fitted * losses.assignment_loss(
                components, outputs["logits"]
            )
        weights = (self.gaussian_weight, self.categorical_weight, self.assignment_weight, self.metric_weight)
        return terms, losses.total_loss(terms, *weights), assigned

    def _auxiliary_losses(self, outputs, labels, views, training):
        """`(assigned, {L_A, L_M})`: the k-NN vote's labels for the unlabeled part, and the terms that are on."""
        num_unlabeled = ops.shape(outputs["features"])[0] - ops.shape(labels)[0]
        # One distance matrix serves the vote (its unlabeled × labeled block, without gradient) and L_M.
        distances = losses.pairwise_distance(outputs["features"])
        assigned = losses.assign_labels(
            distances[:num_unlabeled, num_unlabeled:], labels, self.num_classes, self.k, self.assignment_balance
        )
        all_labels = ops.concatenate([assigned, ops.cast(labels, "int32")], axis=0)
        terms = {}
        if self.assignment_weight > 0 and views is None:
            terms["assignment_loss"] = losses.assignment_loss(all_labels, outputs["logits"])
        elif self.assignment_weight > 0:
            # s·CE(view) + (1 - s)·CE(image); with s = 1 the image's term is not even computed.
            share = self.consistency_share
            loss = share * losses.assignment_loss(all_labels, self.classify(views, training=training)[1])
            if share < 1.0:
                loss += (1.0 - share) * losses.assignment_loss(all_labels, outputs["logits"])
            terms["assignment_loss"] = loss
        if self.metric_weight > 0:
            terms["metric_loss"] = losses.lifted_structured_loss(all_labels, distances, self.margin)
        return assigned, terms

    def train_step(self, data):
        images, labels, unlabeled_labels, views = unpack_batch(data)
        replica = tf.distribute.get_replica_context()
        replicas = replica.num_replicas_in_sync if replica is not None else 1
        with tf.GradientTape() as tape:
            terms, total, assigned = self.compute_losses(images, labels, training=True, views=views)
            # Optimizers sum the replicas' gradients: each replica's mean over `replicas` sums to the global
            # mean. A LossScaleOptimizer (mixed_float16) scales it up here and the gradients down in `apply`.
            scaled = self.optimizer.scale_loss(total / replicas)
        gradients = determinism.gradients(tape, scaled, self.trainable_variables)
        self.optimizer.apply(gradients, self.trainable_variables)

        values = {"loss": total, **terms}
        if assigned is not None and unlabeled_labels is not None:
            correct = ops.cast(ops.equal(assigned, ops.cast(unlabeled_labels, "int32")), "float32")
            values["assignment_accuracy"] = ops.mean(correct)
        if replicas > 1:
            # Every replica holds the same slice layout: the global mean of a term is the replicas' mean.
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
        images, labels, _, _ = unpack_batch(data)
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

    # The layers `copy_networks` copies: every trained weight but a `--feature_clusters` mixture's.
    NETWORKS = ("encoder", "categorical_inference", "gaussian_inference", "gaussian_prior", "decoder")

    def copy_networks(self, source):
        """Sets the weights of the networks and of p(z|y) (`NETWORKS`, moving averages included) to `source`'s.

        `source` is a GMVAE of the same image shape, classes, feature and latent sizes (ValueError otherwise).
        The optimizer, the temperature and a stored labeled set stay this model's.
        """
        mismatches = network_mismatches(source, **{name: getattr(self, name) for name in NETWORK_SIZES})
        if mismatches:
            raise ValueError("; ".join(mismatches))
        for name in self.NETWORKS:
            getattr(self, name).set_weights(getattr(source, name).get_weights())

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
        config.update(image_shape=self.image_shape, num_classes=self.num_classes, temperature=self.temperature)
        config.update(labeled_set_size=self.labeled_set_size, seed=self.seed)
        return {**config, **dataclasses.asdict(ModelSettings.model_settings(self))}

    @classmethod
    def from_config(cls, config):
        # Models saved by an older version may hold options removed since (at "off": dropped).
        return cls(**drop_removed_options(config, "the saved GMVAE"))
