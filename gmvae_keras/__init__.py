"""gmvae_keras: semi-supervised GMVAE guided by auxiliary tasks, in Keras 3.

The public classes are imported lazily, so that `python -m gmvae_keras.main`
can configure TensorFlow's logging before TensorFlow loads.
"""

import importlib

__version__ = "0.2.0.dev0"

_EXPORTS = {
    "GMVAE": "gmvae_keras.model",
    "TemperatureAnnealing": "gmvae_keras.callbacks",
    "GaussianSample": "gmvae_keras.layers",
    "GumbelSoftmax": "gmvae_keras.layers",
    "CategoricalInference": "gmvae_keras.networks",
    "Decoder": "gmvae_keras.networks",
    "Encoder": "gmvae_keras.networks",
    "GaussianInference": "gmvae_keras.networks",
    "GaussianPrior": "gmvae_keras.networks",
    "Config": "gmvae_keras.config",
    "train_and_evaluate": "gmvae_keras.train",
    "export_saved_model": "gmvae_keras.export",
}

__all__ = sorted(_EXPORTS) + ["losses"]


def __getattr__(name):
    if name == "losses":
        return importlib.import_module("gmvae_keras.losses")
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'gmvae_keras' has no attribute {name!r}")
