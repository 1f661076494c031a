"""BatchNormalization that stays in bfloat16 on the CPU under a mixed policy.

Under `mixed_bfloat16`, `keras.layers.BatchNormalization` casts its bfloat16
input to float32, normalizes it with unfused element-wise ops and casts the
result back, forward and backward: on a CPU with bfloat16 instructions that
kept BatchNormalization as slow as in float32 and held `mixed_bfloat16` back
(the profile is in docs/PERFORMANCE.md).

TensorFlow's fused kernel (`FusedBatchNormV3`, oneDNN's on the CPU) takes a
bfloat16 input with float32 scale, offset and statistics: it reads and writes
16 bits but accumulates the mean and variance, and normalizes, in float32. So
the statistics, the moving averages and the gradients of gamma and beta stay
float32, as in Keras' layer; the activations in and out are bfloat16, as the
convolutions around the layer produce and consume them. The moving averages
are updated as Keras does (the biased batch variance, Keras' momentum).

The fused path is taken for 4-D channels-last bfloat16 inputs on the CPU
(`conv._runs_on_cpu`), without mask, renormalization or synchronization.
Everything else, float32 above all, runs Keras' layer unchanged. Weights and
configuration are those of `keras.layers.BatchNormalization`: a drop-in
replacement.
"""

import keras
import tensorflow as tf

from gmvae_keras import conv

# The smallest epsilon TensorFlow's fused kernel accepts (it raises smaller ones to this).
_FUSED_MIN_EPSILON = 1.001e-5


def _fused_path(layer, inputs, mask):
    return (
        keras.backend.backend() == "tensorflow"
        and keras.backend.standardize_dtype(inputs.dtype) == "bfloat16"
        and mask is None
        and not layer.renorm
        and not layer.synchronized
        and len(inputs.shape) == 4
        and list(layer._reduction_axes) == [0, 1, 2]
        and layer.epsilon >= _FUSED_MIN_EPSILON
        and conv._runs_on_cpu()
    )


@keras.saving.register_keras_serializable(package="gmvae_keras")
class BatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` that normalizes a bfloat16 input with
    TensorFlow's fused kernel on the CPU (see the module docstring).

    Takes the arguments of `keras.layers.BatchNormalization`.
    """

    def call(self, inputs, training=None, mask=None):
        if not _fused_path(self, inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        channels = inputs.shape[-1]
        gamma = tf.convert_to_tensor(self.gamma) if self.scale else tf.ones([channels], "float32")
        beta = tf.convert_to_tensor(self.beta) if self.center else tf.zeros([channels], "float32")
        if not (training and self.trainable):
            outputs, _, _ = tf.compat.v1.nn.fused_batch_norm(
                inputs,
                gamma,
                beta,
                mean=tf.convert_to_tensor(self.moving_mean),
                variance=tf.convert_to_tensor(self.moving_variance),
                epsilon=self.epsilon,
                is_training=False,
            )
            return outputs
        outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            inputs, gamma, beta, epsilon=self.epsilon, is_training=True
        )
        # The kernel normalizes with the biased batch variance but returns the
        # unbiased one; Keras' moving variance averages the biased one.
        count = tf.cast(tf.size(inputs) // channels, "float32")
        variance = variance * ((count - 1.0) / count)
        momentum = self.momentum
        self.moving_mean.assign(self.moving_mean * momentum + mean * (1.0 - momentum))
        self.moving_variance.assign(self.moving_variance * momentum + variance * (1.0 - momentum))
        return outputs
