"""Which images to label next: a ranking of a run's unlabeled images, and the CSV that carries it.

`rank` reads two signals of a trained model, both without labels:

- *uncertainty*: one minus the margin between the two largest shares of the
  k-NN vote among the labeled images' features (eq. 8), the vote L_A trains
  q(y|x̂) with;
- *coverage*: k-means on x̂ of the unlabeled and the labeled images together.
  In a cluster that holds no labeled image the vote is cast by another
  region's labels: it can be sure and wrong, which is how a class merges into
  its neighbour.

A cluster's priority is its summed uncertainty; the clusters are taken in
decreasing priority, one pick each (the spread rule: no two suggestions share
a cluster while a cluster with unlabeled images has none), so the ranking does
not return near-copies of one confusing image. A covered cluster gives its
most uncertain image, an uncovered one its most typical (nearest its centre:
its label speaks for the cluster).

`signal` says how the two combine. `"uncertainty"`, the default (its second
round had the lowest validation error on the tuning seeds), takes
`num_labeled + count` clusters, all counted as covered: the least sure votes,
one per cluster. `"coverage"` takes as many clusters; at most `num_labeled`
hold a labeled image, so there is an uncovered cluster for every pick, the
typical images of the largest uncovered groups first. `"both"` takes `count` clusters, one per pick: an
uncovered cluster counts every image as fully uncertain, so its priority is
its size and it usually outranks a covered one; every uncovered cluster gets a
pick and the rest go to the covered clusters whose vote is least sure.
`"farthest"` uses neither: `farthest_first` picks, one at a time, the image
farthest in x̂ from the labeled images and the earlier picks (greedy
k-center, the core-set rule), where the vote's nearest labels are farthest
away; no two of its picks are nearer to each other than the last pick's score.

The CSV (`write_csv`, `read_indices`): `rank`, then `index` (the row of a
built-in data set's official train set, which names the image whatever the
seed's validation split) or `path` (an image file of a folder), then
`predicted`, `score` (the pick's cluster priority over the unlabeled images:
the share of expected wrong votes it addresses; `farthest`: its distance in
x̂ to the nearest labeled image or earlier pick), `signal` (`uncovered`,
`uncertain`, `disagreement` where the vote and q(y|x̂) name different
classes, or `farthest`) and `cluster` (-1 for `farthest`).
"""

import csv
from pathlib import Path

import numpy as np

from gmvae_keras import losses

# The rankings of `rank`; the first is the default of `rank`, `suggest` and tools/simulate_labeling.py.
SIGNALS = ("uncertainty", "both", "coverage", "farthest")


class LabelingError(ValueError):
    """A ranking that cannot be made, or a CSV that cannot be read; the message is one line."""


def check_count(count, pool):
    """LabelingError unless 1 <= `count` <= `pool`, the unlabeled images there are to suggest."""
    if not 1 <= count <= pool:
        raise LabelingError(f"--count={count}: must be in 1..{pool}, the run's unlabeled images")


def vote_uncertainty(features, labeled_features, labeled_labels, num_classes, k, batch_size=1000):
    """`(uncertainty [n], vote's class [n])`: one minus the margin of the k-NN vote's two largest shares."""
    labeled_features = np.asarray(labeled_features, np.float32)
    shares = [
        np.asarray(
            losses.vote_shares(
                losses.pairwise_distance(
                    np.asarray(features[start : start + batch_size], np.float32), labeled_features
                ),
                np.asarray(labeled_labels, np.int32),
                num_classes,
                min(int(k), len(labeled_features)),
            )
        )
        for start in range(0, len(features), batch_size)
    ]
    shares = np.concatenate(shares) if shares else np.zeros((0, num_classes), np.float32)
    top = np.sort(shares, axis=-1)
    margin = top[:, -1] - (top[:, -2] if num_classes > 1 else 0.0)
    return (1.0 - margin).astype(np.float64), shares.argmax(axis=-1)


def rank(
    features, labeled_features, labeled_labels, classifier_classes, count, num_classes, k, signal=SIGNALS[0], seed=0
):
    """The `count` unlabeled images to label next, best first.

    Args:
        features: `[n, d]` x̂ of the unlabeled images.
        labeled_features: `[m, d]` x̂ of the labeled images.
        labeled_labels: `[m]` their classes.
        classifier_classes: `[n]` argmax q(y|x̂) of the unlabeled images.
        count: suggestions wanted, 1 <= count <= n.
        num_classes, k: the classes and the vote's neighbours.
        signal: "uncertainty" (every cluster counts as covered), "coverage"
            (every image counts as certain outside the uncovered clusters,
            which are ranked by size), both with `m + count` clusters;
            "both" with `count` clusters; "farthest": `farthest_first`. The
            module docstring says more.
        seed: k-means' seed.

    Returns:
        A dict of `[count]` arrays: `index` (rows of `features`), `score`,
        `signal` (str) and `cluster`.
    """
    from sklearn.cluster import KMeans

    features = np.asarray(features, np.float32)
    n, m = len(features), len(labeled_features)
    if signal not in SIGNALS:
        raise LabelingError(f"signal must be one of {', '.join(SIGNALS)}, got {signal!r}")
    check_count(count, n)
    if m == 0:
        raise LabelingError("the run has no labeled image to vote with")
    if signal == "farthest":
        picks, radius = farthest_first(features, labeled_features, count)
        return {"index": picks, "score": radius, "signal": np.full(count, "farthest"), "cluster": np.full(count, -1)}
    uncertainty, vote = vote_uncertainty(features, labeled_features, labeled_labels, num_classes, k)
    everything = np.concatenate([features, np.asarray(labeled_features, np.float32)]).astype(np.float64)
    # With m + count clusters at least count hold no labeled image: enough for `coverage` to fill every pick,
    # too many for `both`, whose covered clusters would then never get one.
    num_clusters = count if signal == "both" else m + count
    kmeans = KMeans(n_clusters=num_clusters, n_init=1, random_state=seed).fit(everything)
    clusters, labeled_clusters = kmeans.labels_[:n], kmeans.labels_[n:]
    uncovered = ~np.isin(clusters, labeled_clusters)
    if signal == "uncertainty":
        uncovered[:] = False
    weight = np.where(uncovered, 1.0, uncertainty if signal != "coverage" else 0.0)
    # Equal priorities (covered clusters under "coverage") go by size.
    priority = np.bincount(clusters, weights=weight + 1e-6, minlength=num_clusters)
    # Typical: nearest the centre. Ties and the second pass go by uncertainty.
    distance = np.linalg.norm(everything[:n] - kmeans.cluster_centers_[clusters], axis=1)
    preference = np.where(uncovered, -distance, uncertainty)
    picks = _one_per_cluster(clusters, priority, preference, count)
    kinds = np.where(
        uncovered[picks], "uncovered", np.where(vote[picks] != classifier_classes[picks], "disagreement", "uncertain")
    )
    return {
        "index": picks,
        "score": priority[clusters[picks]] / n,
        "signal": kinds,
        "cluster": clusters[picks],
    }


def farthest_first(features, labeled_features, count, batch_size=1000):
    """`(rows, distances)`: `count` rows of `features`, each the farthest from the labeled features and the rows
    before it, with that distance (non-increasing: every two rows are at least the last distance apart)."""
    features, labeled_features = np.asarray(features, np.float32), np.asarray(labeled_features, np.float32)
    nearest = np.concatenate(
        [
            np.asarray(losses.pairwise_distance(features[start : start + batch_size], labeled_features)).min(axis=1)
            for start in range(0, len(features), batch_size)
        ]
    ).astype(np.float64)
    rows, distances = [], []
    for _ in range(count):
        row = int(nearest.argmax())
        rows.append(row)
        distances.append(nearest[row])
        nearest = np.minimum(nearest, np.linalg.norm(features - features[row], axis=1))
        nearest[row] = -np.inf  # never twice, even among duplicates at distance 0
    return np.array(rows, np.int64), np.array(distances)


def _one_per_cluster(clusters, priority, preference, count):
    """`count` rows: each cluster's preferred row in decreasing cluster priority, then each one's next, and so on."""
    order = np.lexsort((-preference, clusters))  # grouped by cluster, the preferred row first
    grouped = clusters[order]
    starts = np.r_[0, np.flatnonzero(np.diff(grouped)) + 1]
    turn = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    return order[np.lexsort((-priority[grouped], turn))[:count]]


def write_csv(out, picks, predicted, class_names, names=None, rows=None):
    """Writes `rank`'s picks to the text stream `out`.

    Args:
        picks: `rank`'s output; its `index` are rows of the unlabeled images.
        predicted: the run's predicted class of every unlabeled image.
        class_names: the names of the classes.
        names: the unlabeled images' files (a `path` column), or None.
        rows: the unlabeled images' official train-set rows (an `index` column), or None (`index` is `rank`'s own).
    """
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["rank", "index" if names is None else "path", "predicted", "score", "signal", "cluster"])
    for position, pick in enumerate(picks["index"]):
        where = str(names[pick]) if names is not None else int(pick if rows is None else rows[pick])
        writer.writerow(
            [
                position + 1,
                where,
                class_names[predicted[pick]],
                f"{picks['score'][position]:.6f}",
                picks["signal"][position],
                int(picks["cluster"][position]),
            ]
        )


def read_indices(path):
    """The official train-set rows of a CSV with an `index` column (`write_csv`'s), sorted and unique.

    Raises:
        LabelingError: no such file, no `index` column, or a value that is not a non-negative integer.
    """
    path = Path(path)
    try:
        # utf-8-sig: a spreadsheet's export may start with a byte-order mark.
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise LabelingError(f"cannot read {path}: {e}") from None
    if "index" not in (reader.fieldnames or []):
        raise LabelingError(f"{path} has no `index` column (the official train-set rows of a built-in data set)")
    if not rows:
        raise LabelingError(f"{path} lists no row")
    try:
        indices = np.array([int(row["index"]) for row in rows], np.int64)
    except (TypeError, ValueError, OverflowError):
        raise LabelingError(f"{path}: every `index` must be an integer row of the official train set") from None
    if indices.min() < 0:
        raise LabelingError(f"{path}: an `index` is negative ({indices.min()})")
    return np.unique(indices)
