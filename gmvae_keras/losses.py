"""The loss terms of the paper, one function each.

Reductions (they decide how the weights w_* balance the terms):
every per-sample term is summed over its pixels or latent dimensions and
then averaged over the batch, except `lifted_structured_loss`, which is
averaged over the positive pairs of the batch.

    L = L_R + w_G·L_G + w_C·L_C + w_A·L_A + w_M·L_M

| paper | function | log key | flag |
|---|---|---|---|
| L | `total_loss` | `loss` | |
| L_R | `reconstruction_loss` | `reconstruction_loss` | `--reconstruction` |
| L_G | `gaussian_loss` | `gaussian_loss` | `--gaussian_weight` |
| L_C | `categorical_loss` | `categorical_loss` | `--categorical_weight`, `--categorical_kl` |
| L_A | `assignment_loss` | `assignment_loss` | `--assignment_weight` |
| eq. 8 | `assign_labels`, `vote_shares` | `assignment_accuracy` | `--k`, `--assignment_balance` |
| | `mixture_assignment` (clustering) | | `--feature_clusters` |
| L_M | `lifted_structured_loss` | `metric_loss` | `--metric_weight`, `--margin` |

Beyond the paper, `GMVAE.compute_losses` takes L_A's cross-entropy on a
second view of the images too (`--consistency_shift`, `--consistency_flip`,
`--consistency_share`).

Each function computes in the dtype of its inputs: `GMVAE` gives them
float32 under a mixed precision policy (`GMVAE.call` casts what the 16-bit
networks return), so no loss, distance or vote is taken in 16 bits.
"""

import keras
from keras import ops

from gmvae_keras.settings import ConfigError

_EPSILON = 1e-7
# Stands for log(0) in masked log-sum-exps; finite so that no NaN appears.
_LOG_ZERO = -1e9


def total_loss(terms, gaussian_weight, categorical_weight, assignment_weight, metric_weight):
    """L = L_R + w_G·L_G + w_C·L_C + w_A·L_A + w_M·L_M, from a dict of the unweighted terms.

    L_A and L_M may be absent from `terms` (not computed for the batch): they count as 0.
    """
    total = terms["reconstruction_loss"] + gaussian_weight * terms["gaussian_loss"]
    total += categorical_weight * terms["categorical_loss"]
    if "assignment_loss" in terms:
        total += assignment_weight * terms["assignment_loss"]
    if "metric_loss" in terms:
        total += metric_weight * terms["metric_loss"]
    return total


def reconstruction_loss(images, reconstructions, kind="mse"):
    """L_R: reconstruction error of p(x|z).

    Args:
        images: `[batch, H, W, C]` targets in [0, 1].
        reconstructions: decoder outputs (sigmoid means), same shape.
        kind: "mse" (squared error) or "bce" (binary cross-entropy of the
            pixels as Bernoulli means, clipped away from 0 and 1).

    Returns:
        Scalar: the per-image error summed over all pixels and channels,
        averaged over the batch.
    """
    images = ops.reshape(images, (ops.shape(images)[0], -1))
    reconstructions = ops.reshape(reconstructions, (ops.shape(reconstructions)[0], -1))
    if kind == "mse":
        per_pixel = ops.square(images - reconstructions)
    elif kind == "bce":
        p = ops.clip(reconstructions, _EPSILON, 1.0 - _EPSILON)
        per_pixel = -(images * ops.log(p) + (1.0 - images) * ops.log(1.0 - p))
    else:
        raise ValueError(f"kind must be 'mse' or 'bce', got {kind!r}")
    return ops.mean(ops.sum(per_pixel, axis=-1))


def log_normal(x, mean, variance):
    """log N(x; mean, diag(variance)), summed over the last axis."""
    return -0.5 * ops.sum(
        ops.log(2.0 * 3.141592653589793 * variance) + ops.square(x - mean) / variance,
        axis=-1,
    )


def gaussian_loss(z, mean, variance, prior_mean, prior_variance):
    """L_G: log q(z|x̂,y) − log p(z|y) at the sampled z.

    A one-sample estimate of KL(q(z|x̂,y) ‖ p(z|y)).

    Args:
        z: `[batch, z_sz]` reparameterized sample of q(z|x̂,y).
        mean, variance: parameters of q(z|x̂,y).
        prior_mean, prior_variance: parameters of p(z|y).

    Returns:
        Scalar: summed over the z_sz dimensions, averaged over the batch.
    """
    return ops.mean(log_normal(z, mean, variance) - log_normal(z, prior_mean, prior_variance))


def categorical_loss(logits, kl="image"):
    """L_C: KL(q(y|x̂) ‖ Uniform(c)) = Σ_y q log q + log c.

    With `kl="batch"` (not in the paper) the KL is that of the batch's mean
    q(y|x̂): it is 0 whenever the categories are used equally, however
    confident each image's q(y|x̂) is, so it guards a clustering against
    collapse without pulling every image towards all categories at once.

    Args:
        logits: `[batch, c]` logits of q(y|x̂).
        kl: "image" (the paper's) or "batch".

    Returns:
        Scalar: summed over the c categories, averaged over the batch.
    """
    log_q = ops.log_softmax(logits, axis=-1)
    num_classes = ops.cast(ops.shape(logits)[-1], log_q.dtype)
    if kl == "batch":
        q = ops.mean(ops.exp(log_q), axis=0)
        return ops.sum(q * ops.log(ops.maximum(q, _EPSILON))) + ops.log(num_classes)
    return ops.mean(ops.sum(ops.exp(log_q) * log_q, axis=-1) + ops.log(num_classes))


def assignment_loss(labels, logits):
    """L_A: cross-entropy of q(y|x̂) against true or assigned labels.

    Args:
        labels: `[batch]` int labels (true for labeled samples, from
            `assign_labels` for unlabeled ones).
        logits: `[batch, c]` logits of q(y|x̂).

    Returns:
        Scalar: averaged over the batch.
    """
    return ops.mean(keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))


def mixture_assignment(points, means, variances, log_weights):
    """Each point's most likely component of a diagonal Gaussian mixture: `[n]` int32.

    argmax_y log π_y + log N(point; μ_y, diag σ²_y), without gradient.
    Beyond the paper: in a clustering with `--feature_clusters`, the labels
    that L_A trains q(y|x̂) towards.

    Args:
        points: `[n, d]`.
        means, variances: `[c, d]` the components' parameters.
        log_weights: `[c]` log π.
    """
    points = ops.stop_gradient(points)
    log_p = log_normal(points[:, None, :], means[None], variances[None]) + log_weights
    return ops.cast(ops.argmax(log_p, axis=-1), "int32")


def pairwise_distance(a, b=None):
    """Euclidean distances between the rows of `a` and of `b` (default `a`).

    Computed as |a|² − 2a·b + |b|² (one matmul). The square root is taken
    only where that is positive, so rows that coincide exactly (squared
    distance 0) get distance 0 and a finite, zero gradient. Rounding can leave
    a small positive value for coinciding rows of large norm (about 1e-2 for
    100-dimensional features of norm ~10 in float32): such pairs get a small
    distance instead of 0, and the gradient stays finite.

    Returns:
        `[len(a), len(b)]` distances.
    """
    b = a if b is None else b
    squared = (
        ops.sum(ops.square(a), axis=-1, keepdims=True)
        - 2.0 * ops.matmul(a, ops.transpose(b))
        + ops.transpose(ops.sum(ops.square(b), axis=-1, keepdims=True))
    )
    squared = ops.maximum(squared, 0.0)
    is_zero = squared <= 1e-12
    return ops.where(is_zero, 0.0, ops.sqrt(ops.where(is_zero, 1.0, squared)))


def vote_shares(distances, labeled_labels, num_classes, k, normalize=True):
    """The k-NN vote of eq. 8: `[n_unlabeled, c]` each class's share of the vote.

    Each unlabeled sample's `k` nearest labeled samples, by the Euclidean
    distance of their features, vote for their class with weight 1/distance,
    as in the paper; `normalize=False` returns these summed weights (the
    votes) rather than their shares. A neighbour's weight is
    1/(distance + ε), so an exact match takes nearly the whole vote rather
    than an infinite one. No gradient flows through the vote.

    Args:
        distances: `[n_unlabeled, n_labeled]` feature distances
            (`pairwise_distance(unlabeled_features, labeled_features)`).
        labeled_labels: `[n_labeled]` int labels in `[0, num_classes)`.
        num_classes: c.
        k: number of neighbours, 1 <= k <= n_labeled.
        normalize: shares (True) or votes (False).

    Raises:
        ConfigError: for k > n_labeled (`ModelSettings.validate` checks the
            rest when a `GMVAE` is built).
    """
    num_labeled = distances.shape[-1]
    if num_labeled is not None and k > num_labeled:
        raise ConfigError(f"k={k} is larger than the number of labeled samples ({num_labeled})")
    distances = ops.stop_gradient(distances)
    neg_distances, neighbours = ops.top_k(-distances, k=int(k))
    weights = 1.0 / (-neg_distances + _EPSILON)
    neighbour_labels = ops.take(ops.cast(labeled_labels, "int32"), neighbours)
    votes = ops.sum(ops.one_hot(neighbour_labels, num_classes, dtype=weights.dtype) * weights[..., None], axis=1)
    return votes / ops.sum(votes, axis=-1, keepdims=True) if normalize else votes


def assign_labels(distances, labeled_labels, num_classes, k, balance="none"):
    """Label each unlabeled sample by the k-NN vote among the labeled ones (eq. 8).

    Each takes the class with the largest vote (`vote_shares`). With
    `balance="vote"` (not in the paper) the votes' shares are rebalanced over
    the batch by `balance_assignment`.

    Args:
        distances, labeled_labels, num_classes, k: as `vote_shares`.
        balance: "none" or "vote".

    Returns:
        `[n_unlabeled]` int32 labels.
    """
    if balance == "vote":
        return balance_assignment(ops.log(vote_shares(distances, labeled_labels, num_classes, k) + 1e-4))
    votes = vote_shares(distances, labeled_labels, num_classes, k, normalize=False)
    return ops.cast(ops.argmax(votes, axis=-1), "int32")


def balance_assignment(log_scores, iterations=3):
    """Labels from `[n, c]` class scores, rebalanced so each class gets about n/c of them.

    Sinkhorn-Knopp in log space: alternately rescales the classes (columns)
    to equal totals and the samples (rows) to sum to 1, then takes each row's
    argmax. A class that the scores would give too large a share of the batch
    loses its least certain samples to their next best class. Assumes roughly
    balanced classes.
    """
    n = ops.cast(ops.shape(log_scores)[0], log_scores.dtype)
    c = ops.cast(ops.shape(log_scores)[1], log_scores.dtype)
    log_target = ops.log(n / c)
    for _ in range(int(iterations)):
        log_scores = log_scores - ops.logsumexp(log_scores, axis=0, keepdims=True) + log_target
        log_scores = log_scores - ops.logsumexp(log_scores, axis=1, keepdims=True)
    return ops.cast(ops.argmax(log_scores, axis=-1), "int32")


def lifted_structured_loss(labels, distances, margin):
    """L_M: the lifted structured loss of Song et al. (2016).

    In the form of TensorFlow's metric-learning losses (which the authors'
    code called): for every ordered positive pair (i, j), i ≠ j,

        J_ij = log(Σ_{k ∈ N(i)} exp(margin − D_ik) + Σ_{l ∈ N(j)} exp(margin − D_jl)) + D_ij

    with D the Euclidean distance and N(i) the samples whose label differs
    from i's, and

        loss = Σ_{(i,j)} max(J_ij, 0)² / (number of ordered positive pairs) / 2.

    Log-sum-exps are computed with max subtraction; a batch with no
    negatives or no positive pair gives 0, and coinciding embeddings give
    finite gradients.

    Args:
        labels: `[batch]` int labels.
        distances: `[batch, batch]` distances of the features x̂
            (`pairwise_distance`).
        margin: the margin α.

    Returns:
        Scalar: averaged over the ordered positive pairs, halved.
    """
    labels = ops.reshape(ops.cast(labels, "int32"), (-1,))
    same = ops.equal(labels[:, None], labels[None, :])
    batch_size = ops.shape(labels)[0]
    eye = ops.eye(batch_size, dtype="bool")
    positives = ops.cast(ops.logical_and(same, ops.logical_not(eye)), distances.dtype)
    # log Σ_{k ∈ negatives(i)} exp(margin − D_ik), one value per row.
    negative_logits = ops.where(same, _LOG_ZERO, margin - distances)
    row_terms = ops.logsumexp(negative_logits, axis=1)
    # J_ij = log(Σ_neg(i) + Σ_neg(j)) + D_ij, combined stably in log space.
    j = ops.logaddexp(row_terms[:, None], row_terms[None, :]) + distances
    num_positives = ops.sum(positives)
    total = ops.sum(ops.square(ops.relu(j)) * positives)
    return total / ops.maximum(num_positives, 1.0) / 2.0
