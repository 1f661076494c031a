"""The package's loss and its gradients against the float64 NumPy reference (tests/reference.py)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from gmvae_keras import GMVAE

import reference

SHAPE = (28, 28, 1)
OUTPUTS = ("features", "logits", "z_mean", "z_variance", "z", "prior_mean", "prior_variance", "reconstruction")


def _batch_and_outputs(settings, num_unlabeled=7, num_labeled=6, seed=0):
    """A model, a batch and the outputs of one training-mode forward pass, frozen as variables."""
    keras.utils.set_random_seed(seed)
    model = GMVAE(image_shape=SHAPE, num_classes=3, feature_size=6, latent_size=4, seed=seed, **settings)
    rng = np.random.default_rng(seed)
    images = rng.random((num_unlabeled + num_labeled,) + SHAPE).astype("float32")
    labels = (np.arange(num_labeled) % 3).astype("int32")
    outputs = model(images, training=True)
    frozen = {name: tf.Variable(outputs[name]) for name in OUTPUTS}
    # The losses read these, noise and all, through `call`; the gradient is taken with respect to them.
    model.call = lambda images, training=None: {name: tf.convert_to_tensor(v) for name, v in frozen.items()}
    return model, images, labels, frozen


def _settings(model):
    names = ("reconstruction", "categorical_kl", "gaussian_weight", "categorical_weight", "assignment_weight")
    names += ("metric_weight", "k", "margin", "num_classes")
    return {name: getattr(model, name) for name in names}


def _numeric_gradient(images, values, labels, settings, name, indices, step=1e-6):
    """Central differences of the reference's total in float64 at `indices` of output `name`."""
    grads = []
    for index in indices:
        shifted = []
        for sign in (1.0, -1.0):
            moved = {key: value.copy() for key, value in values.items()}
            moved[name][index] += sign * step
            shifted.append(reference.gmvae_loss(images, moved, labels, settings)[1])
        grads.append((shifted[0] - shifted[1]) / (2 * step))
    return np.array(grads)


@pytest.mark.parametrize(
    "settings",
    [
        dict(k=3, margin=1.0, assignment_weight=4.7, metric_weight=0.5),
        dict(k=2, margin=2.0, assignment_weight=1.0, metric_weight=1.0, reconstruction="bce", categorical_kl="batch"),
        dict(k=1, margin=0.5, assignment_weight=1.0, metric_weight=0.0, gaussian_weight=5.0),
    ],
)
def test_every_loss_term_assignment_and_gradient_of_a_step_match_the_float64_reference(settings):
    model, images, labels, frozen = _batch_and_outputs(settings)
    with tf.GradientTape() as tape:
        terms, total, assigned = model.compute_losses(tf.constant(images), tf.constant(labels), training=True)
    gradients = dict(zip(OUTPUTS, tape.gradient(total, [frozen[name] for name in OUTPUTS]), strict=True))
    values = {name: frozen[name].numpy().astype(np.float64) for name in OUTPUTS}
    expected_terms, expected_total, expected_assigned = reference.gmvae_loss(images, values, labels, _settings(model))

    np.testing.assert_array_equal(assigned.numpy(), expected_assigned)
    assert sorted(terms) == sorted(expected_terms)
    for name, value in expected_terms.items():
        np.testing.assert_allclose(float(terms[name]), value, rtol=2e-5, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(float(total), expected_total, rtol=2e-5)
    rng = np.random.default_rng(1)
    for name in OUTPUTS:
        # No gradient at all (x̂ without L_M: the vote passes none) must be a zero one.
        grad = np.zeros(values[name].shape) if gradients[name] is None else gradients[name].numpy().astype(np.float64)
        # Every entry of the small outputs; 40 random pixels of the reconstruction.
        flat = list(np.ndindex(grad.shape))
        indices = flat if len(flat) <= 200 else [flat[i] for i in rng.choice(len(flat), 40, replace=False)]
        numeric = _numeric_gradient(images, values, labels, _settings(model), name, indices)
        analytic = np.array([grad[index] for index in indices])
        scale = max(1.0, np.abs(numeric).max())
        np.testing.assert_allclose(analytic, numeric, rtol=1e-3, atol=1e-4 * scale, err_msg=name)


def test_the_reference_notices_a_vote_that_takes_the_wrong_neighbours():
    # The reference itself must be able to disagree: the vote of the farthest rows assigns other labels.
    rng = np.random.default_rng(0)
    labeled, unlabeled = rng.normal(size=(6, 4)), rng.normal(size=(20, 4))
    labels = np.arange(6) % 3
    nearest = reference.knn_vote(unlabeled, labeled, labels, 3, 1)
    expected = labels[np.argmin(((unlabeled[:, None] - labeled[None]) ** 2).sum(-1), axis=1)]
    np.testing.assert_array_equal(nearest, expected)
    farthest = labels[np.argmax(((unlabeled[:, None] - labeled[None]) ** 2).sum(-1), axis=1)]
    assert np.any(nearest != farthest)
