"""Data set names: the three of the paper, their aliases, and the check of a name."""

from __future__ import annotations

from gmvae_keras.data.errors import DataError

# Canonical name -> tensorflow-datasets name.
KNOWN_DATASETS = {
    "mnist": "mnist",
    "fashion_mnist": "fashion_mnist",
    "svhn": "svhn_cropped",
}
# The classes' names where they are not the digits 0-9 (tfds' names, in label order).
CLASS_NAMES = {
    "fashion_mnist": (
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
}
_ALIASES = {
    "fashion-mnist": "fashion_mnist",
    "fashionmnist": "fashion_mnist",
    "svhn_cropped": "svhn",
}

_UNKNOWN_MSG = (
    "unknown dataset {!r}; expected one of mnist, fashion_mnist, svhn or a "
    "tensorflow-datasets image classification name"
)


def canonical_name(name):
    """Lower-cased canonical data set name (`svhn_cropped` -> `svhn`)."""
    if not isinstance(name, str) or not name.strip():
        raise DataError(_UNKNOWN_MSG.format(name))
    key = name.strip().lower()
    return _ALIASES.get(key, key)
