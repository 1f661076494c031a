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
* `from_folder(DIR)` reads a user's own images (`DIR/labeled/<class>/...`,
  `unlabeled/`, `val/`, `test/`; see `gmvae_keras.data.folder`), and
  `from_arrays(...)` takes them as arrays; both return the same `SplitData`.

Splits
------
`split_data` splits the official training set into train and validation parts
(stratified, seeded) and draws a class-balanced, seeded labeled subset of the
train part. The whole train part is the unlabeled stream.

Pipelines
---------
`make_train_dataset` yields, for one epoch or a run of epochs, dicts
`{"images", "labels", "unlabeled_labels"}` (plus `views`, a perturbed copy of
the images, with `consistency_shift` or `consistency_flip`) whose image batch
holds the unlabeled rows first and the labeled rows last; what an epoch draws depends
on the seed and the epoch's number alone. `make_eval_dataset` yields
`(images, labels)` batches in order.

Every bad input raises `DataError`, a `ValueError` with a one-line message.

Modules
-------
`names` (data set names), `files` (IDX and SVHN `.mat` readers), `images`
(decoding, colour and size of image files), `folder` (a user's folder or arrays),
`tfds_source` (tensorflow-datasets), `sources` (`load_raw`), `splits`,
`pipelines`, `perturbations` (the shifted and flipped second views of
training images) and `errors` (`DataError`, integer checks). Everything public is importable from
`gmvae_keras.data` itself.
"""

from gmvae_keras.data.errors import DataError
from gmvae_keras.data.files import IDX_FILES, SVHN_FILES, read_idx, read_svhn_mat
from gmvae_keras.data.folder import from_arrays, from_folder
from gmvae_keras.data.names import KNOWN_DATASETS, canonical_name
from gmvae_keras.data.perturbations import random_flip, random_shift
from gmvae_keras.data.pipelines import (
    balanced_pool,
    make_eval_dataset,
    make_train_dataset,
    steps_per_epoch,
)
from gmvae_keras.data.sources import DEBIAN_FASHION_MNIST_DIR, load_raw
from gmvae_keras.data.splits import SplitData, add_labeled, load_dataset, split_data

__all__ = [
    "DEBIAN_FASHION_MNIST_DIR",
    "IDX_FILES",
    "KNOWN_DATASETS",
    "SVHN_FILES",
    "DataError",
    "SplitData",
    "add_labeled",
    "balanced_pool",
    "canonical_name",
    "from_arrays",
    "from_folder",
    "load_dataset",
    "load_raw",
    "make_eval_dataset",
    "make_train_dataset",
    "random_flip",
    "random_shift",
    "read_idx",
    "read_svhn_mat",
    "split_data",
    "steps_per_epoch",
]
