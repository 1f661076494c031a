"""Train / validation / test splits and the class-balanced labeled set."""

from __future__ import annotations

import dataclasses

import numpy as np

from gmvae_keras.data.errors import DataError, _one_line, check_integer
from gmvae_keras.data.names import CLASS_NAMES
from gmvae_keras.data.sources import load_raw


@dataclasses.dataclass
class SplitData:
    """A data set split into train / validation / test plus a labeled set.

    Images are uint8 NHWC, labels int64; a train label of -1 is unknown (a
    user's unlabeled image). `labeled_indices` index `train_images` and form
    the fixed labeled set of the run (empty when `num_labeled == 0`).
    `class_names[i]` names class `i` (default "0", "1", ...). `train_rows[i]`
    is the row of the official train set that `train_images[i]` is (sorted; a
    built-in data set's only): rows name an image whatever the seeded
    validation split, so suggestions and `add_labeled` speak of rows.
    """

    name: str
    num_classes: int
    image_shape: tuple
    train_images: np.ndarray
    train_labels: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    labeled_indices: np.ndarray
    class_names: tuple | None = None
    train_rows: np.ndarray | None = None

    def __post_init__(self):
        from gmvae_keras.prediction import class_names

        self.class_names = class_names(self.class_names, self.num_classes)

    @property
    def labeled_images(self):
        return self.train_images[self.labeled_indices]

    @property
    def labeled_labels(self):
        return self.train_labels[self.labeled_indices]

    @property
    def num_labeled(self):
        return int(self.labeled_indices.shape[0])


def checked_images(images, what, image_shape=None):
    """`images` as uint8 NHWC (a channel added to NHW), or DataError naming `what`."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise DataError(f"{what} images must be (N, H, W[, C]), got shape {images.shape}")
    if images.dtype != np.uint8:
        raise DataError(f"{what} images must be uint8 0-255, got {images.dtype}")
    if image_shape is not None and images.shape[1:] != tuple(image_shape):
        raise DataError(f"{what} images are {images.shape[1:]}, expected {tuple(image_shape)}")
    return images


def checked_pair(pair, what, num_classes, image_shape=None):
    """`(images, int64 labels)` of a pair, checked (`checked_images`, labels in `[0, num_classes)`)."""
    try:
        images, labels = pair
    except (TypeError, ValueError):
        raise DataError(f"{what} must be a pair (images, labels)") from None
    images = checked_images(images, what, image_shape)
    labels = np.asarray(labels).reshape(-1)
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{what} labels must be integers, got {labels.dtype}")
    if len(labels) != len(images):
        raise DataError(f"{what} has {len(labels)} labels for {len(images)} images")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"{what} labels must be in 0..{num_classes - 1}, got {labels.min()}..{labels.max()}")
    return images, labels.astype(np.int64)


def split_data(name, train, test, num_classes, num_labeled, seed, validation_fraction=0.2):
    """Splits raw data into train / validation / test and a labeled set.

    The official train set is split into train and validation parts,
    stratified by label and seeded; `num_labeled` images (an equal number
    per class) are drawn with the seed from the train part as the fixed
    labeled set. Same seed, same splits and labeled set.

    Args:
        name: canonical data set name.
        train: `(images, labels)` of the official train set.
        test: `(images, labels)` of the official test set.
        num_classes: number of classes.
        num_labeled: size of the labeled set; a multiple of `num_classes`,
            0 for unsupervised training.
        seed: integer seed of the splits.
        validation_fraction: fraction of the official train set held out
            for validation, in [0, 1).

    Returns:
        `SplitData`.
    """
    num_classes = check_integer("num_classes", num_classes, minimum=1)
    # Its sign is checked after the validation split, whose errors come first.
    num_labeled = check_integer("num_labeled", num_labeled)
    seed = check_integer("seed", seed, minimum=0)
    try:
        validation_fraction = float(validation_fraction)
    except (TypeError, ValueError):
        raise DataError(f"validation_fraction must be a number, got {validation_fraction!r}") from None
    if not 0.0 <= validation_fraction < 1.0:
        raise DataError(f"validation_fraction must be in [0, 1), got {validation_fraction}")

    train_x, train_y = checked_pair(train, "train set", num_classes)
    test_x, test_y = checked_pair(test, "test set", num_classes)
    if train_x.shape[1:] != test_x.shape[1:]:
        raise DataError(f"train images are {train_x.shape[1:]} but test images are {test_x.shape[1:]}")
    if train_x.shape[0] == 0:
        raise DataError(f"the train set of {name!r} is empty")

    train_idx, val_idx = _validation_split(name, train_y, num_classes, validation_fraction, seed)
    split_x, split_y = train_x[train_idx], train_y[train_idx]
    labeled = _labeled_set(name, split_y, num_classes, num_labeled, seed)
    return SplitData(
        name=name,
        num_classes=num_classes,
        image_shape=tuple(int(d) for d in split_x.shape[1:]),
        train_images=split_x,
        train_labels=split_y,
        val_images=train_x[val_idx],
        val_labels=train_y[val_idx],
        test_images=test_x,
        test_labels=test_y,
        labeled_indices=labeled,
        class_names=CLASS_NAMES.get(name),
        train_rows=np.arange(len(train_y), dtype=np.int64)[train_idx],
    )


def _validation_split(name, labels, num_classes, fraction, seed):
    """`(train rows, validation rows)` of a stratified, seeded split of the official train set.

    Sorted indices; with `fraction == 0`, slices (every row, none), so that the train set is a view, not a copy.
    """
    from sklearn.model_selection import train_test_split

    if fraction == 0:
        return slice(None), slice(0)
    everything = np.arange(len(labels))
    counts = np.bincount(labels, minlength=num_classes)
    present = counts[counts > 0]
    if present.min() < 2:
        raise DataError(
            f"cannot stratify the validation split of {name!r}: class "
            f"{int(np.flatnonzero(counts == present.min())[0])} has {present.min()} training image"
        )
    try:
        train_idx, val_idx = train_test_split(
            everything, test_size=fraction, stratify=labels, random_state=seed, shuffle=True
        )
    except ValueError as e:
        raise DataError(
            f"cannot split {len(labels)} images of {name!r} with validation_fraction={fraction}: {_one_line(e, 150)}"
        ) from None
    return np.sort(train_idx), np.sort(val_idx)


def _labeled_set(name, labels, num_classes, num_labeled, seed):
    """The sorted indices of `num_labeled` images of `labels`, an equal number per class, drawn with the seed."""
    if num_labeled < 0:
        raise DataError(f"num_labeled must be >= 0, got {num_labeled}")
    if num_labeled % num_classes:
        raise DataError(
            f"num_labeled={num_labeled} must be divisible by the number of "
            f"classes ({num_classes}) for a class-balanced labeled set"
        )
    if num_labeled > len(labels):
        raise DataError(f"num_labeled={num_labeled} exceeds the {len(labels)} images of the train split of {name!r}")
    per_class = num_labeled // num_classes
    rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
    chosen = []
    for c in range(num_classes if per_class else 0):
        members = np.flatnonzero(labels == c)
        if members.size < per_class:
            raise DataError(
                f"class {c} of {name!r} has only {members.size} images in "
                f"the train split, fewer than num_labeled/num_classes={per_class}"
            )
        chosen.append(rng.choice(members, size=per_class, replace=False))
    return np.sort(np.concatenate(chosen)).astype(np.int64) if chosen else np.zeros((0,), np.int64)


def train_positions(data, rows, source="--add_labeled"):
    """The positions in `data.train_images` of the official train set's `rows`, in their order.

    DataError for a data set without official rows (a folder), a row outside the official train set, or one in
    this split's validation images (the split follows the seed: a suggestion is for the run it came from).
    """
    rows = np.asarray(rows, np.int64)
    if data.train_rows is None:
        raise DataError(f"{source}: {data.name!r} has no rows of an official train set (a folder: move files instead)")
    n = len(data.train_labels) + len(data.val_labels)
    outside = rows[(rows < 0) | (rows >= n)]
    if len(outside):
        raise DataError(f"{source}: the official train set of {data.name!r} has rows 0..{n - 1}; got {outside[0]}")
    positions = np.minimum(np.searchsorted(data.train_rows, rows), len(data.train_rows) - 1)
    held_out = rows[data.train_rows[positions] != rows]
    if len(held_out):
        raise DataError(
            f"{source}: row {held_out[0]} is a validation image of this run ({len(held_out)} such rows): "
            "train with the --seed and --validation_fraction of the run that suggested them"
        )
    return positions


def add_labeled(data, rows, source="--add_labeled"):
    """`data` whose labeled set also holds the official train set's `rows`, with the labels the data set knows.

    The labeled set need not stay class-balanced (`pipelines.balanced_pool` rebalances the labeled rows).
    DataError as `train_positions`, or for a row without a known label.
    """
    rows = np.unique(np.asarray(rows, np.int64))
    positions = train_positions(data, rows, source)
    if len(positions) and data.train_labels[positions].min() < 0:
        raise DataError(f"{source}: row {rows[data.train_labels[positions] < 0][0]} has no known label")
    return dataclasses.replace(data, labeled_indices=np.union1d(data.labeled_indices, positions).astype(np.int64))


def load_dataset(name, data_dir=None, num_labeled=100, seed=0, validation_fraction=0.2):
    """`load_raw` followed by `split_data`; returns a `SplitData`."""
    train, test, num_classes, canonical = load_raw(name, data_dir=data_dir)
    return split_data(
        canonical,
        train,
        test,
        num_classes,
        num_labeled,
        seed,
        validation_fraction=validation_fraction,
    )
