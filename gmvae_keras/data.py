"""Data sets, splits and `tf.data` pipelines for semi-supervised training.

Sources
-------
* `load_raw(name)` fetches a data set through tensorflow-datasets (`mnist`,
  `fashion_mnist`, `svhn` -> tfds `svhn_cropped`, or any tfds image
  classification data set by its tfds name).
* `load_raw(name, data_dir=DIR)` reads the data set's original files instead:
  the four IDX files of MNIST / Fashion-MNIST (gzip-compressed or not), or
  `train_32x32.mat` / `test_32x32.mat` of SVHN.
* Without `data_dir`, Fashion-MNIST is also read from Debian's
  `dataset-fashion-mnist` package folder when it holds the files.

Splits
------
`split_data` splits the official training set into train and validation parts
(stratified, seeded) and draws a class-balanced, seeded labeled subset of the
train part. The whole train part is the unlabeled stream.

Pipelines
---------
`make_train_dataset` yields, for one epoch, dicts
`{"images", "labels", "unlabeled_labels"}` whose image batch holds the
unlabeled rows first and the labeled rows last. `make_eval_dataset` yields
`(images, labels)` batches in order.

Every bad input raises `DataError`, a `ValueError` with a one-line message.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import importlib
import os
import zlib

import numpy as np
import tensorflow as tf

__all__ = [
    "DataError",
    "SplitData",
    "KNOWN_DATASETS",
    "DEBIAN_FASHION_MNIST_DIR",
    "canonical_name",
    "load_raw",
    "split_data",
    "load_dataset",
    "make_train_dataset",
    "make_eval_dataset",
    "steps_per_epoch",
    "validate_batch",
    "read_idx",
    "read_svhn_mat",
]


class DataError(ValueError):
    """Bad data input: unknown data set, missing or corrupt file, bad split."""


# Canonical name -> tensorflow-datasets name.
KNOWN_DATASETS = {
    "mnist": "mnist",
    "fashion_mnist": "fashion_mnist",
    "svhn": "svhn_cropped",
}
_ALIASES = {
    "fashion-mnist": "fashion_mnist",
    "fashionmnist": "fashion_mnist",
    "svhn_cropped": "svhn",
}
# Where Debian's `dataset-fashion-mnist` package installs the IDX files.
DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
SVHN_FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat"}

_UNKNOWN_MSG = (
    "unknown dataset {!r}; expected one of mnist, fashion_mnist, svhn or a "
    "tensorflow-datasets image classification name"
)
# Subfolders of data_dir also searched for the original files.
_SUBDIRS = {
    "mnist": ("mnist", "MNIST"),
    "fashion_mnist": ("fashion_mnist", "fashion-mnist", "FashionMNIST"),
    "svhn": ("svhn", "SVHN"),
}
# Download retries granted to tensorflow-datasets (its own default, 10 with
# exponential back-off, makes an offline machine wait minutes before failing).
_TFDS_DOWNLOAD_RETRIES = 2
_TFDS_READ_BATCH = 4096


def _one_line(text, limit=300):
    """Collapses `text` to one line of at most `limit` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------
# Original file formats.
# --------------------------------------------------------------------------


def _read_maybe_gzip(path):
    """Returns the bytes of `path`, decompressed when it is a gzip file."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            head = f.read(2)
            f.seek(0)
            if head == b"\x1f\x8b":
                with gzip.GzipFile(fileobj=f) as g:
                    return g.read()
            return f.read()
    except FileNotFoundError:
        raise DataError(f"missing file {path}") from None
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(
            f"corrupt or truncated file {path}: {_one_line(e, 150)}"
        ) from None


def read_idx(path):
    """Reads an IDX file of unsigned bytes (the MNIST format), gzip or not.

    The header is checked strictly: two zero bytes, data type code 0x08
    (unsigned byte), the number of dimensions, then that many big-endian
    uint32 sizes; the payload must hold exactly the product of the sizes.

    Returns:
        uint8 array with the file's dimensions.

    Raises:
        DataError: missing, truncated or corrupt file.
    """
    path = os.fspath(path)
    data = _read_maybe_gzip(path)
    if len(data) < 4:
        raise DataError(f"corrupt IDX file {path}: only {len(data)} bytes")
    if data[0] != 0 or data[1] != 0:
        raise DataError(
            f"not an IDX file {path}: bad magic number 0x{data[:4].hex()}"
        )
    if data[2] != 0x08:
        raise DataError(
            f"unsupported IDX file {path}: data type code 0x{data[2]:02x}, "
            "expected 0x08 (unsigned byte)"
        )
    ndim = data[3]
    if ndim == 0:
        raise DataError(f"corrupt IDX file {path}: zero dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"truncated IDX file {path}: incomplete header")
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", ndim, 4))
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(data) != expected:
        kind = "truncated" if len(data) < expected else "corrupt"
        raise DataError(
            f"{kind} IDX file {path}: {len(data)} bytes for dimensions "
            f"{dims}, expected {expected}"
        )
    array = np.frombuffer(data, np.uint8, offset=header).reshape(dims)
    return array.copy()


def read_svhn_mat(path):
    """Reads an SVHN `*_32x32.mat` file (MATLAB v5).

    The file holds `X`, uint8 of shape (32, 32, 3, N), and `y` of shape
    (N, 1) with labels 1..10, where 10 stands for the digit 0.

    Returns:
        `(images, labels)`: uint8 (N, 32, 32, 3) and int64 (N,) in 0..9.

    Raises:
        DataError: missing or unreadable file, or unexpected content.
    """
    import scipy.io  # pylint: disable=import-outside-toplevel

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"missing file {path}")
    try:
        content = scipy.io.loadmat(path, variable_names=("X", "y"))
    except Exception as e:  # scipy raises many types for bad files.
        raise DataError(
            f"corrupt or unreadable .mat file {path}: {_one_line(e, 150)}"
        ) from None
    if "X" not in content or "y" not in content:
        raise DataError(f"bad SVHN file {path}: variables X and y required")
    x, y = content["X"], content["y"]
    if x.ndim != 4 or x.dtype != np.uint8:
        raise DataError(
            f"bad SVHN file {path}: X must be uint8 (H, W, C, N), got "
            f"{x.dtype} {x.shape}"
        )
    y = np.asarray(y).reshape(-1)
    if y.shape[0] != x.shape[3]:
        raise DataError(
            f"bad SVHN file {path}: {y.shape[0]} labels for {x.shape[3]} images"
        )
    if y.size and (y.min() < 1 or y.max() > 10):
        raise DataError(
            f"bad SVHN file {path}: labels must be in 1..10, got "
            f"{y.min()}..{y.max()}"
        )
    images = np.ascontiguousarray(np.transpose(x, (3, 0, 1, 2)))
    labels = y.astype(np.int64) % 10
    return images, labels


def _find_file(dirs, base, extensions):
    for d in dirs:
        for ext in extensions:
            candidate = os.path.join(d, base + ext)
            if os.path.isfile(candidate):
                return candidate
    return None


def _search_dirs(data_dir, canonical):
    data_dir = os.fspath(data_dir)
    return [data_dir] + [
        os.path.join(data_dir, sub) for sub in _SUBDIRS.get(canonical, ())
    ]


def _idx_paths(dirs):
    """Paths of the four IDX files in the first of `dirs` holding each."""
    return {
        key: _find_file(dirs, base, (".gz", ""))
        for key, base in IDX_FILES.items()
    }


def _check_images_labels(images, labels, images_path, labels_path):
    if labels.ndim != 1:
        raise DataError(
            f"bad label file {labels_path}: expected 1 dimension, got "
            f"{labels.shape}"
        )
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise DataError(
            f"bad image file {images_path}: expected (N, H, W[, C]), got "
            f"{images.shape}"
        )
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{labels_path} holds {labels.shape[0]} labels but {images_path} "
            f"holds {images.shape[0]} images"
        )
    return images, labels.astype(np.int64)


def _load_idx_dir(paths, num_classes=10):
    out = {}
    for part in ("train", "test"):
        ipath, lpath = paths[f"{part}_images"], paths[f"{part}_labels"]
        images, labels = _check_images_labels(
            read_idx(ipath), read_idx(lpath), ipath, lpath
        )
        if labels.size and labels.max() >= num_classes:
            raise DataError(
                f"bad label file {lpath}: label {labels.max()} >= "
                f"{num_classes} classes"
            )
        out[part] = (images, labels)
    return out["train"], out["test"]


def _load_original(canonical, data_dir):
    dirs = _search_dirs(data_dir, canonical)
    if canonical == "svhn":
        parts = []
        for base in (SVHN_FILES["train"], SVHN_FILES["test"]):
            path = _find_file(dirs, base, ("",))
            if path is None:
                raise DataError(
                    f"missing file {os.path.join(dirs[0], base)} "
                    f"(--data_dir must hold the original SVHN files)"
                )
            parts.append(read_svhn_mat(path))
        return parts[0], parts[1]
    paths = _idx_paths(dirs)
    for key, path in paths.items():
        if path is None:
            missing = os.path.join(dirs[0], IDX_FILES[key] + ".gz")
            raise DataError(
                f"missing file {missing} (or without .gz; --data_dir must "
                f"hold the original {canonical} IDX files)"
            )
    return _load_idx_dir(paths)


# --------------------------------------------------------------------------
# tensorflow-datasets.
# --------------------------------------------------------------------------


@contextlib.contextmanager
def _fewer_download_retries():
    """Lowers tensorflow-datasets' HTTP retries so offline failure is quick."""
    try:
        downloader = importlib.import_module(
            "tensorflow_datasets.core.download.downloader"
        )
    except Exception:  # layout of another tfds version: keep its defaults.
        downloader = None
    if downloader is None or not isinstance(
        getattr(downloader, "MAX_RETRIES", None), int
    ):
        yield
        return
    saved = downloader.MAX_RETRIES
    downloader.MAX_RETRIES = min(saved, _TFDS_DOWNLOAD_RETRIES)
    try:
        yield
    finally:
        downloader.MAX_RETRIES = saved


def _to_numpy(ds):
    """Materialises a `(image, label)` dataset as two numpy arrays."""
    xs, ys = [], []
    for x, y in ds.batch(_TFDS_READ_BATCH).as_numpy_iterator():
        xs.append(x)
        ys.append(y)
    if not xs:
        raise DataError("tensorflow-datasets returned an empty split")
    return np.concatenate(xs), np.concatenate(ys).astype(np.int64)


def _load_tfds(tfds_name, canonical):
    """Loads train and test splits of a tfds image classification data set."""
    try:
        import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
    except ImportError as e:
        raise DataError(
            f"tensorflow-datasets is not importable ({_one_line(e, 120)}); "
            f"pass --data_dir=DIR holding the original files"
        ) from None

    try:
        builder = tfds.builder(tfds_name)
    except tfds.core.registered.DatasetNotFoundError:
        raise DataError(_UNKNOWN_MSG.format(canonical)) from None
    except Exception as e:  # bad name syntax, broken builder, ...
        raise DataError(
            f"{_UNKNOWN_MSG.format(canonical)} ({_one_line(e, 120)})"
        ) from None

    features = builder.info.features
    keys = getattr(features, "keys", lambda: ())()
    if "image" not in keys or "label" not in keys:
        raise DataError(
            f"{_UNKNOWN_MSG.format(canonical)} (tfds {tfds_name!r} has no "
            f"'image' and 'label' features)"
        )
    num_classes = getattr(features["label"], "num_classes", None)
    shape = tuple(features["image"].shape)
    if not num_classes or len(shape) != 3 or None in shape:
        raise DataError(
            f"{_UNKNOWN_MSG.format(canonical)} (tfds {tfds_name!r} needs a "
            f"class label and fixed-size images, got image shape {shape})"
        )

    if canonical in KNOWN_DATASETS:
        hint = "pass --data_dir=DIR holding the original files"
    else:
        hint = (
            "--data_dir=DIR only serves mnist, fashion_mnist and svhn; set "
            "TFDS_DATA_DIR to a prepared tensorflow-datasets folder"
        )
    try:
        with _fewer_download_retries():
            builder.download_and_prepare()
    except Exception as e:
        raise DataError(
            f"could not download {canonical!r} with tensorflow-datasets "
            f"({type(e).__name__}: {_one_line(e, 160)}); {hint}"
        ) from None

    splits = builder.info.splits
    for split in ("train", "test"):
        if splits and split not in splits:
            raise DataError(
                f"tensorflow-datasets {tfds_name!r} has no {split!r} split "
                f"(splits: {', '.join(sorted(splits))})"
            )
    try:
        ds_train, ds_test = builder.as_dataset(split=["train", "test"])
        out = []
        for ds in (ds_train, ds_test):
            ds = ds.map(lambda ex: (ex["image"], ex["label"]))
            out.append(_to_numpy(ds))
    except DataError:
        raise
    except Exception as e:
        raise DataError(
            f"could not read {canonical!r} with tensorflow-datasets "
            f"({type(e).__name__}: {_one_line(e, 160)}); {hint}"
        ) from None
    (train_x, train_y), (test_x, test_y) = out
    return (train_x, train_y), (test_x, test_y), int(num_classes)


# --------------------------------------------------------------------------
# Public loading API.
# --------------------------------------------------------------------------


def canonical_name(name):
    """Lower-cased canonical data set name (`svhn_cropped` -> `svhn`)."""
    if not isinstance(name, str) or not name.strip():
        raise DataError(_UNKNOWN_MSG.format(name))
    key = name.strip().lower()
    return _ALIASES.get(key, key)


def load_raw(name, data_dir=None):
    """Loads the official train and test sets of a data set.

    Args:
        name: `mnist`, `fashion_mnist`, `svhn` or a tensorflow-datasets image
            classification name.
        data_dir: folder holding the data set's original files (or a
            subfolder named after the data set holding them). Without it,
            Fashion-MNIST is read from `DEBIAN_FASHION_MNIST_DIR` when
            present, and everything else through tensorflow-datasets.

    Returns:
        `((train_x, train_y), (test_x, test_y), num_classes, canonical_name)`
        with uint8 NHWC images and int64 labels.
    """
    canonical = canonical_name(name)
    if canonical in KNOWN_DATASETS:
        if data_dir is not None:
            train, test = _load_original(canonical, data_dir)
            return train, test, 10, canonical
        if canonical == "fashion_mnist":
            paths = _idx_paths([DEBIAN_FASHION_MNIST_DIR])
            if all(p is not None for p in paths.values()):
                train, test = _load_idx_dir(paths)
                return train, test, 10, canonical
        train, test, num_classes = _load_tfds(
            KNOWN_DATASETS[canonical], canonical
        )
        return train, test, num_classes, canonical
    if data_dir is not None:
        # Check the name first so that a typo is reported as such.
        _check_tfds_name(canonical)
        raise DataError(
            f"--data_dir reads original files of mnist, fashion_mnist and svhn "
            f"only, not {canonical!r}; drop it to use tensorflow-datasets"
        )
    train, test, num_classes = _load_tfds(canonical, canonical)
    return train, test, num_classes, canonical


def _check_tfds_name(name):
    try:
        import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

        known = name in tfds.list_builders()
    except Exception:  # tfds missing or broken: report the name as unknown.
        known = False
    if not known:
        raise DataError(_UNKNOWN_MSG.format(name))


@dataclasses.dataclass
class SplitData:
    """A data set split into train / validation / test plus a labeled set.

    Images are uint8 NHWC, labels int64. `labeled_indices` index
    `train_images` and form the fixed labeled set of the run (empty when
    `num_labeled == 0`).
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

    @property
    def labeled_images(self):
        return self.train_images[self.labeled_indices]

    @property
    def labeled_labels(self):
        return self.train_labels[self.labeled_indices]

    @property
    def num_labeled(self):
        return int(self.labeled_indices.shape[0])

    def summary(self):
        """One-line description of the split sizes."""
        return (
            f"{self.name}: {self.num_classes} classes, images "
            f"{'x'.join(map(str, self.image_shape))}, train "
            f"{len(self.train_labels)} ({self.num_labeled} labeled), "
            f"validation {len(self.val_labels)}, test {len(self.test_labels)}"
        )


def _as_images_labels(pair, what, num_classes):
    try:
        images, labels = pair
    except (TypeError, ValueError):
        raise DataError(f"{what} must be a pair (images, labels)") from None
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise DataError(
            f"{what} images must be (N, H, W[, C]), got shape {images.shape}"
        )
    if images.dtype != np.uint8:
        raise DataError(f"{what} images must be uint8, got {images.dtype}")
    labels = labels.reshape(-1)
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{what} labels must be integers, got {labels.dtype}")
    if labels.shape[0] != images.shape[0]:
        raise DataError(
            f"{what} has {labels.shape[0]} labels for {images.shape[0]} images"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(
            f"{what} labels must be in 0..{num_classes - 1}, got "
            f"{labels.min()}..{labels.max()}"
        )
    return images, labels.astype(np.int64)


def split_data(
    name, train, test, num_classes, num_labeled, seed, validation_fraction=0.2
):
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
    from sklearn.model_selection import train_test_split  # pylint: disable=import-outside-toplevel

    if isinstance(num_classes, bool) or not isinstance(
        num_classes, (int, np.integer)
    ) or num_classes < 1:
        raise DataError(f"num_classes must be a positive integer, got {num_classes!r}")
    num_classes = int(num_classes)
    if isinstance(num_labeled, bool) or not isinstance(
        num_labeled, (int, np.integer)
    ):
        raise DataError(f"num_labeled must be an integer, got {num_labeled!r}")
    num_labeled = int(num_labeled)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DataError(f"seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    try:
        validation_fraction = float(validation_fraction)
    except (TypeError, ValueError):
        raise DataError(
            f"validation_fraction must be a number, got {validation_fraction!r}"
        ) from None
    if not 0.0 <= validation_fraction < 1.0:
        raise DataError(
            f"validation_fraction must be in [0, 1), got {validation_fraction}"
        )

    train_x, train_y = _as_images_labels(train, "train set", num_classes)
    test_x, test_y = _as_images_labels(test, "test set", num_classes)
    if train_x.shape[1:] != test_x.shape[1:]:
        raise DataError(
            f"train images are {train_x.shape[1:]} but test images are "
            f"{test_x.shape[1:]}"
        )
    if train_x.shape[0] == 0:
        raise DataError(f"the train set of {name!r} is empty")

    # Train / validation split, stratified and seeded.
    if validation_fraction > 0:
        counts = np.bincount(train_y, minlength=num_classes)
        present = counts[counts > 0]
        if present.min() < 2:
            raise DataError(
                f"cannot stratify the validation split of {name!r}: class "
                f"{int(np.flatnonzero(counts == present.min())[0])} has "
                f"{present.min()} training image"
            )
        try:
            train_idx, val_idx = train_test_split(
                np.arange(train_x.shape[0]),
                test_size=validation_fraction,
                stratify=train_y,
                random_state=seed,
                shuffle=True,
            )
        except ValueError as e:
            raise DataError(
                f"cannot split {len(train_y)} images of {name!r} with "
                f"validation_fraction={validation_fraction}: {_one_line(e, 150)}"
            ) from None
        train_idx = np.sort(train_idx)
        val_idx = np.sort(val_idx)
        split_x, split_y = train_x[train_idx], train_y[train_idx]
        val_x, val_y = train_x[val_idx], train_y[val_idx]
    else:
        split_x, split_y = train_x, train_y
        val_x = train_x[:0]
        val_y = train_y[:0]

    # Class-balanced, seeded labeled set.
    n_train = split_x.shape[0]
    if num_labeled < 0:
        raise DataError(f"num_labeled must be >= 0, got {num_labeled}")
    if num_labeled % num_classes:
        raise DataError(
            f"num_labeled={num_labeled} must be divisible by the number of "
            f"classes ({num_classes}) for a class-balanced labeled set"
        )
    if num_labeled > n_train:
        raise DataError(
            f"num_labeled={num_labeled} exceeds the {n_train} images of the "
            f"train split of {name!r}"
        )
    per_class = num_labeled // num_classes
    rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
    chosen = []
    if per_class:
        for c in range(num_classes):
            members = np.flatnonzero(split_y == c)
            if members.size < per_class:
                raise DataError(
                    f"class {c} of {name!r} has only {members.size} images in "
                    f"the train split, fewer than num_labeled/num_classes="
                    f"{per_class}"
                )
            chosen.append(rng.choice(members, size=per_class, replace=False))
    labeled = (
        np.sort(np.concatenate(chosen)).astype(np.int64)
        if chosen
        else np.zeros((0,), np.int64)
    )

    return SplitData(
        name=name,
        num_classes=num_classes,
        image_shape=tuple(int(d) for d in split_x.shape[1:]),
        train_images=split_x,
        train_labels=split_y,
        val_images=val_x,
        val_labels=val_y,
        test_images=test_x,
        test_labels=test_y,
        labeled_indices=labeled,
    )


def load_dataset(
    name, data_dir=None, num_labeled=100, seed=0, validation_fraction=0.2
):
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


# --------------------------------------------------------------------------
# tf.data pipelines.
# --------------------------------------------------------------------------


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
    if isinstance(batch_size, bool) or not isinstance(
        batch_size, (int, np.integer)
    ) or batch_size < 2:
        raise DataError(f"batch_size must be an integer >= 2, got {batch_size!r}")
    if batch_size % 2:
        raise DataError(f"batch_size must be even, got {batch_size}")
    batch_size = int(batch_size)
    if num_labeled is not None and num_labeled == 0:
        n_l = 0
    elif labeled_per_batch is None:
        n_l = batch_size // 2
    else:
        if isinstance(labeled_per_batch, bool) or not isinstance(
            labeled_per_batch, (int, np.integer)
        ):
            raise DataError(
                f"labeled_per_batch must be an integer, got {labeled_per_batch!r}"
            )
        n_l = int(labeled_per_batch)
        if not 1 <= n_l < batch_size:
            raise DataError(
                f"labeled_per_batch must be in 1..{batch_size - 1} for "
                f"batch_size={batch_size}, got {n_l}"
            )
    if n_l and n_l < num_classes:
        raise DataError(
            f"the labeled part of a batch ({n_l} of batch_size={batch_size}) "
            f"must hold at least one image per class ({num_classes})"
        )
    n_u = batch_size - n_l
    if num_train is not None and n_u > num_train:
        raise DataError(
            f"the unlabeled part of a batch ({n_u}) exceeds the {num_train} "
            f"train images; lower batch_size"
        )
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
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DataError(f"seed must be a non-negative integer, got {seed!r}")
    state = np.random.SeedSequence([int(seed), 2]).generate_state(2)
    return int(state[0] & 0x7FFFFFFF), int(state[1] & 0x7FFFFFFF)


def _scale(images_uint8):
    return tf.cast(images_uint8, tf.float32) * (1.0 / 255.0)


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


def _with_perturbation(ds, key, max_shift, flip, seed):
    """Sets `key` of each batch to its `images` shifted (`random_shift`) and/or mirrored (`random_flip`).

    Each batch draws from the seeded stream `seed`; the flips have a seed of
    their own, so turning them on leaves the shifts as they were.
    """
    step_seeds = tf.data.Dataset.random(seed=seed).batch(2)

    def perturb(element, step_seed):
        element = dict(element)
        images = element["images"]
        if max_shift:
            images = random_shift(images, max_shift, step_seed)
        if flip:
            images = random_flip(images, tf.random.experimental.stateless_split(step_seed, 1)[0])
        element[key] = images
        return element

    return tf.data.Dataset.zip((ds, step_seeds)).map(perturb, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


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

    ds = ds.map(
        assemble, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    if augment_shift or augment_flip:
        ds = _with_perturbation(ds, "images", augment_shift, augment_flip, seed_u + 1)
    if consistency_shift or consistency_flip:
        ds = _with_perturbation(ds, "views", consistency_shift, consistency_flip, seed_u + 2)
    return ds.prefetch(tf.data.AUTOTUNE)


def make_eval_dataset(images, labels, batch_size):
    """`(float32 images in [0, 1], int32 labels)` batches, in order.

    The last partial batch is kept.
    """
    if isinstance(batch_size, bool) or not isinstance(
        batch_size, (int, np.integer)
    ) or batch_size < 1:
        raise DataError(f"batch_size must be a positive integer, got {batch_size!r}")
    images = np.asarray(images)
    labels = np.asarray(labels).reshape(-1)
    if images.ndim == 3:
        images = images[..., None]
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{labels.shape[0]} labels for {images.shape[0]} images"
        )
    n = images.shape[0]
    batch_size = int(batch_size)
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

    ds = tf.data.Dataset.range(0, n, batch_size).map(
        take, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    return ds.prefetch(tf.data.AUTOTUNE)
