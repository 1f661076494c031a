"""Label spreading on a k-nearest-neighbour graph (Zhou et al., 2004): labels that follow the data's own structure.

Not in the paper (`--propagation_neighbours`). The k-NN vote of eq. 8 names an
unlabeled image after its nearest labeled images; a sub-style of a class that
no labeled image shows (crossed 7s) is then named after the nearest other
class. Spreading the labels along a graph of all training images instead
reaches such a group through the images that link it to its own class.
"""

import numpy as np


def neighbour_graph(points, k, block=2048):
    """`(indices [n, k], distances [n, k])` of each point's `k` nearest other points (Euclidean), in blocks."""
    points = np.asarray(points, np.float32).reshape(len(points), -1)
    n = len(points)
    if not 1 <= k < n:
        raise ValueError(f"k must be in 1..{n - 1}, got {k}")
    squared = np.einsum("ij,ij->i", points, points)
    indices, distances = np.zeros((n, k), np.int64), np.zeros((n, k), np.float32)
    for start in range(0, n, block):
        rows = np.arange(start, min(start + block, n))
        d = squared[rows, None] - 2.0 * points[rows] @ points.T + squared[None, :]
        d[np.arange(len(rows)), rows] = np.inf  # not its own neighbour
        nearest = np.argpartition(d, k, axis=1)[:, :k]
        indices[rows] = nearest
        distances[rows] = np.sqrt(np.maximum(np.take_along_axis(d, nearest, axis=1), 0.0))
    return indices, distances


def spread_labels(points, labeled_indices, labeled_labels, num_classes, k=10, alpha=0.99, iterations=20):
    """`[n]` int32: each point's class after spreading the labeled points' labels over a k-NN graph.

    Edges weigh exp(−d²/σ²) (σ: the median distance to the k-th neighbour),
    made symmetric and normalised, W ← D^-½ W D^-½; the scores F solve
    (I − αW) F = Y with Y one column per class (its labeled points, each
    1/count, so classes weigh equally), by `iterations` conjugate-gradient steps.
    """
    import scipy.sparse as sp
    from scipy.sparse.linalg import cg

    indices, distances = neighbour_graph(points, k)
    n = len(indices)
    sigma = max(float(np.median(distances[:, -1])), 1e-12)
    weights = np.exp(-((distances / sigma) ** 2))
    graph = sp.csr_matrix((weights.ravel(), (np.repeat(np.arange(n), k), indices.ravel())), shape=(n, n))
    graph = graph + graph.T
    scale = sp.diags(1.0 / np.sqrt(np.maximum(np.asarray(graph.sum(axis=1)).ravel(), 1e-12)))
    system = sp.eye(n) - alpha * (scale @ graph @ scale)
    labeled_indices, labeled_labels = np.asarray(labeled_indices), np.asarray(labeled_labels)
    scores = np.zeros((n, num_classes))
    for c in range(num_classes):
        members = labeled_indices[labeled_labels == c]
        target = np.zeros(n)
        target[members] = 1.0 / max(len(members), 1)
        scores[:, c], _ = cg(system, target, maxiter=iterations)
    return scores.argmax(axis=1).astype(np.int32)
