"""Layers of the GMVAE beyond its networks: the Gumbel-Softmax and Gaussian samplers, and the feature mixture.

The samplers compute in full precision under a mixed dtype policy (`full_precision`):
the Gumbel noise -log(-log u) and the softmax of a relaxed sample, or the
noise scaled by sqrt(variance), lose too much in 16 bits.
"""

import keras
import numpy as np
from keras import ops

from gmvae_keras import losses

# Principal components of x̂ that `FeatureMixture` lives in (at most f_sz).
FEATURE_MIXTURE_DIMS = 10


def feature_mixture_dims(feature_size):
    """The principal components of x̂ a `FeatureMixture` lives in: at most f_sz."""
    return min(FEATURE_MIXTURE_DIMS, int(feature_size))


def full_precision(dtype_policy=None):
    """The dtype policy of a layer that must not compute in 16 bits: the variables' dtype of `dtype_policy`.

    float32 under `mixed_bfloat16` and `mixed_float16`; a float32 or float64
    policy is its own. `dtype_policy` defaults to Keras' global policy.
    """
    policy = keras.config.dtype_policy() if dtype_policy is None else keras.dtype_policies.get(dtype_policy)
    return keras.DTypePolicy(policy.variable_dtype)


@keras.saving.register_keras_serializable(package="gmvae_keras")
class GumbelSoftmax(keras.layers.Layer):
    """Relaxed one-hot sample of a categorical distribution (Jang et al., 2017).

    Given logits `l`, a training-time call returns
    `softmax((l + g) / temperature)` with `g ~ Gumbel(0, 1)`. With
    `training=False` the layer is deterministic and returns `softmax(l)`.

    The temperature lives in a non-trainable variable, so a callback can
    anneal it between epochs by `layer.temperature.assign(t)` without
    retracing the compiled train step, and it is saved with the weights.

    Computes in `full_precision()` unless given another `dtype`: logits of
    a half-precision network are cast up on the way in.

    Args:
        temperature: initial temperature, > 0.
        seed: seed of the layer's `keras.random.SeedGenerator`.
        **kwargs: passed to `keras.layers.Layer`.
    """

    def __init__(self, temperature=1.0, seed=None, **kwargs):
        kwargs.setdefault("dtype", full_precision())
        super().__init__(**kwargs)
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.initial_temperature = float(temperature)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.temperature = self.add_weight(
            name="temperature",
            shape=(),
            initializer=keras.initializers.Constant(self.initial_temperature),
            trainable=False,
        )

    def call(self, logits, training=None):
        if not training:
            return ops.softmax(logits, axis=-1)
        uniform = keras.random.uniform(
            ops.shape(logits),
            minval=1e-7,
            maxval=1.0 - 1e-7,
            dtype=logits.dtype,
            seed=self.seed_generator,
        )
        gumbel = -ops.log(-ops.log(uniform))
        temperature = ops.cast(self.temperature, logits.dtype)
        return ops.softmax((logits + gumbel) / temperature, axis=-1)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"temperature": self.initial_temperature, "seed": self.seed})
        return config


@keras.saving.register_keras_serializable(package="gmvae_keras")
class GaussianSample(keras.layers.Layer):
    """Reparameterized sample `z = mean + sqrt(variance) * eps`, `eps ~ N(0, I)`.

    Called on `[mean, variance]`. With `training=False` it returns the mean, so
    inference is deterministic.

    Computes in `full_precision()` unless given another `dtype`, so z, the
    point where log q(z|x̂,y) and log p(z|y) are taken, keeps full precision.

    Args:
        seed: seed of the layer's `keras.random.SeedGenerator`.
        **kwargs: passed to `keras.layers.Layer`.
    """

    def __init__(self, seed=None, **kwargs):
        kwargs.setdefault("dtype", full_precision())
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        mean, variance = inputs
        if not training:
            return mean
        noise = keras.random.normal(ops.shape(mean), dtype=mean.dtype, seed=self.seed_generator)
        return mean + ops.sqrt(variance) * noise

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        config = super().get_config()
        config.update({"seed": self.seed})
        return config


@keras.saving.register_keras_serializable(package="gmvae_keras")
class FeatureMixture(keras.layers.Layer):
    """A diagonal Gaussian mixture over the top principal components of x̂ (`--feature_clusters`; not in the paper).

    Called on features `[n, f]`, it returns each one's most likely
    component, `[n]` int32 (`losses.mixture_assignment`), without gradient.
    Its parameters are set by `assign` (`callbacks.FeatureClusters` fits
    them) and saved with the model; `fitted` is 0 until the first `assign`.

    Args:
        num_components: c, one component per category.
        feature_size: f_sz; the mixture lives in `feature_mixture_dims(f_sz)` dimensions.
        **kwargs: passed to `keras.layers.Layer`.
    """

    def __init__(self, num_components, feature_size, **kwargs):
        super().__init__(**kwargs)
        self.num_components = int(num_components)
        self.feature_size = int(feature_size)

    def build(self, input_shape=None):
        c, f, d = self.num_components, self.feature_size, feature_mixture_dims(self.feature_size)
        shapes = {"center": (f,), "projection": (f, d), "means": (c, d), "variances": (c, d), "log_weights": (c,)}
        for name, shape in {**shapes, "fitted": ()}.items():
            init = "ones" if name == "variances" else "zeros"
            setattr(self, name, self.add_weight(name=name, shape=shape, initializer=init, trainable=False))

    def assign(self, center, projection, means, variances, weights):
        """Stores a mixture: a point is `(x̂ - center) @ projection`; component y has `means[y]`,
        `variances[y]` and `weights[y]`.

        Raises:
            ValueError: a value of another shape than its variable's.
        """
        values = {
            "center": center,
            "projection": projection,
            "means": means,
            "variances": variances,
            "log_weights": np.log(np.maximum(np.asarray(weights, "float64"), 1e-12)),
            "fitted": 1.0,
        }
        for name, value in values.items():
            value, variable = np.asarray(value, "float32"), getattr(self, name)
            if value.shape != tuple(variable.shape):
                raise ValueError(f"{name} must have shape {tuple(variable.shape)}, got {value.shape}")
            variable.assign(value)

    def call(self, features):
        points = ops.matmul(features - self.center, self.projection)
        return losses.mixture_assignment(points, self.means, self.variances, self.log_weights)

    def compute_output_shape(self, input_shape):
        return input_shape[:1]

    def get_config(self):
        config = super().get_config()
        config.update({"num_components": self.num_components, "feature_size": self.feature_size})
        return config
