"""How a trained GMVAE names images, and how its names are scored: the one home of prediction.

- Pixels: `unit_float` scales uint8 0-255 to float32 in [0, 1] for every path
  (training batches, validation, scoring, export, the bytes signature).
- Rules (`RULES`): `classifier`, argmax q(y|x̂) (the paper), and `knn`, the
  k-NN vote of eq. 8 among the labeled training images (`rule_probabilities`).
  Each gives a distribution over the classes whose argmax is the prediction.
- Batched inference on numpy arrays: `features_and_logits`, `probabilities`,
  `predict_proba`, `predict_labels`.
- Scores: `error`, `scores` (error, ACC, NMI), `class_names`, and
  `unsupervised_loss`, which reads no labels.

The model's own rule is `model.prediction`; with `knn` the model stores its
labeled images (`GMVAE.set_labeled_set`), and any rule can be asked of any
model given a labeled set.
"""

import weakref

import numpy as np
import tensorflow as tf
from keras import ops

from gmvae_keras import losses, metrics

RULES = ("classifier", "knn")

# Multiplying by the float32 reciprocal, in numpy and in graphs alike, gives the same bits everywhere.
_PIXEL_SCALE = np.float32(1.0 / 255.0)


def unit_float(images):
    """Images as float32 in [0, 1]: uint8 pixels times 1/255, floats as they are; numpy or tensors."""
    if tf.is_tensor(images):
        return tf.cast(images, tf.float32) * _PIXEL_SCALE if images.dtype == tf.uint8 else tf.cast(images, tf.float32)
    images = np.asarray(images)
    return images.astype("float32") * _PIXEL_SCALE if images.dtype == np.uint8 else images.astype("float32")


def class_names(names, num_classes):
    """The classes' names as a tuple of str: `names`, or "0", "1", ... when None."""
    if names is None:
        return tuple(str(c) for c in range(int(num_classes)))
    names = tuple(str(name) for name in names)
    if len(names) != int(num_classes):
        raise ValueError(f"{len(names)} class names for {num_classes} classes")
    return names


def rule_probabilities(rule, features, logits, labeled_features=None, labeled_labels=None, k=None):
    """`[n, c]` the distribution the prediction of `rule` is the argmax of (keras.ops: graphs too).

    `classifier`: q(y|x̂) = softmax(logits). `knn`: each class's share of the
    k-NN vote of the features among `labeled_features` (`losses.vote_shares`).
    """
    if rule == "classifier":
        return ops.softmax(logits, axis=-1)
    if rule != "knn":
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    return losses.vote_shares(losses.pairwise_distance(features, labeled_features), labeled_labels, logits.shape[-1], k)


# One traced inference function per model, dropped with the model.
_CLASSIFY = weakref.WeakKeyDictionary()
_GENERATIVE_LOSS = weakref.WeakKeyDictionary()


def _traced(cache, model, function):
    """`function(model, images)` traced once per model in `cache`.

    The trace reaches the model through a weak reference: a strong one in the
    value would keep the weak key alive, and every model ever scored with it.
    """
    traced = cache.get(model)
    if traced is None:
        model_ref = weakref.ref(model)
        traced = tf.function(lambda images: function(model_ref(), images), reduce_retracing=True)
        cache[model] = traced
    return traced


def _classify(model, images):
    return model.classify(images, training=False)


def _generative_loss(model, images):
    # L_A of a clustering with `--feature_clusters` trains q(y|x̂); the model is chosen by the rest.
    terms = model.compute_losses(images, training=False)[0]
    terms.pop("assignment_loss", None)
    return losses.total_loss(terms, model.gaussian_weight, model.categorical_weight, 0.0, 0.0)


def features_and_logits(model, images, batch_size=1000):
    """`(x̂, logits of q(y|x̂))` of images (uint8 or float in [0, 1]) as numpy arrays, deterministic."""
    function = _traced(_CLASSIFY, model, _classify)
    images = unit_float(images)
    outputs = [function(tf.constant(images[start : start + batch_size])) for start in range(0, len(images), batch_size)]
    if not outputs:
        return np.zeros((0, model.feature_size), "float32"), np.zeros((0, model.num_classes), "float32")
    return tuple(np.concatenate([ops.convert_to_numpy(part[i]) for part in outputs]) for i in (0, 1))


def probabilities(model, features, logits, rule=None, labeled_set=None, batch_size=1000):
    """`rule_probabilities` of `features_and_logits`' outputs, in batches: `[n, c]` numpy.

    Args:
        rule: a rule of `RULES`; None is the model's own (`model.prediction`).
        labeled_set: `(images, labels)` the `knn` rule votes among; None is
            the set a `knn` model stores.
    """
    rule = model.prediction if rule is None else rule
    labeled_features = labeled_labels = None
    if rule == "knn":
        if labeled_set is None:
            if model.prediction != "knn":
                raise ValueError("the knn rule of a classifier model needs a labeled_set")
            labeled_set = (ops.convert_to_numpy(model.labeled_images), ops.convert_to_numpy(model.labeled_image_labels))
        # Encoded once per call: every image is compared with the same labeled features.
        labeled_features = features_and_logits(model, labeled_set[0], batch_size)[0]
        labeled_labels = np.asarray(labeled_set[1], "int32")
    parts = [
        ops.convert_to_numpy(
            rule_probabilities(
                rule,
                features[start : start + batch_size],
                logits[start : start + batch_size],
                labeled_features,
                labeled_labels,
                model.k,
            )
        )
        for start in range(0, len(features), batch_size)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, model.num_classes), "float32")


def predict_proba(model, images, rule=None, labeled_set=None, batch_size=1000):
    """The distribution `predict_labels` takes the argmax of, for images; see `probabilities`."""
    return probabilities(model, *features_and_logits(model, images, batch_size), rule, labeled_set, batch_size)


def predict_labels(model, images, rule=None, labeled_set=None, batch_size=1000):
    """The predicted classes, int32: the argmax of `predict_proba`."""
    return predict_proba(model, images, rule, labeled_set, batch_size).argmax(axis=-1).astype("int32")


def unsupervised_loss(model, images, batch_size=1000):
    """The mean L_R + w_G·L_G + w_C·L_C of images in inference mode: how a clustering run selects its model.

    Reads no labels. Deterministic: y = q(y|x̂) and z = the mean of
    q(z|x̂,y) instead of samples. L_A, which `--feature_clusters` trains
    q(y|x̂) with, is left out.
    """
    function = _traced(_GENERATIVE_LOSS, model, _generative_loss)
    images, total = np.asarray(images), 0.0
    for start in range(0, len(images), batch_size):
        batch = unit_float(images[start : start + batch_size])
        total += float(function(tf.constant(batch))) * len(batch)
    return total / max(len(images), 1)


def error(labels, predicted):
    """Classification error, %."""
    return float(100.0 * np.mean(np.asarray(predicted) != np.asarray(labels)))


def scores(labels, predicted, clustering=False):
    """`error`, ACC and NMI (all %) of predictions; a clustering's categories are not the classes: no error."""
    result = {
        "cluster_accuracy": float(metrics.clustering_accuracy(labels, predicted)),
        "nmi": float(metrics.normalized_mutual_info(labels, predicted)),
    }
    if not clustering:
        result["error"] = error(labels, predicted)
    return result
