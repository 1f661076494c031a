import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from gmvae_keras import losses

from reference import lifted_structured_loss as numpy_lifted_loss


@pytest.mark.parametrize(
    "labels",
    [
        [0, 0, 1, 1, 2, 2, 0, 1],
        [0, 1, 1, 1, 1, 2, 2, 3],  # classes 0 and 3 have a single sample
        [3, 3, 3, 0, 0, 0, 0, 0, 1, 1],
        [0, 1, 2, 2],
    ],
)
@pytest.mark.parametrize("margin", [0.5, 2.0])
def test_lifted_structured_loss_matches_numpy_double_loop(labels, margin):
    rng = np.random.default_rng(len(labels))
    labels = np.array(labels)
    embeddings = rng.normal(size=(len(labels), 5)).astype("float32") * 0.7
    expected = numpy_lifted_loss(labels, embeddings.astype("float64"), margin)
    got = float(losses.lifted_structured_loss(labels, losses.pairwise_distance(embeddings), margin))
    assert expected > 0
    np.testing.assert_allclose(got, expected, rtol=1e-4)


def test_lifted_structured_loss_large_distances_are_stable():
    labels = np.array([0, 0, 1, 1])
    embeddings = np.array([[0.0], [300.0], [600.0], [900.0]], "float32")
    expected = numpy_lifted_loss(labels, embeddings.astype("float64"), 1.0)
    got = float(losses.lifted_structured_loss(labels, losses.pairwise_distance(embeddings), 1.0))
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def _gradient(labels, embeddings, margin=1.0):
    x = tf.Variable(embeddings)
    with tf.GradientTape() as tape:
        loss = losses.lifted_structured_loss(labels, losses.pairwise_distance(x), margin)
    return loss, tape.gradient(loss, x)


def test_lifted_structured_loss_gradient_is_finite_with_coinciding_embeddings():
    embeddings = np.array([[1.0, 2.0], [1.0, 2.0], [1.0, 2.0], [0.0, 0.5]], "float32")
    loss, grad = _gradient(np.array([0, 0, 1, 1]), embeddings)
    assert np.isfinite(float(loss)) and float(loss) > 0
    assert np.all(np.isfinite(grad.numpy()))
    assert np.any(grad.numpy() != 0)


def test_lifted_structured_loss_single_class_is_zero_with_finite_gradient():
    embeddings = np.random.default_rng(0).normal(size=(6, 3)).astype("float32")
    loss, grad = _gradient(np.zeros(6, "int32"), embeddings)
    assert float(loss) == 0.0
    assert np.all(np.isfinite(grad.numpy()))


def test_lifted_structured_loss_without_positive_pairs_is_zero():
    embeddings = np.random.default_rng(1).normal(size=(4, 3)).astype("float32")
    loss, grad = _gradient(np.arange(4), embeddings)
    assert float(loss) == 0.0
    assert np.all(np.isfinite(grad.numpy()))


def _assignment_case():
    # One unlabeled point at 0. Its 3 nearest labeled points: one of class 0
    # at distance 0.5 and two of class 1 at 2.0 and 2.1. A plain majority
    # would pick class 1; weighted by 1/distance, 1/0.5 = 2 for class 0 > 1/2 + 1/2.1.
    unlabeled = np.array([[0.0, 0.0]], "float32")
    labeled = np.array([[0.5, 0.0], [2.0, 0.0], [0.0, -2.1], [9.0, 9.0], [10.0, 0.0]], "float32")
    labels = np.array([0, 1, 1, 0, 0])
    return unlabeled, labeled, labels


def test_assign_labels_weighs_each_neighbour_by_one_over_its_distance():
    unlabeled, labeled, labels = _assignment_case()
    distances = losses.pairwise_distance(unlabeled, labeled)
    assert losses.assign_labels(distances, labels, 3, k=3).numpy().tolist() == [0]
    votes = np.array([[2.0, 1 / 2.0 + 1 / 2.1, 0.0]])
    np.testing.assert_allclose(losses.vote_shares(distances, labels, 3, k=3, normalize=False), votes, rtol=1e-5)
    np.testing.assert_allclose(losses.vote_shares(distances, labels, 3, k=3), votes / votes.sum(), rtol=1e-5)


def test_assign_labels_nearest_neighbour_and_batch():
    rng = np.random.default_rng(0)
    labeled = rng.normal(size=(12, 4)).astype("float32")
    labels = np.arange(12) % 4
    unlabeled = labeled + 1e-3  # each unlabeled point sits on a labeled one
    got = losses.assign_labels(losses.pairwise_distance(unlabeled, labeled), labels, 4, k=1)
    assert got.numpy().tolist() == labels.tolist()
    assert got.dtype == tf.int32


def test_assign_labels_rejects_k_larger_than_labeled():
    unlabeled, labeled, labels = _assignment_case()
    with pytest.raises(ValueError, match="k=6 is larger than the number of labeled samples"):
        losses.assign_labels(losses.pairwise_distance(unlabeled, labeled), labels, 3, k=6)


def test_assign_labels_has_no_gradient():
    unlabeled, labeled, labels = _assignment_case()
    x = tf.Variable(unlabeled)
    with tf.GradientTape() as tape:
        out = tf.cast(losses.assign_labels(losses.pairwise_distance(x, labeled), labels, 3, k=3), tf.float32)
    assert tape.gradient(out, x) is None


def test_balance_assignment_moves_the_least_certain_samples():
    # Every sample prefers class 0; balanced, the two least certain go to class 1.
    probabilities = np.array([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.55, 0.45]], "float32")
    got = losses.balance_assignment(np.log(probabilities)).numpy()
    assert got.tolist() == [0, 0, 1, 1]
    # Confident, already balanced scores are left alone.
    confident = np.log(np.array([[0.99, 0.01], [0.02, 0.98], [0.97, 0.03], [0.01, 0.99]], "float32"))
    assert losses.balance_assignment(confident).numpy().tolist() == [0, 1, 0, 1]


def _stolen_class_case():
    # 4 classes of 25 unlabeled samples each, 5 labeled per class; the
    # labeled samples of class 1 sit close to the unlabeled 0s as well.
    rng = np.random.default_rng(0)
    distances = rng.uniform(1, 2, (100, 20)).astype("float32")
    labeled_labels = np.repeat(np.arange(4), 5)
    truth = np.repeat(np.arange(4), 25)
    distances[labeled_labels[None, :] == truth[:, None]] -= 0.5
    distances[:25, labeled_labels == 1] -= 0.6
    return distances, labeled_labels, truth


def test_balanced_assignment_gives_back_a_stolen_class():
    distances, labeled_labels, truth = _stolen_class_case()
    plain = losses.assign_labels(distances, labeled_labels, 4, k=3).numpy()
    balanced = losses.assign_labels(distances, labeled_labels, 4, k=3, balance="vote").numpy()
    assert np.bincount(plain, minlength=4).max() >= 35  # class 1 takes many 0s
    assert np.bincount(balanced, minlength=4).max() < np.bincount(plain, minlength=4).max()
    assert np.mean(balanced == truth) > np.mean(plain == truth)
    assert np.bincount(balanced, minlength=4)[0] > np.bincount(plain, minlength=4)[0]


def test_gaussian_loss_matches_closed_form():
    rng = np.random.default_rng(3)
    z, mean, prior_mean = rng.normal(size=(3, 4, 6))
    variance, prior_variance = rng.uniform(0.2, 2.0, size=(2, 4, 6))
    expected = np.mean(
        stats.norm.logpdf(z, mean, np.sqrt(variance)).sum(-1)
        - stats.norm.logpdf(z, prior_mean, np.sqrt(prior_variance)).sum(-1)
    )
    args = [a.astype("float32") for a in (z, mean, variance, prior_mean, prior_variance)]
    np.testing.assert_allclose(float(losses.gaussian_loss(*args)), expected, rtol=1e-4)


def test_gaussian_loss_is_zero_when_posterior_equals_prior():
    z = np.ones((2, 3), "float32")
    mean, var = np.zeros((2, 3), "float32"), np.full((2, 3), 0.5, "float32")
    assert abs(float(losses.gaussian_loss(z, mean, var, mean, var))) < 1e-6


def test_categorical_loss_matches_closed_form():
    logits = np.array([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]], "float32")
    q = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    expected = np.mean((q * np.log(q / (1.0 / 3.0))).sum(-1))
    np.testing.assert_allclose(float(losses.categorical_loss(logits)), expected, rtol=1e-5)
    # The uniform posterior has zero KL to the uniform prior.
    assert abs(float(losses.categorical_loss(logits[1:]))) < 1e-6


def test_batch_categorical_loss_is_the_kl_of_the_batch_mean():
    logits = np.array([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]], "float32")
    q = (np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).mean(0)
    expected = (q * np.log(q / (1.0 / 3.0))).sum()
    np.testing.assert_allclose(float(losses.categorical_loss(logits, "batch")), expected, rtol=1e-5)
    # Confident images spread over every category: nothing to pay in the batch, log c per image.
    confident = 20.0 * np.eye(3, dtype="float32")
    assert abs(float(losses.categorical_loss(confident, "batch"))) < 1e-5
    np.testing.assert_allclose(float(losses.categorical_loss(confident)), np.log(3.0), rtol=1e-5)
    # Every image in one category (a collapse): log c, finite.
    np.testing.assert_allclose(float(losses.categorical_loss(confident[[0, 0, 0]], "batch")), np.log(3.0), rtol=1e-4)


def test_reconstruction_loss_reductions():
    images = np.zeros((2, 2, 2, 1), "float32")
    recon = np.full((2, 2, 2, 1), 0.5, "float32")
    # Sum over the 4 pixels, mean over the batch.
    np.testing.assert_allclose(float(losses.reconstruction_loss(images, recon, "mse")), 1.0)
    np.testing.assert_allclose(float(losses.reconstruction_loss(images, recon, "bce")), 4 * np.log(2.0), rtol=1e-5)
    with pytest.raises(ValueError, match="kind must be 'mse' or 'bce', got 'l1'"):
        losses.reconstruction_loss(images, recon, "l1")


def test_assignment_loss_is_cross_entropy():
    logits = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], "float32")
    labels = np.array([2, 0])
    log_q = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = -np.mean(log_q[np.arange(2), labels])
    np.testing.assert_allclose(float(losses.assignment_loss(labels, logits)), expected, rtol=1e-5)


def test_mixture_assignment_takes_the_most_likely_component():
    means = np.array([[0.0, 0.0], [4.0, 0.0]], "float32")
    variances = np.ones((2, 2), "float32")
    points = np.array([[0.5, 0.0], [3.0, 1.0], [2.0, 0.0]], "float32")
    even = np.log(np.array([0.5, 0.5], "float32"))
    assert losses.mixture_assignment(points, means, variances, even).numpy().tolist() == [0, 1, 0]
    # Halfway between the means the heavier component wins ...
    heavy = np.log(np.array([0.2, 0.8], "float32"))
    assert losses.mixture_assignment(points[2:], means, variances, heavy).numpy().tolist() == [1]
    # ... and a wider component takes a far point that is nearer the other mean.
    wide = np.array([[1.0, 1.0], [25.0, 25.0]], "float32")
    far = np.array([[-6.0, 0.0]], "float32")
    assert losses.mixture_assignment(far, means, wide, even).numpy().tolist() == [1]
