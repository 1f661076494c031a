"""`tf.data` pipelines: semi-supervised training batches and evaluation batches."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from gmvae_keras import batches
from gmvae_keras.data.errors import DataError, check_integer
from gmvae_keras.data.perturbations import perturb
from gmvae_keras.prediction import unit_float


def _batch_layout(data, batch_size, labeled_per_batch):
    return batches.batch_layout(
        batch_size, data.num_classes, labeled_per_batch, data.num_labeled, num_train=len(data.train_labels)
    )


def steps_per_epoch(data, batch_size, labeled_per_batch=None):
    """Batches in one pass over the unlabeled stream of `data` on one device (`batches.steps_per_epoch`)."""
    n_u, _ = _batch_layout(data, batch_size, labeled_per_batch)
    return batches.steps_per_epoch(len(data.train_labels), n_u)


# The pipeline's random streams, each keyed by the seed and the epoch alone.
# Stream 2 perturbed the training images themselves, an option since removed;
# the others keep their numbers, so that a seed draws as it did.
_UNLABELED, _LABELED, _CONSISTENCY = 0, 1, 3


def _stream_key(seed, stream, shard_index=0):
    """The stateless seed (shape [2]) of one random stream of the pipeline of `seed`."""
    seed = check_integer("seed", seed, minimum=0)
    state = np.random.SeedSequence([seed, 2, stream, shard_index]).generate_state(2)
    return tf.constant(state & 0x7FFFFFFF, tf.int64)


def _fold(key, *values):
    for value in values:
        key = tf.random.experimental.stateless_fold_in(key, tf.cast(value, tf.int64))
    return key


def _walk(key, epoch, n, picked, steps, rows):
    """`[steps, rows]` indices into `range(n)` for one epoch.

    The rows walk through the `picked` slice of a permutation of `range(n)`,
    then of a fresh one, and so on: pass `p` of epoch `epoch` permutes with
    the seed `(key, epoch, p)`, whatever came before.
    """
    length = len(range(n)[picked])
    passes = -(-steps * rows // length)

    def one_pass(p):
        return tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int64), _fold(key, epoch, p))[picked]

    indices = tf.map_fn(one_pass, tf.range(passes, dtype=tf.int64), fn_output_signature=tf.int64)
    return tf.reshape(tf.reshape(indices, [-1])[: steps * rows], [steps, rows])


def balanced_pool(labeled_indices, labeled_labels):
    """The labeled indices the labeled rows walk through: class-balanced.

    Equal classes: `labeled_indices` themselves. Unequal ones: each class's
    indices, in order and cycling, repeated up to the largest class's count,
    so every class supplies an equal share of the labeled rows (a class of
    10 images among classes of 100 has each image drawn 10 times as often).
    """
    labeled_indices = np.asarray(labeled_indices, np.int64)
    labeled_labels = np.asarray(labeled_labels)
    classes, counts = np.unique(labeled_labels, return_counts=True)
    if len(classes) == 0 or counts.min() == counts.max():
        return labeled_indices
    return np.concatenate([np.resize(labeled_indices[labeled_labels == c], counts.max()) for c in classes])


def make_train_dataset(
    data,
    batch_size,
    labeled_per_batch=None,
    seed=0,
    num_shards=1,
    shard_index=0,
    consistency_shift=0,
    consistency_flip=False,
    epoch=0,
    epochs=None,
    steps=None,
):
    """The semi-supervised training batches of epoch `epoch`, or of epochs `epoch` to `epochs - 1` in turn.

    Each element is a dict: `images`, float32 [B, H, W, C] in [0, 1], the
    first `n_u = B - n_l` rows unlabeled and the last `n_l` labeled;
    `labels`, int32 [n_l]; `unlabeled_labels`, int32 [n_u], the unlabeled
    rows' true labels for monitoring only, absent when some are unknown (-1).

    An epoch is `steps` batches, by default one pass over the unlabeled
    stream (`N_train // n_u` full batches; the remainder is dropped). The
    unlabeled rows walk through a seeded permutation of the train part, a
    fresh one for each further pass. The labeled rows cycle through seeded
    permutations of the labeled set, drawn class-balanced (`balanced_pool`).
    Every random draw of an epoch is a function of `seed` and the epoch
    alone, so a resumed run reads what an uninterrupted one reads. Shapes are
    static. `consistency_shift`/`consistency_flip` add `views` (`_assembler`).

    With `num_shards > 1` (one input pipeline per machine) every shard walks
    the same permutations and keeps every `num_shards`-th unlabeled index
    from `shard_index` on; each draws its labeled images with its own seed.
    """
    if not 0 <= shard_index < num_shards:
        raise DataError(f"shard_index must be in [0, {num_shards}), got {shard_index}")
    if consistency_shift < 0:
        raise DataError(f"consistency_shift must be >= 0, got {consistency_shift}")
    n_u, n_l = _batch_layout(data, batch_size, labeled_per_batch)
    n_train = len(data.train_labels)
    per_pass, epoch, epochs, steps = _schedule(n_train, n_u, num_shards, shard_index, epoch, epochs, steps)
    key_u = _stream_key(seed, _UNLABELED)
    key_l = _stream_key(seed, _LABELED, shard_index)
    unlabeled_slice = slice(shard_index, shard_index + per_pass * n_u * num_shards, num_shards)
    pool = balanced_pool(data.labeled_indices, data.labeled_labels) if n_l else np.zeros(0, np.int64)
    labeled_idx = tf.convert_to_tensor(pool, dtype=tf.int64)

    def one_epoch(e):
        u_idx = _walk(key_u, e, n_train, unlabeled_slice, steps, n_u)
        if n_l:
            l_idx = tf.gather(labeled_idx, _walk(key_l, e, len(pool), slice(None), steps, n_l))
        else:
            l_idx = tf.zeros((steps, 0), tf.int64)
        return tf.data.Dataset.from_tensor_slices((tf.fill([steps], e), tf.range(steps, dtype=tf.int64), u_idx, l_idx))

    assemble = _assembler(data, consistency_shift, consistency_flip, _stream_key(seed, _CONSISTENCY))
    ds = tf.data.Dataset.range(epoch, max(epoch, epochs)).flat_map(one_epoch)
    ds = ds.map(assemble, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    # flat_map hides the length; Keras and the tests read it.
    ds = ds.apply(tf.data.experimental.assert_cardinality(max(0, epochs - epoch) * steps))
    return ds.prefetch(tf.data.AUTOTUNE)


def _schedule(n_train, n_u, num_shards, shard_index, epoch, epochs, steps):
    """`(full batches of a pass over this shard, first epoch, end epoch, steps of an epoch)`, checked."""
    # The unlabeled indices of this shard in a pass, rounded down to full batches.
    per_pass = len(range(shard_index, n_train, num_shards)) // n_u
    if per_pass == 0:
        raise DataError(f"the unlabeled part of a batch ({n_u}) exceeds the train images of one of {num_shards} shards")
    epoch = check_integer("epoch", epoch, minimum=0)
    epochs = epoch + 1 if epochs is None else check_integer("epochs", epochs, minimum=0)
    steps = per_pass if steps is None else check_integer("steps", steps, minimum=1)
    return per_pass, epoch, epochs, steps


def _assembler(data, consistency_shift, consistency_flip, key_consistency):
    """The map from `(epoch, step, unlabeled indices, labeled indices)` to a batch dict of `data`.

    With `consistency_shift > 0` or `consistency_flip` the batch holds
    `views`: float32 [B, H, W, C], a second copy of `images` translated by up
    to `consistency_shift` pixels per axis (`random_shift`) and/or mirrored
    left-right with probability 1/2 (`random_flip`), drawn from the random
    stream `key_consistency` folded with the epoch and step.
    """
    images = tf.convert_to_tensor(data.train_images, dtype=tf.uint8)
    labels = tf.convert_to_tensor(data.train_labels, dtype=tf.int32)
    known = bool(np.all(np.asarray(data.train_labels) >= 0))

    def assemble(e, step, u_idx, l_idx):
        element = {
            "images": unit_float(tf.gather(images, tf.concat([u_idx, l_idx], axis=0))),
            "labels": tf.gather(labels, l_idx),
        }
        if known:
            element["unlabeled_labels"] = tf.gather(labels, u_idx)
        if consistency_shift or consistency_flip:
            element["views"] = perturb(
                element["images"], consistency_shift, consistency_flip, _fold(key_consistency, e, step)
            )
        return element

    return assemble


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
        convert = unit_float
    else:
        x = tf.convert_to_tensor(images, dtype=tf.float32)
        convert = tf.identity
    y = tf.convert_to_tensor(labels, dtype=tf.int32)

    def take(start):
        stop = tf.minimum(start + batch_size, n)
        return convert(x[start:stop]), y[start:stop]

    ds = tf.data.Dataset.range(0, n, batch_size).map(take, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)
