"""Loading through tensorflow-datasets; few download retries, so offline fails fast."""

from __future__ import annotations

import contextlib
import importlib

import numpy as np

from gmvae_keras.data.errors import DataError, _one_line
from gmvae_keras.data.names import _UNKNOWN_MSG, KNOWN_DATASETS

# Download retries granted to tensorflow-datasets (its own default, 10 with
# exponential back-off, makes an offline machine wait minutes before failing).
_TFDS_DOWNLOAD_RETRIES = 2
_TFDS_READ_BATCH = 4096


@contextlib.contextmanager
def _fewer_download_retries():
    """Lowers tensorflow-datasets' HTTP retries so offline failure is quick."""
    try:
        downloader = importlib.import_module("tensorflow_datasets.core.download.downloader")
    except Exception:  # layout of another tfds version: keep its defaults.
        downloader = None
    if downloader is None or not isinstance(getattr(downloader, "MAX_RETRIES", None), int):
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

    builder, num_classes = _image_builder(tfds, tfds_name, canonical)
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
                f"tensorflow-datasets {tfds_name!r} has no {split!r} split (splits: {', '.join(sorted(splits))})"
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
            f"could not read {canonical!r} with tensorflow-datasets ({type(e).__name__}: {_one_line(e, 160)}); {hint}"
        ) from None
    (train_x, train_y), (test_x, test_y) = out
    return (train_x, train_y), (test_x, test_y), int(num_classes)


def _image_builder(tfds, tfds_name, canonical):
    """`(builder, number of classes)` of a tfds image classification data set, or DataError."""
    try:
        builder = tfds.builder(tfds_name)
    except tfds.core.registered.DatasetNotFoundError:
        raise DataError(_UNKNOWN_MSG.format(canonical)) from None
    except Exception as e:  # bad name syntax, broken builder, ...
        raise DataError(f"{_UNKNOWN_MSG.format(canonical)} ({_one_line(e, 120)})") from None
    features = builder.info.features
    keys = getattr(features, "keys", lambda: ())()
    if "image" not in keys or "label" not in keys:
        raise DataError(f"{_UNKNOWN_MSG.format(canonical)} (tfds {tfds_name!r} has no 'image' and 'label' features)")
    num_classes = getattr(features["label"], "num_classes", None)
    shape = tuple(features["image"].shape)
    if not num_classes or len(shape) != 3 or None in shape:
        raise DataError(
            f"{_UNKNOWN_MSG.format(canonical)} (tfds {tfds_name!r} needs a "
            f"class label and fixed-size images, got image shape {shape})"
        )
    return builder, num_classes


def _check_tfds_name(name):
    try:
        import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

        known = name in tfds.list_builders()
    except Exception:  # tfds missing or broken: report the name as unknown.
        known = False
    if not known:
        raise DataError(_UNKNOWN_MSG.format(name))
