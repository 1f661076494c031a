"""`tf.data` pipelines: semi-supervised training batches and evaluation batches."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from gmvae_keras.data.errors import DataError, check_integer
from gmvae_keras.data.perturbations import _with_perturbation


def validate_batch(
    batch_size,
    num_classes,
    labeled_per_batch=None,
    num_labeled=None,
    num_train=None,
):
    """Checks a batch layout and returns `(n_unlabeled, n_labeled)`.

    A batch of `batch_size` rows holds `n_unlabeled` unlabeled rows and
    `n_labeled` labeled rows (default `batch_size // 2`; 0 when
    `num_labeled == 0`).

    Args:
        batch_size: a positive even integer.
        num_classes: number of classes; the labeled part must hold at least
            one image per class.
        labeled_per_batch: labeled rows per batch, or None for half.
        num_labeled: size of the labeled set (None: assume > 0).
        num_train: size of the unlabeled stream (None: not checked); it must
            fill at least one batch.

    Raises:
        DataError: a bad layout.
    """
    batch_size = check_integer("batch_size", batch_size, minimum=2)
    if batch_size % 2:
        raise DataError(f"batch_size must be even, got {batch_size}")
    if num_labeled is not None and num_labeled == 0:
        n_l = 0
    elif labeled_per_batch is None:
        n_l = batch_size // 2
    else:
        n_l = check_integer("labeled_per_batch", labeled_per_batch)
        if not 1 <= n_l < batch_size:
            raise DataError(f"labeled_per_batch must be in 1..{batch_size - 1} for batch_size={batch_size}, got {n_l}")
    if n_l and n_l < num_classes:
        raise DataError(
            f"the labeled part of a batch ({n_l} of batch_size={batch_size}) "
            f"must hold at least one image per class ({num_classes})"
        )
    n_u = batch_size - n_l
    if num_train is not None and n_u > num_train:
        raise DataError(f"the unlabeled part of a batch ({n_u}) exceeds the {num_train} train images; lower batch_size")
    return n_u, n_l


def _batch_layout(data, batch_size, labeled_per_batch):
    return validate_batch(
        batch_size,
        data.num_classes,
        labeled_per_batch=labeled_per_batch,
        num_labeled=data.num_labeled,
        num_train=len(data.train_labels),
    )


def steps_per_epoch(data, batch_size, labeled_per_batch=None):
    """Batches in one pass over the unlabeled stream: `N_train // n_u`."""
    n_u, _ = _batch_layout(data, batch_size, labeled_per_batch)
    return len(data.train_labels) // n_u


def _stream_seeds(seed):
    """Two independent tf.data op seeds derived from `seed`."""
    seed = check_integer("seed", seed, minimum=0)
    state = np.random.SeedSequence([seed, 2]).generate_state(2)
    return int(state[0] & 0x7FFFFFFF), int(state[1] & 0x7FFFFFFF)


def _scale(images_uint8):
    return tf.cast(images_uint8, tf.float32) * (1.0 / 255.0)


def make_train_dataset(
    data,
    batch_size,
    labeled_per_batch=None,
    seed=0,
    augment_shift=0,
    augment_flip=False,
    num_shards=1,
    shard_index=0,
    consistency_shift=0,
    consistency_flip=False,
):
    """One epoch of semi-supervised training batches.

    Each element is a dict:
      * `images`: float32 [B, H, W, C] in [0, 1]; the first
        `n_u = B - n_l` rows are unlabeled images, the last `n_l` rows are
        labeled images.
      * `labels`: int32 [n_l], labels of the labeled rows.
      * `unlabeled_labels`: int32 [n_u], true labels of the unlabeled rows
        (for monitoring only).

    The unlabeled rows walk through a fresh seeded permutation of the train
    part on every iteration of the dataset (`N_train // n_u` full batches;
    the remainder is dropped). The labeled rows cycle through seeded
    permutations of the fixed labeled set, independently of the unlabeled
    stream. All shapes are static.

    `augment_shift > 0` translates every training image (labeled and
    unlabeled) by a random offset of up to that many pixels per axis
    (`random_shift`); the paper uses no augmentation (0). `augment_flip`
    mirrors every training image left-right with probability 1/2
    (`random_flip`; off in the paper).

    `consistency_shift > 0` or `consistency_flip` (not in the paper) adds
    `views`: float32 [B, H, W, C], a second copy of `images` shifted by up to
    `consistency_shift` pixels and/or mirrored with probability 1/2, drawn
    from a random stream of its own (the model's L_A is then taken on it).

    With `num_shards > 1` (one input pipeline per worker of a distributed
    run) every shard walks the same seeded permutation and keeps every
    `num_shards`-th unlabeled index starting at `shard_index`, so the shards
    split each epoch between them; each shard draws its labeled images with
    its own seed.
    """
    if not 0 <= shard_index < num_shards:
        raise DataError(f"shard_index must be in [0, {num_shards}), got {shard_index}")
    for name, value in (("augment_shift", augment_shift), ("consistency_shift", consistency_shift)):
        if value < 0:
            raise DataError(f"{name} must be >= 0, got {value}")
    n_u, n_l = _batch_layout(data, batch_size, labeled_per_batch)
    seed_u, seed_l = _stream_seeds(seed)
    n_train = len(data.train_labels)
    images = tf.convert_to_tensor(data.train_images, dtype=tf.uint8)
    labels = tf.convert_to_tensor(data.train_labels, dtype=tf.int32)

    unlabeled = (
        tf.data.Dataset.range(n_train)
        .shuffle(n_train, seed=seed_u, reshuffle_each_iteration=True)
        .shard(num_shards, shard_index)
        .batch(n_u, drop_remainder=True)
    )
    if n_l:
        n_lab = data.num_labeled
        labeled_idx = tf.convert_to_tensor(data.labeled_indices, dtype=tf.int64)
        labeled = (
            tf.data.Dataset.range(n_lab)
            .shuffle(n_lab, seed=seed_l + shard_index, reshuffle_each_iteration=True)
            .repeat()
            .batch(n_l, drop_remainder=True)
        )
        ds = tf.data.Dataset.zip((unlabeled, labeled))

        def assemble(u_idx, l_pos):
            l_idx = tf.gather(labeled_idx, l_pos)
            idx = tf.concat([u_idx, l_idx], axis=0)
            return {
                "images": _scale(tf.gather(images, idx)),
                "labels": tf.gather(labels, l_idx),
                "unlabeled_labels": tf.gather(labels, u_idx),
            }

    else:
        ds = unlabeled
        empty = tf.zeros((0,), tf.int32)

        def assemble(u_idx):
            return {
                "images": _scale(tf.gather(images, u_idx)),
                "labels": empty,
                "unlabeled_labels": tf.gather(labels, u_idx),
            }

    ds = ds.map(assemble, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if augment_shift or augment_flip:
        ds = _with_perturbation(ds, "images", augment_shift, augment_flip, seed_u + 1)
    if consistency_shift or consistency_flip:
        ds = _with_perturbation(ds, "views", consistency_shift, consistency_flip, seed_u + 2)
    return ds.prefetch(tf.data.AUTOTUNE)


def make_eval_dataset(images, labels, batch_size):
    """`(float32 images in [0, 1], int32 labels)` batches, in order.

    The last partial batch is kept.
    """
    batch_size = check_integer("batch_size", batch_size, minimum=1)
    images = np.asarray(images)
    labels = np.asarray(labels).reshape(-1)
    if images.ndim == 3:
        images = images[..., None]
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{labels.shape[0]} labels for {images.shape[0]} images")
    n = images.shape[0]
    if images.dtype == np.uint8:
        x = tf.convert_to_tensor(images, dtype=tf.uint8)
        convert = _scale
    else:
        x = tf.convert_to_tensor(images, dtype=tf.float32)
        convert = tf.identity
    y = tf.convert_to_tensor(labels, dtype=tf.int32)

    def take(start):
        stop = tf.minimum(start + batch_size, n)
        return convert(x[start:stop]), y[start:stop]

    ds = tf.data.Dataset.range(0, n, batch_size).map(take, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)
