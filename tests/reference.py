"""An independent float64 NumPy reference of the GMVAE's loss on one batch.

Written from the paper's equations as plain loops, sharing no code with
`gmvae_keras.losses`: the tests hold the package's loss terms, the k-NN vote
on the batch's labeled rows and the gradients of one training step to it.
"""

import numpy as np

# The package's epsilon of the vote's 1/distance weights and of the clipped logs.
EPSILON = 1e-7


def log_normal(x, mean, variance):
    """log N(x; mean, diag(variance)), summed over the last axis."""
    return -0.5 * np.sum(np.log(2.0 * np.pi * variance) + (x - mean) ** 2 / variance, axis=-1)


def log_softmax(logits):
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def reconstruction_loss(images, reconstructions, kind):
    """L_R: the per-image error summed over pixels, averaged over the batch."""
    x, p = images.reshape(len(images), -1), reconstructions.reshape(len(images), -1)
    if kind == "mse":
        return np.mean(((x - p) ** 2).sum(axis=1))
    p = np.clip(p, EPSILON, 1.0 - EPSILON)
    return np.mean(-(x * np.log(p) + (1.0 - x) * np.log(1.0 - p)).sum(axis=1))


def gaussian_loss(z, mean, variance, prior_mean, prior_variance):
    """L_G: log q(z|x̂,y) - log p(z|y) at the sampled z, averaged over the batch."""
    return np.mean(log_normal(z, mean, variance) - log_normal(z, prior_mean, prior_variance))


def categorical_loss(logits, kl):
    """L_C: KL(q(y|x̂) ‖ uniform) of each image, or of the batch's mean q(y|x̂)."""
    c = logits.shape[1]
    q = np.exp(log_softmax(logits))
    if kl == "batch":
        mean = q.mean(axis=0)
        return float(np.sum(mean * np.log(np.maximum(mean, EPSILON))) + np.log(c))
    return float(np.mean(np.sum(q * np.log(q), axis=1) + np.log(c)))


def votes(distances, labels, num_classes, k):
    """Eq. 8's votes `[n_unlabeled, c]` from `[n_unlabeled, n_labeled]` distances: k nearest, each 1/distance."""
    out = np.zeros((len(distances), num_classes))
    for row, row_distances in enumerate(np.asarray(distances, np.float64)):
        for j in np.argsort(row_distances, kind="stable")[:k]:
            out[row, labels[j]] += 1.0 / (row_distances[j] + EPSILON)
    return out


def distances(a, b):
    """Euclidean distances between the rows of `a` and of `b`, in float64."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=-1))


def knn_vote(unlabeled, labeled, labels, num_classes, k):
    """Each unlabeled row's class by the k-NN vote among the labeled rows."""
    return votes(distances(unlabeled, labeled), labels, num_classes, k).argmax(axis=1)


def cross_entropy(labels, logits):
    """L_A: mean -log q(label|x̂)."""
    return float(-np.mean(log_softmax(logits)[np.arange(len(labels)), labels]))


def lifted_structured_loss(labels, features, margin, d=None):
    """L_M (Song et al., 2016): a double loop over the ordered positive pairs, halved mean of max(J, 0)².

    `d`: the distance matrix to use instead of the features' own.
    """
    d = distances(features, features) if d is None else np.asarray(d, np.float64)
    n = len(labels)
    total, count = 0.0, 0
    for i in range(n):
        for j in range(n):
            if i == j or labels[i] != labels[j]:
                continue
            s = sum(np.exp(margin - d[i, k]) for k in range(n) if labels[k] != labels[i])
            s += sum(np.exp(margin - d[j, k]) for k in range(n) if labels[k] != labels[j])
            j_ij = np.log(s) + d[i, j] if s > 0 else -np.inf
            total += max(j_ij, 0.0) ** 2
            count += 1
    return total / count / 2.0 if count else 0.0


def gmvae_loss(images, outputs, labels, settings):
    """`(terms, total, assigned)` of one batch whose last `len(labels)` rows are labeled.

    `outputs` holds the networks' outputs (as `GMVAE.call` returns them),
    `settings` the model's (`reconstruction`, `categorical_kl`, the weights,
    `k`, `margin`, `num_classes`).
    """
    o = {name: np.asarray(value, np.float64) for name, value in outputs.items()}
    s = settings
    terms = {
        "reconstruction_loss": reconstruction_loss(
            np.asarray(images, np.float64), o["reconstruction"], s["reconstruction"]
        ),
        "gaussian_loss": gaussian_loss(o["z"], o["z_mean"], o["z_variance"], o["prior_mean"], o["prior_variance"]),
        "categorical_loss": categorical_loss(o["logits"], s["categorical_kl"]),
    }
    assigned = None
    n_u = len(images) - len(labels)
    if len(labels) and (s["assignment_weight"] > 0 or s["metric_weight"] > 0):
        features = o["features"]
        assigned = knn_vote(features[:n_u], features[n_u:], labels, s["num_classes"], s["k"])
        every = np.concatenate([assigned, labels])
        if s["assignment_weight"] > 0:
            terms["assignment_loss"] = cross_entropy(every, o["logits"])
        if s["metric_weight"] > 0:
            terms["metric_loss"] = lifted_structured_loss(every, features, s["margin"])
    weights = {
        "reconstruction_loss": 1.0,
        "gaussian_loss": s["gaussian_weight"],
        "categorical_loss": s["categorical_weight"],
        "assignment_loss": s["assignment_weight"],
        "metric_loss": s["metric_weight"],
    }
    return terms, sum(weights[name] * value for name, value in terms.items()), assigned
