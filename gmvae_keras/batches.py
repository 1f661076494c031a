"""How a training batch is laid out: the one home of its checks and of the steps of an epoch.

A batch of `batch_size` rows holds its unlabeled rows first and its labeled
rows last (half by default, none in a clustering). Under a `tf.distribute`
strategy the global batch is split evenly among the replicas, each with an
unlabeled and a labeled part of its own. Plain Python: `Config` checks its
flags with it before any data is read; the data pipeline and training check
again once the data's classes and the strategy's replicas are known.
"""

import numpy as np

from gmvae_keras.settings import ConfigError


def batch_layout(
    batch_size, num_classes=None, labeled_per_batch=None, num_labeled=None, k=None, replicas=1, num_train=None
):
    """One replica's `(n_unlabeled, n_labeled)`, or ConfigError in one line naming the flag to change.

    Args:
        batch_size: the global batch, an even integer >= 2.
        num_classes: each replica's labeled part holds one image per class at
            least (None: not known yet).
        labeled_per_batch: labeled rows of the global batch; None or 0 is half.
        num_labeled: size of the labeled set; 0 leaves no labeled rows (None: some).
        k: neighbours of the k-NN vote, at most a replica's labeled rows (None: not checked).
        replicas: the replicas the batch is split among.
        num_train: size of the unlabeled stream, which must fill the
            unlabeled rows of one global batch (None: not checked).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 2:
        raise ConfigError(f"--batch_size must be an integer >= 2, got {batch_size!r}")
    if batch_size % 2:
        raise ConfigError(f"--batch_size must be even (half unlabeled, half labeled), got {batch_size}")
    labeled = 0 if num_labeled == 0 else int(labeled_per_batch or batch_size // 2)
    if num_labeled != 0 and not 1 <= labeled < batch_size:
        raise ConfigError(f"--labeled_per_batch={labeled} leaves no unlabeled image in a batch of {batch_size}")
    if batch_size % replicas or labeled % replicas:
        raise ConfigError(
            f"--batch_size={batch_size} and its labeled part ({labeled}) must divide evenly "
            f"among the {replicas} replicas"
        )
    batch, labeled = batch_size // replicas, labeled // replicas
    part = "the labeled part of a batch" if replicas == 1 else f"the labeled part of each of the {replicas} replicas"
    if labeled and k is not None and k > labeled:
        raise ConfigError(f"--k={k} is larger than {part} ({labeled})")
    if labeled and num_classes is not None and labeled < num_classes:
        raise ConfigError(
            f"{part} ({labeled}) cannot hold one example of each of the {num_classes} classes; "
            "raise --batch_size or --labeled_per_batch"
        )
    unlabeled = batch - labeled
    if num_train is not None and unlabeled * replicas > num_train:
        raise ConfigError(
            f"the unlabeled part of a batch ({unlabeled * replicas}) exceeds the {num_train} train images; "
            "lower --batch_size"
        )
    return unlabeled, labeled


def steps_per_epoch(num_train, n_unlabeled, replicas=1, pipelines=1):
    """Global steps of one pass over the unlabeled stream of `num_train` images.

    Each of `pipelines` input pipelines (one per machine) walks its share of
    the stream, `n_unlabeled` rows for each of its replicas a step.
    """
    return (num_train // pipelines) // (n_unlabeled * (replicas // pipelines))
