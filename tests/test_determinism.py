"""`--deterministic` sums in an order that does not depend on the thread schedule (`gmvae_keras.determinism`)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from gmvae_keras import GMVAE, determinism

# Three addends whose sum is 1 or 0 depending on the order of the additions (float32).
ADDENDS = (-1e8, 1e8, 1.0)


def _add_n(count, held):
    """`tf.add_n` of the first `count` of `ADDENDS`, each a fresh buffer; with `held`, all but the
    last also returned, so that the sum cannot reuse their buffers."""
    values = [tf.Variable(tf.fill([4], value)) for value in ADDENDS[:count]]
    ones = tf.Variable(tf.ones(4))

    @tf.function
    def add():
        addends = [value * ones for value in values]
        return [tf.add_n(addends)] + (addends[:-1] if held else [])

    return add()[0].numpy()


def test_an_add_n_of_three_depends_on_which_inputs_another_op_holds():
    # Why a sum of three gradients differs between runs: the last input is added first when the
    # others are still held, as in a training step when their other consumers have not run yet.
    assert _add_n(3, held=False)[0] == (ADDENDS[0] + ADDENDS[1]) + ADDENDS[2] == 1.0
    assert _add_n(3, held=True)[0] == 0.0, "TensorFlow's AddN no longer reorders: determinism.py may be simplified"
    # Two inputs: either order gives the same sum.
    np.testing.assert_array_equal(_add_n(2, held=False), _add_n(2, held=True))


@pytest.fixture
def deterministic():
    """`determinism.enable` for one test (conftest's `_determinism_left_off` undoes it afterwards)."""
    determinism.enable()


def _train_step_sums(views):
    """The input counts of the AddN ops of a traced `GMVAE.train_step`, a batch with `views` or without."""
    model = GMVAE(image_shape=(28, 28, 1), num_classes=3, feature_size=8, latent_size=4, k=2, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=False)
    images = np.random.default_rng(0).random((12, 28, 28, 1)).astype("float32")
    batch = {"images": images, "labels": np.arange(6, dtype="int32") % 3}
    if views:
        batch["views"] = images[:, :, ::-1]
    graph = tf.function(model.train_step).get_concrete_function(batch).graph
    return [len(op.inputs) for op in graph.get_operations() if op.type == "AddN"]


def test_a_train_step_sums_gradients_with_one_add_n_of_many():
    # What `determinism.gradients` changes: many tensors (the features, y, z) have three uses or more.
    assert max(_train_step_sums(views=True)) > 2


def test_a_deterministic_train_step_sums_two_at_a_time(deterministic):
    sums = _train_step_sums(views=True)
    assert sums and max(sums) == 2
    # Grappler's arithmetic optimizer would merge the pairwise sums (and L's terms) into AddN again.
    assert tf.config.optimizer.get_experimental_options()["arithmetic_optimization"] is False


def test_deterministic_gradients_of_an_eager_step_are_the_tapes(deterministic):
    x = tf.Variable([1.0, 2.0])
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(x * x)
    np.testing.assert_array_equal(determinism.gradients(tape, loss, [x])[0], [2.0, 4.0])
