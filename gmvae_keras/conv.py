"""Convolutions whose stride-1 case avoids TensorFlow's slow CPU input-gradient kernel.

On the CPU, TensorFlow's `Conv2DBackpropInput` (the input gradient of a
convolution, and the forward pass of a transposed convolution) runs two to
three times slower than a forward `Conv2D` of the same size (measured on the
project's 2-core AVX2 machine: docs/PERFORMANCE.md). For stride 1 and
"valid" padding both are a plain forward convolution:

* the input gradient of `y = conv(x, w)` is `conv(pad(dy, k-1), w')`;
* the transposed convolution `y = conv_transpose(x, w)` is `conv(pad(x, k-1), w')`,
  and its input gradient is `conv(dy, w)`,

where `w'` is `w` rotated by 180° with its input and output channels swapped.
These layers compute exactly that, with the kernel gradient from TensorFlow's
`Conv2DBackpropFilter`. Other strides and paddings fall back to Keras.

The weights, configuration and outputs are those of the Keras layers they
subclass, so they are drop-in replacements.
"""

import keras
import tensorflow as tf


def _rotate_and_swap(kernel):
    """[k, k, a, b] -> rotated by 180° and transposed to [k, k, b, a]."""
    return tf.transpose(tf.reverse(kernel, [0, 1]), [0, 1, 3, 2])


def _pad_full(x, kernel_size):
    p = kernel_size - 1
    return tf.pad(x, [[0, 0], [p, p], [p, p], [0, 0]])


def _filter_gradient(inputs, kernel, out_backprop):
    return tf.raw_ops.Conv2DBackpropFilter(
        input=inputs,
        filter_sizes=tf.shape(kernel),
        out_backprop=out_backprop,
        strides=[1, 1, 1, 1],
        padding="VALID",
    )


@tf.custom_gradient
def conv2d_valid(inputs, kernel):
    """`conv(inputs, kernel)`, stride 1, "valid"; kernel `[k, k, in, out]`."""
    outputs = tf.nn.conv2d(inputs, kernel, 1, "VALID")

    def gradient(dy):
        dx = tf.nn.conv2d(_pad_full(dy, kernel.shape[0]), _rotate_and_swap(kernel), 1, "VALID")
        return dx, _filter_gradient(inputs, kernel, dy)

    return outputs, gradient


@tf.custom_gradient
def conv2d_transpose_valid(inputs, kernel):
    """`conv_transpose(inputs, kernel)`, stride 1, "valid"; kernel `[k, k, out, in]` (Keras' layout)."""
    outputs = tf.nn.conv2d(_pad_full(inputs, kernel.shape[0]), _rotate_and_swap(kernel), 1, "VALID")

    def gradient(dy):
        dx = tf.nn.conv2d(dy, kernel, 1, "VALID")
        # The transposed convolution is the input gradient of conv(., kernel):
        # its kernel gradient swaps the roles of input and output.
        return dx, _filter_gradient(dy, kernel, inputs)

    return outputs, gradient


def _fast_path(layer):
    return (
        keras.backend.backend() == "tensorflow"
        and tuple(layer.strides) == (1, 1)
        and tuple(layer.dilation_rate) == (1, 1)
        and layer.padding == "valid"
        and layer.data_format == "channels_last"
    )


@keras.saving.register_keras_serializable(package="gmvae_keras")
class Conv2D(keras.layers.Conv2D):
    """`keras.layers.Conv2D` whose stride-1 "valid" case back-propagates to its
    input with a forward convolution (see the module docstring).

    Takes the arguments of `keras.layers.Conv2D`.
    """

    def convolution_op(self, inputs, kernel):
        if _fast_path(self) and self.groups == 1:
            # A tensor, not the variable: the custom gradient then reaches
            # the variable through the read.
            return conv2d_valid(inputs, tf.convert_to_tensor(kernel))
        return super().convolution_op(inputs, kernel)


@keras.saving.register_keras_serializable(package="gmvae_keras")
class Conv2DTranspose(keras.layers.Conv2DTranspose):
    """`keras.layers.Conv2DTranspose` whose stride-1 "valid" case is a forward
    convolution of the zero-padded input (see the module docstring).

    Takes the arguments of `keras.layers.Conv2DTranspose`.
    """

    def call(self, inputs):
        if not (_fast_path(self) and self.output_padding is None):
            return super().call(inputs)
        outputs = conv2d_transpose_valid(inputs, tf.convert_to_tensor(self.kernel))
        if self.use_bias:
            outputs = outputs + self.bias
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs
