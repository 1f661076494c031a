"""gmvae_keras.conv: drop-in Conv2D / Conv2DTranspose with a faster stride-1 gradient."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from gmvae_keras import conv, networks
from gmvae_keras.benchmarks import SETTINGS
from gmvae_keras.conv import Conv2D, Conv2DTranspose, filter_gradient


def _outputs_and_gradients(layer, x):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
        # A weighting that is not symmetric, so a wrongly flipped kernel shows.
        # Drawn in float32: a 16-bit range would skip integers above 256.
        weights = tf.reshape(tf.range(tf.size(y), dtype="float32"), tf.shape(y)) / tf.cast(tf.size(y), "float32")
        weights = tf.cast(weights, y.dtype)
        loss = tf.reduce_sum(y * weights)
    return [y.numpy()] + [g.numpy() for g in tape.gradient(loss, [x] + layer.trainable_variables)]


@pytest.mark.parametrize(
    "ours, theirs, kwargs, shape",
    [
        (Conv2D, keras.layers.Conv2D, dict(filters=7, kernel_size=5), (3, 12, 12, 4)),
        (Conv2D, keras.layers.Conv2D, dict(filters=5, kernel_size=3, use_bias=False), (2, 9, 9, 6)),
        (Conv2D, keras.layers.Conv2D, dict(filters=6, kernel_size=4, strides=2), (2, 11, 11, 3)),
        (Conv2D, keras.layers.Conv2D, dict(filters=3, kernel_size=(2, 4)), (1, 7, 9, 2)),
        # The kernel covers the input: a matrix product.
        (Conv2D, keras.layers.Conv2D, dict(filters=5, kernel_size=(3, 4)), (2, 3, 4, 6)),
        (Conv2DTranspose, keras.layers.Conv2DTranspose, dict(filters=7, kernel_size=5), (3, 6, 6, 4)),
        (
            Conv2DTranspose,
            keras.layers.Conv2DTranspose,
            dict(filters=1, kernel_size=3, activation="sigmoid"),
            (2, 5, 5, 6),
        ),
        (Conv2DTranspose, keras.layers.Conv2DTranspose, dict(filters=6, kernel_size=5, strides=2), (2, 3, 3, 4)),
        (Conv2DTranspose, keras.layers.Conv2DTranspose, dict(filters=2, kernel_size=(4, 2)), (1, 5, 3, 3)),
        # Strided: the phase decomposition, with kernels longer, shorter and
        # not multiples of the strides, and inputs that leave a tail.
        (Conv2D, keras.layers.Conv2D, dict(filters=4, kernel_size=5, strides=2), (2, 9, 9, 3)),
        (Conv2D, keras.layers.Conv2D, dict(filters=3, kernel_size=(4, 3), strides=(2, 3)), (2, 12, 13, 2)),
        (Conv2D, keras.layers.Conv2D, dict(filters=3, kernel_size=2, strides=3), (1, 10, 8, 2)),
        (Conv2DTranspose, keras.layers.Conv2DTranspose, dict(filters=4, kernel_size=4, strides=2), (2, 9, 9, 3)),
        (
            Conv2DTranspose,
            keras.layers.Conv2DTranspose,
            dict(filters=2, kernel_size=(3, 5), strides=(3, 2)),
            (1, 4, 3, 3),
        ),
        (Conv2DTranspose, keras.layers.Conv2DTranspose, dict(filters=2, kernel_size=2, strides=3), (2, 3, 4, 2)),
        (Conv2DTranspose, keras.layers.Conv2DTranspose, dict(filters=3, kernel_size=2, strides=3), (2, 1, 1, 2)),
        # A 1×1 input: a matrix product.
        (Conv2DTranspose, keras.layers.Conv2DTranspose, dict(filters=3, kernel_size=(4, 3)), (2, 1, 1, 5)),
    ],
)
@pytest.mark.parametrize("policy, tolerance", [("float32", 1e-4), ("mixed_bfloat16", 1e-2), ("mixed_float16", 1e-2)])
def test_same_outputs_and_gradients_as_keras(ours, theirs, kwargs, shape, policy, tolerance, on_cpu):
    x = np.random.default_rng(0).normal(size=shape).astype("float32")
    reference = theirs(**kwargs, dtype=policy)
    reference.build(shape)
    layer = ours(**kwargs, dtype=policy)
    layer.build(shape)
    layer.set_weights([w + 0.1 for w in reference.get_weights()])  # non-zero biases too
    reference.set_weights(layer.get_weights())
    got, expected = _outputs_and_gradients(layer, x), _outputs_and_gradients(reference, x)
    assert [a.dtype for a in got] == [b.dtype for b in expected]
    assert got[0].dtype == layer.compute_dtype  # 16 bits under a mixed policy; the gradients of float32 are float32
    if policy == "float32":
        for a, b in zip(got, expected, strict=True):
            np.testing.assert_allclose(a, b, rtol=tolerance, atol=tolerance * np.abs(b).max())
        return
    # In 16 bits the two layers round and sum in different orders, and Keras' bias gradient (a sum over
    # every output position) can be far off in bfloat16 itself: both are measured against float64.
    exact = theirs(**kwargs, dtype="float64")
    exact.build(shape)
    exact.set_weights([w.astype("float64") for w in layer.get_weights()])
    names = ["outputs", "input gradient"] + [v.path for v in layer.trainable_variables]
    for name, a, b, truth in zip(names, got, expected, _outputs_and_gradients(exact, x.astype("float64")), strict=True):
        scale = np.abs(truth).max()
        ours_error, keras_error = (float(np.abs(v.astype("float64") - truth).max() / scale) for v in (a, b))
        assert ours_error <= max(tolerance, keras_error), (name, ours_error, keras_error)
        if keras_error <= tolerance:
            np.testing.assert_allclose(a.astype("float32"), b.astype("float32"), rtol=0, atol=2 * tolerance * scale)


@pytest.mark.parametrize("cls", [Conv2D, Conv2DTranspose])
def test_config_and_saved_layer_round_trip(cls, tmp_path):
    layer = cls(filters=3, kernel_size=3, use_bias=False, name="c")
    x = np.random.default_rng(1).random((2, 7, 7, 2)).astype("float32")
    inputs = keras.Input((7, 7, 2))
    model = keras.Model(inputs, layer(inputs))
    clone = cls.from_config(layer.get_config())
    clone.build(x.shape)
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(clone(x).numpy(), layer(x).numpy())
    model.save(tmp_path / "m.keras")
    reloaded = keras.saving.load_model(tmp_path / "m.keras")
    assert isinstance(reloaded.layers[-1], cls)
    np.testing.assert_array_equal(reloaded(x).numpy(), model(x).numpy())


def _gradient_graph_op_types(layer, input_shape):
    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer(x))
        return tape.gradient(loss, [x] + layer.trainable_variables)

    graph = step.get_concrete_function(tf.TensorSpec(input_shape)).graph
    op_types = set()
    for op in graph.get_operations():
        op_types.add(op.type)
        for function in graph._functions.values():  # custom gradients live in nested functions
            op_types.update(node.op for node in function.definition.node_def)
    return op_types


@pytest.mark.parametrize("cls", [Conv2D, Conv2DTranspose])
def test_stride_one_graph_has_only_forward_convolutions(cls, on_cpu):
    layer = cls(filters=4, kernel_size=3)
    layer.build((2, 6, 6, 3))
    op_types = _gradient_graph_op_types(layer, (2, 6, 6, 3))
    assert "Conv2D" in op_types
    assert "Conv2DBackpropInput" not in op_types and "Conv2DBackpropFilter" not in op_types


@pytest.mark.parametrize("cls", [Conv2D, Conv2DTranspose])
def test_strided_graph_has_no_input_gradient_kernel(cls, on_cpu):
    layer = cls(filters=4, kernel_size=4, strides=2)
    layer.build((2, 9, 9, 3))
    op_types = _gradient_graph_op_types(layer, (2, 9, 9, 3))
    assert "Conv2D" in op_types and "Conv2DBackpropInput" not in op_types


@pytest.mark.parametrize("cls, input_shape", [(Conv2D, (2, 3, 3, 5)), (Conv2DTranspose, (2, 1, 1, 5))])
def test_one_by_one_maps_are_matrix_products(cls, input_shape, on_cpu):
    layer = cls(filters=4, kernel_size=3)
    layer.build(input_shape)
    op_types = _gradient_graph_op_types(layer, input_shape)
    assert "MatMul" in op_types
    assert not {"Conv2D", "Conv2DBackpropInput", "Conv2DBackpropFilter"} & op_types


@pytest.mark.parametrize(
    "batch, height, width, k_h, k_w, c_in, c_out",
    [(1, 5, 5, 3, 3, 1, 1), (4, 9, 7, 2, 5, 3, 6), (200, 28, 28, 5, 5, 1, 16)],
)
def test_filter_gradient_equals_tensorflow_kernel(batch, height, width, k_h, k_w, c_in, c_out):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(batch, height, width, c_in)).astype("float32")
    dy = rng.normal(size=(batch, height - k_h + 1, width - k_w + 1, c_out)).astype("float32")
    expected = tf.raw_ops.Conv2DBackpropFilter(
        input=x, filter_sizes=[k_h, k_w, c_in, c_out], out_backprop=dy, strides=[1, 1, 1, 1], padding="VALID"
    ).numpy()
    got = filter_gradient(tf.constant(x), tf.constant(dy)).numpy()
    assert got.shape == (k_h, k_w, c_in, c_out)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def _stride_one_encoder_convolutions(setting):
    """(height, in_channels, out_channels, kernel) of each stride-1 convolution of the setting's encoder."""
    height, _, channels = setting["image_shape"]
    shapes = []
    for layer in networks.Encoder(setting["image_shape"], setting["feature_size"]).blocks:
        if isinstance(layer, keras.layers.Conv2D):
            (kernel, _), (stride, _), out = layer.kernel_size, layer.strides, layer.filters
            if stride == 1:
                shapes.append((height, channels, out, kernel))
            height, channels = (height - kernel) // stride + 1, out
    return shapes


def test_input_gradient_equals_tensorflow_kernel_on_the_mnist_encoder():
    # The shapes docs/PERFORMANCE.md timed: kernels 5-5-4-5-3 with strides 1-1-2-2-1, at the paper's batch.
    setting = SETTINGS["mnist"]
    shapes = _stride_one_encoder_convolutions(setting)
    assert shapes == [(28, 1, 16, 5), (24, 16, 32, 5), (3, 128, 100, 3)]
    rng, batch = np.random.default_rng(2), setting["batch_size"]
    for height, c_in, c_out, k in shapes:
        dy = rng.normal(size=(batch, height - k + 1, height - k + 1, c_out)).astype("float32")
        kernel = rng.normal(size=(k, k, c_in, c_out)).astype("float32")
        expected = tf.raw_ops.Conv2DBackpropInput(
            input_sizes=[batch, height, height, c_in],
            filter=kernel,
            out_backprop=dy,
            strides=[1, 1, 1, 1],
            padding="VALID",
        ).numpy()
        got = conv.input_gradient(tf.constant(dy), tf.constant(kernel), (height, height)).numpy()
        assert np.abs(got - expected).max() / np.abs(expected).max() < 1e-5, (height, c_in, c_out, k)


def test_the_device_check_reads_the_logical_devices():
    expected = all(device.device_type == "CPU" for device in tf.config.list_logical_devices())
    assert conv._runs_on_cpu() is expected


# The Keras methods the layers defer to off the fast path.
_KERAS_METHOD = {
    Conv2D: (keras.layers.Conv2D, "convolution_op"),
    Conv2DTranspose: (keras.layers.Conv2DTranspose, "call"),
}


def _spy_on_keras(monkeypatch, cls):
    """Records the layers that reach Keras' own method, which still runs."""
    base, name = _KERAS_METHOD[cls]
    original, callers = getattr(base, name), []

    def spy(self, *args, **kwargs):
        callers.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(base, name, spy)
    return callers


@pytest.mark.parametrize(
    "cls, theirs, kwargs, shape",
    [
        (Conv2D, keras.layers.Conv2D, dict(filters=4, kernel_size=3), (2, 7, 7, 3)),
        (Conv2D, keras.layers.Conv2D, dict(filters=4, kernel_size=4, strides=2), (2, 9, 9, 3)),
        (Conv2D, keras.layers.Conv2D, dict(filters=4, kernel_size=3), (2, 3, 3, 5)),  # kernel covers the input
        (
            Conv2DTranspose,
            keras.layers.Conv2DTranspose,
            dict(filters=4, kernel_size=3, activation="sigmoid"),
            (2, 5, 5, 3),
        ),
        (Conv2DTranspose, keras.layers.Conv2DTranspose, dict(filters=4, kernel_size=4, strides=2), (2, 4, 4, 3)),
        (Conv2DTranspose, keras.layers.Conv2DTranspose, dict(filters=4, kernel_size=3), (2, 1, 1, 5)),  # 1×1 input
    ],
)
def test_on_a_gpu_the_keras_layer_runs(cls, theirs, kwargs, shape, on_gpu, monkeypatch):
    x = np.random.default_rng(2).normal(size=shape).astype("float32")
    reference = theirs(**kwargs)
    reference.build(shape)
    layer = cls(**kwargs)
    layer.build(shape)
    layer.set_weights([w + 0.1 for w in reference.get_weights()])
    reference.set_weights(layer.get_weights())
    callers = _spy_on_keras(monkeypatch, cls)
    got = _outputs_and_gradients(layer, x)
    assert any(caller is layer for caller in callers)
    for a, b in zip(got, _outputs_and_gradients(reference, x), strict=True):
        np.testing.assert_array_equal(a, b)
    # Traced in a tf.function too: the graph holds TensorFlow's own gradient kernels.
    assert {"Conv2DBackpropInput", "Conv2DBackpropFilter"} <= _gradient_graph_op_types(layer, shape)


@pytest.mark.parametrize("cls", [Conv2D, Conv2DTranspose])
def test_on_the_cpu_the_fast_path_runs(cls, on_cpu, monkeypatch):
    layer = cls(filters=4, kernel_size=3)
    layer.build((2, 6, 6, 3))
    callers = _spy_on_keras(monkeypatch, cls)
    _outputs_and_gradients(layer, np.ones((2, 6, 6, 3), "float32"))
    op_types = _gradient_graph_op_types(layer, (2, 6, 6, 3))
    assert not any(caller is layer for caller in callers)
    assert "Conv2DBackpropInput" not in op_types and "Conv2DBackpropFilter" not in op_types
