import keras
import numpy as np
import pytest
import tensorflow as tf

from gmvae_keras import (
    CategoricalInference,
    Decoder,
    Encoder,
    GaussianInference,
    GaussianPrior,
    GaussianSample,
    GumbelSoftmax,
)


def test_gumbel_softmax_samples_sum_to_one_and_follow_softmax():
    layer = GumbelSoftmax(temperature=1.0, seed=7)
    logits = np.log(np.array([[0.6, 0.3, 0.1]], "float32"))
    samples = layer(np.repeat(logits, 20000, axis=0), training=True).numpy()
    np.testing.assert_allclose(samples.sum(-1), 1.0, rtol=1e-5)
    frequencies = np.bincount(samples.argmax(-1), minlength=3) / len(samples)
    np.testing.assert_allclose(frequencies, [0.6, 0.3, 0.1], atol=0.015)


def test_gumbel_softmax_is_deterministic_softmax_at_inference_whatever_the_temperature():
    layer = GumbelSoftmax(temperature=0.5, seed=1)
    logits = np.array([[1.0, 2.0, 0.5]], "float32")
    out = layer(logits, training=False).numpy()
    np.testing.assert_allclose(out, tf.nn.softmax(logits).numpy(), rtol=1e-6)
    layer.temperature.assign(0.3)  # annealed: q(y|x̂) at inference stays the softmax of the logits
    np.testing.assert_array_equal(out, layer(logits, training=False).numpy())


def test_gumbel_softmax_temperature_change_needs_no_retracing():
    layer = GumbelSoftmax(temperature=5.0, seed=3)
    traces = []

    @tf.function
    def sample(logits):
        traces.append(1)
        return layer(logits, training=True)

    logits = np.tile(np.array([[1.0, 0.0, -1.0, 0.5]], "float32"), (4000, 1))
    hot = sample(logits).numpy()
    layer.temperature.assign(0.1)
    cold = sample(logits).numpy()
    assert len(traces) == 1
    # Lower temperature gives samples closer to one-hot.
    assert cold.max(-1).mean() > 0.95 > hot.max(-1).mean()


def test_gumbel_softmax_rejects_bad_temperature():
    with pytest.raises(ValueError, match="temperature"):
        GumbelSoftmax(temperature=0.0)


def test_gaussian_sample_reparameterizes_and_returns_mean_at_inference():
    layer = GaussianSample(seed=4)
    mean = np.full((50000, 2), 3.0, "float32")
    variance = np.tile(np.array([[0.25, 4.0]], "float32"), (50000, 1))
    z = layer([mean, variance], training=True).numpy()
    np.testing.assert_allclose(z.mean(0), [3.0, 3.0], atol=0.05)
    np.testing.assert_allclose(z.std(0), [0.5, 2.0], rtol=0.03)
    np.testing.assert_array_equal(layer([mean, variance], training=False).numpy(), mean)


def _images(shape, n=3, seed=0):
    return np.random.default_rng(seed).random((n,) + shape).astype("float32")


# (layer factory, list of input arrays)
CASES = {
    "gumbel_softmax": (lambda: GumbelSoftmax(temperature=0.7, seed=2), [np.ones((3, 4), "float32")]),
    "gaussian_sample": (lambda: GaussianSample(seed=2), [np.ones((3, 4), "float32"), np.ones((3, 4), "float32")]),
    "encoder_28": (lambda: Encoder((28, 28, 1), 12), [_images((28, 28, 1))]),
    "encoder_32": (lambda: Encoder((32, 32, 3), 12), [_images((32, 32, 3))]),
    "decoder_28": (lambda: Decoder((28, 28, 1), 6), [_images((6,))]),
    "decoder_32": (lambda: Decoder((32, 32, 3), 6), [_images((6,))]),
    "categorical": (lambda: CategoricalInference(10, 12), [_images((12,))]),
    "gaussian_inference": (lambda: GaussianInference(6), [_images((12,)), _images((10,), seed=1)]),
    "gaussian_prior": (lambda: GaussianPrior(6), [_images((10,))]),
}


def _wrap(layer, arrays):
    inputs = [keras.Input(a.shape[1:]) for a in arrays]
    if len(inputs) == 1:
        inputs = inputs[0]
    return keras.Model(inputs, layer(inputs))


def _as_list(out):
    return [np.asarray(o) for o in (out if isinstance(out, (tuple, list)) else [out])]


@pytest.mark.parametrize("name", sorted(CASES))
def test_layer_config_and_keras_file_round_trip(name, tmp_path):
    factory, arrays = CASES[name]
    layer = factory()
    model = _wrap(layer, arrays)
    feed = arrays if len(arrays) > 1 else arrays[0]
    expected = _as_list(model(feed, training=False))

    clone = layer.__class__.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    clone_model = _wrap(clone, arrays)
    clone_model.set_weights(model.get_weights())
    for a, b in zip(expected, _as_list(clone_model(feed, training=False)), strict=True):
        np.testing.assert_array_equal(a, b)

    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    for a, b in zip(expected, _as_list(loaded(feed, training=False)), strict=True):
        np.testing.assert_array_equal(a, b)
    assert all(sub.built for sub in loaded._flatten_layers())


def test_network_output_shapes():
    assert Encoder((28, 28, 1), 100)(_images((28, 28, 1))).shape == (3, 100)
    assert Encoder((32, 32, 3), 64)(_images((32, 32, 3))).shape == (3, 64)
    recon = Decoder((28, 28, 1), 20)(_images((20,))).numpy()
    assert recon.shape == (3, 28, 28, 1) and recon.min() >= 0 and recon.max() <= 1
    assert Decoder((32, 32, 3), 20)(_images((20,))).shape == (3, 32, 32, 3)
    _, variance = GaussianPrior(5)(_images((10,)) - 5.0)
    assert np.all(variance.numpy() > 0)


@pytest.mark.parametrize("name", ["encoder_28", "encoder_32", "decoder_28", "decoder_32"])
def test_a_networks_output_for_an_image_does_not_depend_on_its_batch_at_inference(name):
    factory, (inputs,) = CASES[name]
    network = factory()
    whole = network(inputs, training=False).numpy()  # BatchNorm on its moving statistics, not the batch's
    moving = [v.numpy() for v in network.non_trainable_variables]
    np.testing.assert_allclose(network(inputs[:1], training=False).numpy(), whole[:1], rtol=1e-5, atol=1e-6)
    for before, after in zip(moving, network.non_trainable_variables, strict=True):
        np.testing.assert_array_equal(before, after.numpy())


def test_variance_heads_are_a_softplus_of_their_dense_layer_plus_the_floor():
    features, y = _images((12,)), _images((10,), seed=1)
    inference = GaussianInference(6, min_variance=1e-3)
    prior = GaussianPrior(6, min_variance=1e-3)
    _, inference_variance = inference([features, y])
    _, prior_variance = prior(y)
    hidden = inference.activation(inference.hidden(np.concatenate([features, y], axis=-1)))
    for variance, dense_output in (
        (inference_variance, inference.variance(hidden)),
        (prior_variance, prior.variance(y)),
    ):
        np.testing.assert_allclose(variance.numpy(), np.logaddexp(0.0, dense_output.numpy()) + 1e-3, rtol=1e-6)
    # The heads own no variable of their own: a `.keras` file keeps its layout.
    assert [len(layer.weights) for layer in (inference, prior)] == [6, 4]
    prior.variance.bias.assign(np.full((6,), -200.0, "float32"))
    np.testing.assert_allclose(prior(y)[1].numpy(), 1e-3)


def test_unsupported_image_shape_is_rejected():
    with pytest.raises(ValueError, match="not supported"):
        Encoder((48, 48, 3), 10)


def test_full_precision_is_the_variables_dtype():
    from gmvae_keras.layers import full_precision

    assert full_precision("mixed_bfloat16").name == "float32"
    assert full_precision("mixed_float16").name == "float32"
    assert full_precision("float64").name == "float64"


def test_under_a_mixed_global_policy_the_samplers_and_the_prior_compute_in_float32(global_dtype_policy):
    keras.config.set_dtype_policy("mixed_bfloat16")
    half = tf.constant(np.random.default_rng(0).normal(size=(4, 3)), tf.bfloat16)
    assert GumbelSoftmax(seed=0)(half, training=True).dtype == tf.float32
    variance = tf.ones((4, 3), tf.bfloat16)
    assert GaussianSample(seed=0)([half, variance], training=True).dtype == tf.float32
    prior = GaussianPrior(5)
    mean, prior_variance = prior(tf.one_hot([0, 1, 2, 0], 3))
    assert mean.dtype == prior_variance.dtype == tf.float32 and prior.mean.compute_dtype == "float32"
    # The networks around them compute in 16 bits, but for the variance head and the sigmoid.
    inference = GaussianInference(5)
    z_mean, z_variance = inference([tf.zeros((4, 8)), tf.zeros((4, 3))])
    assert (z_mean.dtype, z_variance.dtype) == (tf.bfloat16, tf.float32)
    decoder = Decoder((28, 28, 1), 5)
    assert decoder.output_conv.compute_dtype == "bfloat16"
    assert decoder(tf.zeros((2, 5))).dtype == tf.float32
