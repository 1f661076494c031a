"""The networks of the paper's appendix (Tables 4 and 5) as Keras layers.

Each network is a layer that owns its sublayers and builds them explicitly in
`build`, so a model reloaded from a `.keras` file has every variable before
its weights are restored.

Each network gives its sublayers its own dtype policy, so that a network
(and a model) built or reloaded under a mixed policy computes in 16 bits
whatever Keras' global policy is then. What must not lose precision has a
full-precision policy of its own (`layers.full_precision`, float32 under the
mixed policies): the variance heads of q(z|x̂,y), the whole prior p(z|y) and
the decoder's output sigmoid. BatchNormalization computes its statistics in
float32 by itself under a mixed policy (`normalization.BatchNormalization`:
with bfloat16 activations in and out on the CPU).
"""

import keras
from keras import ops

from gmvae_keras.conv import Conv2D, Conv2DTranspose
from gmvae_keras.layers import full_precision
from gmvae_keras.normalization import BatchNormalization

# Slope of every LeakyReLU. The paper does not give it.
NEGATIVE_SLOPE = 0.2

# (filters, kernel, stride) rows per input shape; the last encoder row's
# filters are replaced by `feature_size`, the last decoder row's by the
# number of image channels. All convolutions use "valid" padding. 64×64 is
# beyond the paper: the 32×32 networks behind one downsampling block (a 2×2
# convolution of stride 2, 64→32) and before one upsampling block (32→64).
_ENCODER_SPECS = {
    (28, 28): [(16, 5, 1), (32, 5, 1), (64, 4, 2), (128, 5, 2), (None, 3, 1)],
    (32, 32): [(16, 5, 1), (32, 5, 1), (64, 5, 1), (128, 3, 1), (256, 4, 2), (None, 8, 1)],
    (64, 64): [(16, 2, 2), (16, 5, 1), (32, 5, 1), (64, 5, 1), (128, 3, 1), (256, 4, 2), (None, 8, 1)],
}
_DECODER_SPECS = {
    (28, 28): [(128, 3, 1), (64, 5, 2), (32, 4, 2), (16, 5, 1), (None, 5, 1)],
    (32, 32): [(256, 8, 1), (128, 4, 2), (64, 3, 1), (32, 5, 1), (16, 5, 1), (None, 5, 1)],
    (64, 64): [(256, 8, 1), (128, 4, 2), (64, 3, 1), (32, 5, 1), (16, 5, 1), (16, 5, 1), (None, 2, 2)],
}

# The square image sizes the networks take, smallest first.
IMAGE_SIZES = tuple(sorted(h for h, w in _ENCODER_SPECS))


def _check_image_shape(image_shape):
    image_shape = tuple(int(d) for d in image_shape)
    if len(image_shape) != 3 or image_shape[:2] not in _ENCODER_SPECS:
        supported = ", ".join(f"{h}x{w}xC" for h, w in _ENCODER_SPECS)
        raise ValueError(f"image_shape {image_shape} is not supported; expected one of {supported}")
    return image_shape


def _positive_variance(dense_output, min_variance):
    """A variance head's output made positive: softplus, plus a floor so the log-density stays finite.

    The heads compute in full precision: in bfloat16 a floor of 1e-6 vanishes
    next to any softplus above about 5e-4.
    """
    return ops.softplus(dense_output) + min_variance


def _build_chain(layers, input_shape):
    shape = input_shape
    for layer in layers:
        layer.build(shape)
        shape = layer.compute_output_shape(shape)
    return shape


@keras.saving.register_keras_serializable(package="gmvae_keras")
class Encoder(keras.layers.Layer):
    """Deterministic feature extractor x̂ = g(x) (paper, appendix Table 4).

    A stack of `Conv2D` ("valid" padding, no bias) + `BatchNormalization` +
    `LeakyReLU` blocks that maps a 28×28×C, 32×32×C or 64×64×C image to a 1×1 map of
    `feature_size` channels, returned flattened as a `[batch, feature_size]`
    vector.

    How the layers differ from Table 4, and where the replacements come from:

    * Kernels and strides: Table 4's kernel/stride/padding rows do not all
      give a 1×1 map as printed. Those used here are the ones of the authors'
      released code (github.com/jariasf/semisupervised-vae-metric-embedding,
      `networks/CatVAENetwork.py`, `encoder_conv` and `encoder_conv32x32`),
      all with "valid" padding:
      28×28: kernels 5-5-4-5-3, strides 1-1-2-2-1 (28→24→20→9→3→1);
      32×32: kernels 5-5-5-3-4-8, strides 1-1-1-1-2-1 (32→28→24→20→18→8→1).
      64×64 (beyond the paper): a 2×2 convolution of stride 2 with 16
      filters (64→32), then the 32×32 network.
    * Filters, 28×28: Table 4's 16-32-64-128, then `feature_size` (the
      released code has the same counts).
    * Filters, 32×32: Table 4 has no 256-filter layer. The six layers here,
      16-32-64-128-256 filters then `feature_size`, are the released code's
      (`encoder_conv32x32`).
    * Activation: LeakyReLU with slope `NEGATIVE_SLOPE` (0.2; the paper gives
      no slope); the released code uses ReLU.
    * No convolution bias, where the released code has one: the
      BatchNormalization that follows removes it and its beta takes its
      place, so the functions the network can represent are the same.

    Args:
        image_shape: `(height, width, channels)` of the input images.
        feature_size: f_sz, the length of x̂.
        **kwargs: passed to `keras.layers.Layer`.
    """

    def __init__(self, image_shape, feature_size, **kwargs):
        super().__init__(**kwargs)
        self.image_shape = _check_image_shape(image_shape)
        self.feature_size = int(feature_size)
        self.blocks = []
        for filters, kernel, stride in _ENCODER_SPECS[self.image_shape[:2]]:
            self.blocks += [
                # No bias: the BatchNormalization that follows cancels it and its beta
                # takes its place.
                Conv2D(
                    filters or self.feature_size,
                    kernel,
                    strides=stride,
                    padding="valid",
                    use_bias=False,
                    dtype=self.dtype_policy,
                ),
                BatchNormalization(dtype=self.dtype_policy),
                keras.layers.LeakyReLU(negative_slope=NEGATIVE_SLOPE, dtype=self.dtype_policy),
            ]
        self.flatten = keras.layers.Flatten(dtype=self.dtype_policy)

    def build(self, input_shape):
        _build_chain(self.blocks + [self.flatten], input_shape)

    def call(self, images, training=None):
        x = images
        for layer in self.blocks:
            x = layer(x, training=training)
        return self.flatten(x)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.feature_size)

    def get_config(self):
        config = super().get_config()
        config.update({"image_shape": self.image_shape, "feature_size": self.feature_size})
        return config


@keras.saving.register_keras_serializable(package="gmvae_keras")
class Decoder(keras.layers.Layer):
    """Generative network p(x|z) (paper, appendix Table 5).

    Reshapes z to a 1×1 map and applies `Conv2DTranspose` ("valid" padding,
    no bias) + `BatchNormalization` + `ReLU` blocks, then a last `Conv2DTranspose` to
    the image's channels with a sigmoid, giving pixel means in [0, 1]. The
    sigmoid is taken in full precision (`layers.full_precision`), so the
    reconstruction loss compares float32 means with the images under a mixed
    policy.

    How the layers differ from Table 5, and where the replacements come from:

    * Kernels and strides: as for `Encoder`, those of the authors' released
      code (github.com/jariasf/semisupervised-vae-metric-embedding,
      `networks/CatVAENetwork.py`, `decoder_conv` and `decoder_conv32x32`),
      the mirror of the encoder's, all with "valid" padding:
      28×28: kernels 3-5-4-5-5, strides 1-2-2-1-1 (1→3→9→20→24→28);
      32×32: kernels 8-4-3-5-5-5, strides 1-2-1-1-1-1 (1→8→18→20→24→28→32).
      64×64 (beyond the paper): the 32×32 network whose last layer is a
      hidden 16-filter block, then a 2×2 transposed convolution of stride 2
      to the image (32→64).
    * Filters, 28×28: Table 5's 128-64-32-16, then the image channels (the
      released code has the same counts).
    * Filters, 32×32: 256-128-64-32-16, then the image channels, the
      released code's (`decoder_conv32x32`), the mirror of the encoder's
      six layers (see `Encoder`: Table 4 has no 256-filter layer).
    * Output: the last transposed convolution, with a bias and a sigmoid,
      produces the image directly. In the released code that layer too is
      followed by BatchNormalization and ReLU, and a dense layer over all
      pixels (sigmoid with the binary cross-entropy loss) makes the image.
    * Input: z alone, reshaped to 1×1×`latent_size`. The released code
      feeds the decoder the sum of a dense layer of z and one of y, each
      of `feature_size` units.
    * No bias in the hidden transposed convolutions, where the released
      code has one: the BatchNormalization that follows removes it.

    Args:
        image_shape: `(height, width, channels)` of the generated images.
        latent_size: z_sz, the length of z.
        **kwargs: passed to `keras.layers.Layer`.
    """

    def __init__(self, image_shape, latent_size, **kwargs):
        super().__init__(**kwargs)
        self.image_shape = _check_image_shape(image_shape)
        self.latent_size = int(latent_size)
        policy = self.dtype_policy
        self.reshape = keras.layers.Reshape((1, 1, self.latent_size), dtype=policy)
        specs = _DECODER_SPECS[self.image_shape[:2]]
        self.blocks = []
        for filters, kernel, stride in specs[:-1]:
            self.blocks += [
                Conv2DTranspose(filters, kernel, strides=stride, padding="valid", use_bias=False, dtype=policy),
                BatchNormalization(dtype=policy),
                keras.layers.ReLU(dtype=policy),
            ]
        _, kernel, stride = specs[-1]
        self.output_conv = Conv2DTranspose(self.image_shape[-1], kernel, strides=stride, padding="valid", dtype=policy)

    def build(self, input_shape):
        _build_chain([self.reshape] + self.blocks + [self.output_conv], input_shape)

    def call(self, z, training=None):
        x = self.reshape(z)
        for layer in self.blocks:
            x = layer(x, training=training)
        # The sigmoid apart from its convolution: in full precision, like the loss that reads it.
        return ops.sigmoid(ops.cast(self.output_conv(x), full_precision(self.dtype_policy).compute_dtype))

    def compute_output_shape(self, input_shape):
        return (input_shape[0],) + self.image_shape

    def get_config(self):
        config = super().get_config()
        config.update({"image_shape": self.image_shape, "latent_size": self.latent_size})
        return config


@keras.saving.register_keras_serializable(package="gmvae_keras")
class CategoricalInference(keras.layers.Layer):
    """Logits of q(y|x̂): f_sz → f_sz (LeakyReLU) → num_classes linear layers.

    Args:
        num_classes: c, the number of categories.
        feature_size: f_sz, width of the hidden layer (and of x̂).
        **kwargs: passed to `keras.layers.Layer`.
    """

    def __init__(self, num_classes, feature_size, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.feature_size = int(feature_size)
        self.hidden = keras.layers.Dense(self.feature_size, dtype=self.dtype_policy)
        self.activation = keras.layers.LeakyReLU(negative_slope=NEGATIVE_SLOPE, dtype=self.dtype_policy)
        self.logits = keras.layers.Dense(self.num_classes, dtype=self.dtype_policy)

    def build(self, input_shape):
        _build_chain([self.hidden, self.activation, self.logits], input_shape)

    def call(self, features):
        return self.logits(self.activation(self.hidden(features)))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_classes)

    def get_config(self):
        config = super().get_config()
        config.update({"num_classes": self.num_classes, "feature_size": self.feature_size})
        return config


@keras.saving.register_keras_serializable(package="gmvae_keras")
class GaussianInference(keras.layers.Layer):
    """Mean and variance of q(z|x̂,y): (f_sz + c) → z_sz → (z_sz, z_sz).

    Called on `[features, y]`; concatenates them, applies a hidden linear
    layer with LeakyReLU, then two linear heads: the mean and the variance
    (`_positive_variance`: softplus, plus a small floor so the log-density
    stays finite). The variance head computes in full precision
    (`layers.full_precision`); the rest in the layer's policy.

    Args:
        latent_size: z_sz.
        min_variance: floor added to the softplus variance.
        **kwargs: passed to `keras.layers.Layer`.
    """

    def __init__(self, latent_size, min_variance=1e-6, **kwargs):
        super().__init__(**kwargs)
        self.latent_size = int(latent_size)
        self.min_variance = float(min_variance)
        policy = self.dtype_policy
        self.hidden = keras.layers.Dense(self.latent_size, dtype=policy)
        self.activation = keras.layers.LeakyReLU(negative_slope=NEGATIVE_SLOPE, dtype=policy)
        self.mean = keras.layers.Dense(self.latent_size, dtype=policy)
        self.variance = keras.layers.Dense(self.latent_size, dtype=full_precision(policy))

    def build(self, input_shape):
        features_shape, y_shape = input_shape
        concat_shape = (features_shape[0], features_shape[-1] + y_shape[-1])
        hidden_shape = _build_chain([self.hidden, self.activation], concat_shape)
        self.mean.build(hidden_shape)
        self.variance.build(hidden_shape)

    def call(self, inputs):
        features, y = inputs
        hidden = self.activation(self.hidden(ops.concatenate([features, y], axis=-1)))
        return self.mean(hidden), _positive_variance(self.variance(hidden), self.min_variance)

    def compute_output_shape(self, input_shape):
        shape = (input_shape[0][0], self.latent_size)
        return shape, shape

    def get_config(self):
        config = super().get_config()
        config.update({"latent_size": self.latent_size, "min_variance": self.min_variance})
        return config


@keras.saving.register_keras_serializable(package="gmvae_keras")
class GaussianPrior(keras.layers.Layer):
    """Mean and variance of the learned prior p(z|y): one linear layer each.

    The variance goes through `_positive_variance`, as in `GaussianInference`.
    Both feed log p(z|y) directly, so the layer computes in
    `layers.full_precision()` unless given another `dtype` (it is a c × z_sz
    product: nothing to gain in 16 bits).

    Args:
        latent_size: z_sz.
        min_variance: floor added to the softplus variance.
        **kwargs: passed to `keras.layers.Layer`.
    """

    def __init__(self, latent_size, min_variance=1e-6, **kwargs):
        kwargs.setdefault("dtype", full_precision())
        super().__init__(**kwargs)
        self.latent_size = int(latent_size)
        self.min_variance = float(min_variance)
        self.mean = keras.layers.Dense(self.latent_size, dtype=self.dtype_policy)
        self.variance = keras.layers.Dense(self.latent_size, dtype=self.dtype_policy)

    def build(self, input_shape):
        self.mean.build(input_shape)
        self.variance.build(input_shape)

    def call(self, y):
        return self.mean(y), _positive_variance(self.variance(y), self.min_variance)

    def compute_output_shape(self, input_shape):
        shape = (input_shape[0], self.latent_size)
        return shape, shape

    def get_config(self):
        config = super().get_config()
        config.update({"latent_size": self.latent_size, "min_variance": self.min_variance})
        return config
