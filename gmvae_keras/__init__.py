"""gmvae_keras: semi-supervised GMVAE guided by auxiliary tasks, in Keras 3."""

from gmvae_keras import losses
from gmvae_keras.callbacks import TemperatureAnnealing
from gmvae_keras.layers import GaussianSample, GumbelSoftmax
from gmvae_keras.model import GMVAE
from gmvae_keras.networks import (
    CategoricalInference,
    Decoder,
    Encoder,
    GaussianInference,
    GaussianPrior,
)

__version__ = "0.1.0"
