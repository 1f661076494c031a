"""gmvae_keras.normalization: BatchNormalization fused in bfloat16 on the CPU, Keras' layer otherwise."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from gmvae_keras.normalization import BatchNormalization

SHAPE = (6, 5, 4, 3)


def _pair(policy, **kwargs):
    """Ours and Keras' layer with the same non-trivial weights and moving statistics."""
    layers = []
    for cls in (BatchNormalization, keras.layers.BatchNormalization):
        layer = cls(dtype=policy, **kwargs)
        layer.build(SHAPE)
        layers.append(layer)
    rng = np.random.default_rng(3)
    layers[1].set_weights([rng.uniform(0.5, 2.0, w.shape).astype("float32") for w in layers[0].get_weights()])
    layers[0].set_weights(layers[1].get_weights())
    return layers


def _run(layer, x, training):
    """Outputs, gradients (input, then the trainable variables) and the weights after the call."""
    x = tf.cast(tf.constant(x), layer.compute_dtype)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=training)
        # Weights that differ within a channel: BatchNormalization's input gradient of a
        # per-channel constant is zero.
        weights = tf.random.stateless_normal(y.shape, seed=[1, 2])
        loss = tf.reduce_sum(tf.cast(y, "float32") * weights)
    gradients = tape.gradient(loss, [x] + layer.trainable_variables)
    return [y.numpy()] + [g.numpy() for g in gradients], layer.get_weights()


def _inputs():
    return (3.0 * np.random.default_rng(0).normal(size=SHAPE) + 1.0).astype("float32")


def _gradient_graph_op_types(layer):
    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.cast(layer(x, training=True), "float32"))
        return tape.gradient(loss, [x] + layer.trainable_variables)

    graph = step.get_concrete_function(tf.TensorSpec(SHAPE, layer.compute_dtype)).graph
    return {op.type for op in graph.get_operations()}


@pytest.mark.parametrize("kwargs", [{}, dict(center=False, scale=False), dict(momentum=0.5)])
@pytest.mark.parametrize("training", [True, False])
def test_bfloat16_matches_keras_and_keeps_float32_statistics(kwargs, training, on_cpu):
    ours, keras_layer = _pair("mixed_bfloat16", **kwargs)
    (got, got_weights), (expected, expected_weights) = (
        _run(layer, _inputs(), training) for layer in (ours, keras_layer)
    )
    assert [a.dtype for a in got] == [b.dtype for b in expected]
    assert got[0].dtype == "bfloat16"
    assert all(w.dtype == "float32" for w in got_weights)
    for a, b in zip(got, expected, strict=True):
        b = b.astype("float32")
        # One bfloat16 rounding apart (8 bits of mantissa).
        np.testing.assert_allclose(a.astype("float32"), b, rtol=0, atol=1e-2 * max(1.0, np.abs(b).max()))
    for a, b in zip(got_weights, expected_weights, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_bfloat16_graph_is_fused_without_casts_of_the_activations(on_cpu):
    ours, keras_layer = _pair("mixed_bfloat16")
    op_types = _gradient_graph_op_types(ours)
    assert {"FusedBatchNormV3", "FusedBatchNormGradV3"} <= op_types
    assert "FusedBatchNormV3" not in _gradient_graph_op_types(keras_layer)


@pytest.mark.parametrize("policy", ["float32", "mixed_float16"])
@pytest.mark.parametrize("training", [True, False])
def test_other_policies_run_the_keras_layer_exactly(policy, training, on_cpu):
    ours, keras_layer = _pair(policy)
    (got, got_weights), (expected, expected_weights) = (
        _run(layer, _inputs(), training) for layer in (ours, keras_layer)
    )
    for a, b in zip(got + got_weights, expected + expected_weights, strict=True):
        np.testing.assert_array_equal(a, b)
    assert "FusedBatchNormV3" not in _gradient_graph_op_types(ours)


def test_off_the_cpu_the_keras_layer_runs(on_gpu):
    ours, _ = _pair("mixed_bfloat16")
    assert "FusedBatchNormV3" not in _gradient_graph_op_types(ours)


def test_config_and_saved_layer_round_trip(tmp_path):
    inputs = keras.Input(SHAPE[1:])
    model = keras.Model(inputs, BatchNormalization(momentum=0.9, name="bn")(inputs))
    model.layers[-1].set_weights([w + 0.5 for w in model.layers[-1].get_weights()])
    model.save(tmp_path / "m.keras")
    reloaded = keras.saving.load_model(tmp_path / "m.keras")
    assert isinstance(reloaded.layers[-1], BatchNormalization)
    assert reloaded.layers[-1].get_config() == model.layers[-1].get_config()
    x = _inputs()
    np.testing.assert_array_equal(reloaded(x, training=False).numpy(), model(x, training=False).numpy())
