"""Clustering metrics: accuracy under the best cluster-to-class matching, and NMI."""

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import normalized_mutual_info_score


def _check(labels_true, labels_pred):
    labels_true = np.asarray(labels_true).reshape(-1).astype(np.int64)
    labels_pred = np.asarray(labels_pred).reshape(-1).astype(np.int64)
    if labels_true.shape != labels_pred.shape:
        raise ValueError(f"{labels_true.size} true labels for {labels_pred.size} predictions")
    if labels_true.size == 0:
        raise ValueError("no labels to score")
    if labels_true.min() < 0 or labels_pred.min() < 0:
        raise ValueError("labels and cluster ids must be >= 0")
    return labels_true, labels_pred


def contingency(labels_true, labels_pred):
    """`[clusters, classes]` counts of each (cluster, class) pair."""
    labels_true, labels_pred = _check(labels_true, labels_pred)
    table = np.zeros((labels_pred.max() + 1, labels_true.max() + 1), np.int64)
    np.add.at(table, (labels_pred, labels_true), 1)
    return table


def cluster_to_class(labels_true, labels_pred):
    """The one-to-one cluster → class matching that maximises the matches.

    Returns a dict {cluster: class} found with the Hungarian method
    (`scipy.optimize.linear_sum_assignment`); clusters left without a class
    (more clusters than classes) are absent.
    """
    table = contingency(labels_true, labels_pred)
    rows, cols = linear_sum_assignment(table, maximize=True)
    return dict(zip(rows.tolist(), cols.tolist(), strict=True))


def clustering_accuracy(labels_true, labels_pred):
    """ACC (%): the share of samples whose cluster maps to their class under
    the best one-to-one matching of clusters to classes."""
    table = contingency(labels_true, labels_pred)
    rows, cols = linear_sum_assignment(table, maximize=True)
    return 100.0 * table[rows, cols].sum() / table.sum()


def normalized_mutual_info(labels_true, labels_pred):
    """NMI (%), as `sklearn.metrics.normalized_mutual_info_score` (arithmetic mean)."""
    labels_true, labels_pred = _check(labels_true, labels_pred)
    return 100.0 * normalized_mutual_info_score(labels_true, labels_pred)


def smallest_share(predictions, num_classes):
    """The share of the least predicted class, times `num_classes`: 1 when every class is predicted
    equally often, 0 when one is never predicted (another took its images). Reads no labels."""
    counts = np.bincount(np.asarray(predictions).reshape(-1).astype(np.int64), minlength=int(num_classes))
    return float(counts.min() * int(num_classes) / max(counts.sum(), 1))


def uncovered_share(features, labeled_features, num_clusters, seed=0):
    """The share of images in feature clusters that hold no labeled image; reads no labels.

    k-means with `num_clusters` clusters on the features of the images and
    of the labeled images together. An image whose cluster holds no labeled
    image has no labeled example of its kind: the k-NN vote names it after
    another group's labeled images, which is how a class without a labeled
    example of one of its styles merges into a neighbouring class.

    Args:
        features: `[n, d]` features of the images scored.
        labeled_features: `[m, d]` features of the labeled images.
        num_clusters: k-means' k (a few per class).
        seed: seed of k-means' initialisation.
    """
    from sklearn.cluster import KMeans

    features = np.asarray(features, np.float64)
    labeled_features = np.asarray(labeled_features, np.float64)
    if features.ndim != 2 or labeled_features.ndim != 2 or features.shape[1] != labeled_features.shape[1]:
        raise ValueError(f"features {features.shape} and labeled features {labeled_features.shape} do not match")
    if len(features) + len(labeled_features) < num_clusters:
        raise ValueError(f"k-means with k={num_clusters} needs at least {num_clusters} images")
    clusters = KMeans(n_clusters=int(num_clusters), n_init=2, random_state=seed).fit_predict(
        np.concatenate([features, labeled_features])
    )
    return float(np.mean(~np.isin(clusters[: len(features)], clusters[len(features) :])))


def cluster_usage(predictions, num_clusters):
    """exp(entropy) of the clusters' shares of `predictions`: the effective number of clusters used.

    `num_clusters` when every cluster holds an equal share, 1 when all
    predictions fall in one: a collapse of q(y|x̂) shows as a drop.
    """
    shares = np.bincount(np.asarray(predictions).reshape(-1), minlength=int(num_clusters)) / max(
        np.size(predictions), 1
    )
    shares = shares[shares > 0]
    return float(np.exp(-np.sum(shares * np.log(shares))))
