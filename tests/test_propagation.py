"""`--propagation_neighbours`: label spreading on a k-NN graph, and the rows L_A and L_M leave out."""

import numpy as np
import pytest

from gmvae_keras import losses, propagation
from gmvae_keras.config import Config, ConfigError
from gmvae_keras.data import make_train_dataset, split_data


def _chains():
    """Two parallel chains of points 0.2 apart, 1.0 between the chains; each labeled at its left end only.

    The right end of chain A lies nearer chain B's labeled point than chain A's: the nearest labeled point names
    it wrongly, the chain names it rightly.
    """
    xs = np.linspace(0.0, 6.0, 31)
    a = np.stack([xs, np.zeros_like(xs)], 1)
    b = np.stack([xs[::-1] + 0.1, np.ones_like(xs)], 1)  # B starts (its labeled end) where A ends
    points = np.concatenate([a, b]).astype(np.float32)
    labels = np.repeat([0, 1], 31)
    return points, labels, np.array([0, 31]), np.array([0, 1])


def test_labels_spread_along_the_chains_where_the_nearest_labeled_point_errs():
    points, labels, labeled, labeled_labels = _chains()
    spread = propagation.spread_labels(points, labeled, labeled_labels, num_classes=2, k=2, iterations=200)
    np.testing.assert_array_equal(spread, labels)
    nearest = np.linalg.norm(points[:, None] - points[labeled][None], axis=-1).argmin(1)
    assert (labeled_labels[nearest] != labels).sum() >= 10


def test_the_neighbour_graph_leaves_each_point_out_of_its_own_neighbours():
    points = np.random.default_rng(0).random((50, 3)).astype(np.float32)
    indices, distances = propagation.neighbour_graph(points, 4, block=7)
    full = np.linalg.norm(points[:, None] - points[None], axis=-1)
    np.fill_diagonal(full, np.inf)
    np.testing.assert_array_equal(np.sort(indices, 1), np.sort(np.argsort(full, 1)[:, :4], 1))
    np.testing.assert_allclose(np.sort(distances, 1), np.sort(full, 1)[:, :4], atol=1e-5)
    with pytest.raises(ValueError, match="k must be in 1..49"):
        propagation.neighbour_graph(points, 50)


def test_a_row_left_out_counts_in_neither_loss():
    rng = np.random.default_rng(1)
    features = rng.normal(size=(8, 3)).astype(np.float32)
    logits = rng.normal(size=(8, 4)).astype(np.float32)
    labels = np.array([0, 1, 2, 0, 1, 2, 3, 3])
    kept = np.array([True, False, True, True, False, True, True, True])
    distances = losses.pairwise_distance(features)
    sub = losses.pairwise_distance(features[kept])
    np.testing.assert_allclose(
        float(losses.lifted_structured_loss(labels, distances, 1.0, kept)),
        float(losses.lifted_structured_loss(labels[kept], sub, 1.0)),
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        float(losses.assignment_loss(labels, logits, kept)),
        float(losses.assignment_loss(labels[kept], logits[kept])),
        rtol=1e-6,
    )


def test_the_batches_carry_the_unlabeled_rows_spread_labels():
    rng = np.random.default_rng(0)
    train = (rng.integers(0, 256, (80, 8, 8, 1), dtype=np.uint8), np.arange(80) % 4)
    data = split_data("toy", train, train, 4, num_labeled=8, seed=0)
    spread = (data.train_labels + 1) % 4
    batch = next(iter(make_train_dataset(data, 16, spread_labels=spread)))
    np.testing.assert_array_equal(batch["spread_labels"].numpy(), (batch["unlabeled_labels"].numpy() + 1) % 4)


def test_the_model_leaves_out_the_rows_whose_vote_disagrees_and_logs_the_share_kept():
    import keras

    from gmvae_keras import GMVAE

    rng = np.random.default_rng(0)
    images = rng.random((12, 28, 28, 1)).astype("float32")
    labels = np.arange(6) % 3
    model = GMVAE(image_shape=(28, 28, 1), num_classes=3, feature_size=8, latent_size=4, k=2, seed=0)
    model.compile(optimizer=keras.optimizers.SGD(0.0), jit_compile=False)
    model.gumbel_softmax.call = lambda inputs, training=None, call=model.gumbel_softmax.call: call(inputs, False)
    model.gaussian_sample.call = lambda inputs, training=None, call=model.gaussian_sample.call: call(inputs, False)
    assigned = model.compute_losses(images, labels)[2].numpy()
    wrong = (assigned + 1) % 3
    terms = model.compute_losses(images, labels, spread_labels=wrong)[0]
    outputs = model(images, training=True)
    labeled_only = losses.assignment_loss(labels, outputs["logits"][6:])
    np.testing.assert_allclose(float(terms["assignment_loss"]), float(labeled_only), rtol=1e-5)
    right = model.compute_losses(images, labels, spread_labels=assigned)[0]
    np.testing.assert_allclose(
        float(right["assignment_loss"]), float(model.compute_losses(images, labels)[0]["assignment_loss"]), rtol=1e-6
    )
    logs = model.train_step({"images": images, "labels": labels, "spread_labels": wrong})
    assert float(logs["assignments_kept"]) == 0.0


def test_propagation_is_refused_where_it_cannot_work():
    with pytest.raises(ConfigError, match="--propagation_neighbours must be >= 0"):
        Config(propagation_neighbours=-1)
    with pytest.raises(ConfigError, match="semi-supervised run on one device"):
        Config(mode="clustering", num_labeled=0, assignment_weight=0, metric_weight=0, propagation_neighbours=5)
    with pytest.raises(ConfigError, match="semi-supervised run on one device"):
        Config(strategy="mirrored", propagation_neighbours=5)
