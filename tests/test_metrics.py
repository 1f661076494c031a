import numpy as np
import pytest
from sklearn.metrics import normalized_mutual_info_score

from gmvae_keras.metrics import (
    cluster_to_class,
    clustering_accuracy,
    contingency,
    normalized_mutual_info,
    smallest_share,
    uncovered_share,
)


def test_permuted_perfect_clustering_scores_100():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, size=500)
    permutation = rng.permutation(10)
    clusters = permutation[labels]
    assert clustering_accuracy(labels, clusters) == pytest.approx(100.0)
    assert normalized_mutual_info(labels, clusters) == pytest.approx(100.0)
    mapping = cluster_to_class(labels, clusters)
    assert all(mapping[permutation[c]] == c for c in range(10))


def test_accuracy_matches_a_hand_computed_confusion():
    # Clusters 0, 1, 2 against classes 0, 1, 2:
    #   cluster 0: 3× class 1, 1× class 0
    #   cluster 1: 2× class 0, 1× class 2
    #   cluster 2: 2× class 2, 1× class 1
    # Best matching 0→1, 1→0, 2→2 gets 3 + 2 + 2 = 7 of 10.
    labels = [1, 1, 1, 0, 0, 0, 2, 2, 2, 1]
    clusters = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert contingency(labels, clusters).tolist() == [[1, 3, 0], [2, 0, 1], [0, 1, 2]]
    assert clustering_accuracy(labels, clusters) == pytest.approx(70.0)
    assert cluster_to_class(labels, clusters) == {0: 1, 1: 0, 2: 2}


def test_more_clusters_than_classes():
    labels = [0, 0, 1, 1]
    clusters = [0, 3, 1, 1]
    assert clustering_accuracy(labels, clusters) == pytest.approx(75.0)


def test_nmi_agrees_with_scikit_learn():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 5, size=300)
    clusters = np.where(rng.random(300) < 0.7, labels, rng.integers(0, 7, size=300))
    expected = 100.0 * normalized_mutual_info_score(labels, clusters)
    assert normalized_mutual_info(labels, clusters) == pytest.approx(expected)
    assert 0 < expected < 100


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="3 true labels for 2 predictions"):
        clustering_accuracy([0, 1, 2], [0, 1])
    with pytest.raises(ValueError, match="no labels"):
        normalized_mutual_info([], [])
    with pytest.raises(ValueError, match=">= 0"):
        clustering_accuracy([0, -1], [0, 1])


def _blobs(num_groups, per_group, seed=0):
    """Well separated Gaussian blobs in 5 dimensions and their group ids."""
    rng = np.random.default_rng(seed)
    centres = 20.0 * rng.standard_normal((num_groups, 5))
    groups = np.repeat(np.arange(num_groups), per_group)
    return centres[groups] + rng.standard_normal((len(groups), 5)), groups


def test_smallest_share_is_one_when_balanced_and_zero_for_a_missing_class():
    assert smallest_share([0, 1, 2, 0, 1, 2], 3) == pytest.approx(1.0)
    assert smallest_share([0, 0, 1, 1], 3) == pytest.approx(0.0)
    # Class 1 predicted for 1 of 8 images among 4 classes: 1/8 · 4.
    assert smallest_share([0, 0, 0, 1, 2, 2, 3, 3], 4) == pytest.approx(0.5)


def test_uncovered_share_counts_the_images_of_groups_without_a_labeled_image():
    features, groups = _blobs(6, 40)
    # Labeled images in groups 0-3 only: groups 4 and 5 (a third of the images) have no labeled example.
    labeled = features[np.isin(groups, [0, 1, 2, 3])][::8]
    assert uncovered_share(features, labeled, 6) == pytest.approx(1 / 3)
    assert uncovered_share(features, features[::8], 6) == 0.0
    with pytest.raises(ValueError, match="do not match"):
        uncovered_share(features, labeled[:, :3], 6)
