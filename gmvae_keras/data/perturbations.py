"""Seeded random shifts and left-right flips: the second view of each training image for L_A (consistency)."""

from __future__ import annotations

import tensorflow as tf


def random_shift(images, max_shift, seed):
    """Translates each image of a `[B, H, W, C]` batch by up to `max_shift`
    pixels along each axis (independently drawn), filling with zeros."""
    batch = tf.shape(images)[0]
    height, width = images.shape[1], images.shape[2]
    padded = tf.pad(images, [[0, 0], [max_shift, max_shift], [max_shift, max_shift], [0, 0]])
    offsets = tf.random.stateless_uniform([batch, 2], seed, 0, 2 * max_shift + 1, dtype=tf.int32)
    rows = offsets[:, 0:1] + tf.range(height)[None, :]
    cols = offsets[:, 1:2] + tf.range(width)[None, :]
    picked = tf.gather(padded, rows, axis=1, batch_dims=1)
    return tf.gather(picked, cols, axis=2, batch_dims=1)


def random_flip(images, seed):
    """Mirrors each image of a `[B, H, W, C]` batch left-right with probability 1/2."""
    batch = tf.shape(images)[0]
    flip = tf.random.stateless_uniform([batch, 1, 1, 1], seed) < 0.5
    return tf.where(flip, tf.reverse(images, axis=[2]), images)


def perturb(images, max_shift, flip, seed):
    """`images` shifted (`random_shift`) and/or mirrored (`random_flip`) with the stateless `seed`.

    The flips draw from a seed of their own, split from `seed`, so turning
    them on leaves the shifts as they were.
    """
    if max_shift:
        images = random_shift(images, max_shift, seed)
    if flip:
        images = random_flip(images, tf.random.experimental.stateless_split(seed, 1)[0])
    return images
