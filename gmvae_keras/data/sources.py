"""`load_raw`: official train and test sets, from original files or tfds."""

from __future__ import annotations

from gmvae_keras.data.errors import DataError
from gmvae_keras.data.files import _idx_paths, _load_idx_dir, _load_original
from gmvae_keras.data.names import KNOWN_DATASETS, canonical_name
from gmvae_keras.data.tfds_source import _check_tfds_name, _load_tfds

# Where Debian's `dataset-fashion-mnist` package installs the IDX files.
DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"


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
        train, test, num_classes = _load_tfds(KNOWN_DATASETS[canonical], canonical)
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
