"""Readers of the original files: IDX (MNIST, Fashion-MNIST) and SVHN `.mat`."""

from __future__ import annotations

import gzip
import os
import zlib

import numpy as np

from gmvae_keras.data.errors import DataError, _one_line

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
SVHN_FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat"}

# Subfolders of data_dir also searched for the original files.
_SUBDIRS = {
    "mnist": ("mnist", "MNIST"),
    "fashion_mnist": ("fashion_mnist", "fashion-mnist", "FashionMNIST"),
    "svhn": ("svhn", "SVHN"),
}


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
        raise DataError(f"corrupt or truncated file {path}: {_one_line(e, 150)}") from None


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
        raise DataError(f"not an IDX file {path}: bad magic number 0x{data[:4].hex()}")
    if data[2] != 0x08:
        raise DataError(f"unsupported IDX file {path}: data type code 0x{data[2]:02x}, expected 0x08 (unsigned byte)")
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
        raise DataError(f"{kind} IDX file {path}: {len(data)} bytes for dimensions {dims}, expected {expected}")
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
        raise DataError(f"corrupt or unreadable .mat file {path}: {_one_line(e, 150)}") from None
    if "X" not in content or "y" not in content:
        raise DataError(f"bad SVHN file {path}: variables X and y required")
    x, y = content["X"], content["y"]
    if x.ndim != 4 or x.dtype != np.uint8:
        raise DataError(f"bad SVHN file {path}: X must be uint8 (H, W, C, N), got {x.dtype} {x.shape}")
    y = np.asarray(y).reshape(-1)
    if y.shape[0] != x.shape[3]:
        raise DataError(f"bad SVHN file {path}: {y.shape[0]} labels for {x.shape[3]} images")
    if y.size and (y.min() < 1 or y.max() > 10):
        raise DataError(f"bad SVHN file {path}: labels must be in 1..10, got {y.min()}..{y.max()}")
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
    return [data_dir] + [os.path.join(data_dir, sub) for sub in _SUBDIRS.get(canonical, ())]


def _idx_paths(dirs):
    """Paths of the four IDX files in the first of `dirs` holding each."""
    return {key: _find_file(dirs, base, (".gz", "")) for key, base in IDX_FILES.items()}


def _check_images_labels(images, labels, images_path, labels_path):
    if labels.ndim != 1:
        raise DataError(f"bad label file {labels_path}: expected 1 dimension, got {labels.shape}")
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise DataError(f"bad image file {images_path}: expected (N, H, W[, C]), got {images.shape}")
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{labels_path} holds {labels.shape[0]} labels but {images_path} holds {images.shape[0]} images"
        )
    return images, labels.astype(np.int64)


def _load_idx_dir(paths, num_classes=10):
    out = {}
    for part in ("train", "test"):
        ipath, lpath = paths[f"{part}_images"], paths[f"{part}_labels"]
        images, labels = _check_images_labels(read_idx(ipath), read_idx(lpath), ipath, lpath)
        if labels.size and labels.max() >= num_classes:
            raise DataError(f"bad label file {lpath}: label {labels.max()} >= {num_classes} classes")
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
                    f"missing file {os.path.join(dirs[0], base)} (--data_dir must hold the original SVHN files)"
                )
            parts.append(read_svhn_mat(path))
        return parts[0], parts[1]
    paths = _idx_paths(dirs)
    for key, path in paths.items():
        if path is None:
            missing = os.path.join(dirs[0], IDX_FILES[key] + ".gz")
            raise DataError(
                f"missing file {missing} (or without .gz; --data_dir must hold the original {canonical} IDX files)"
            )
    return _load_idx_dir(paths)
