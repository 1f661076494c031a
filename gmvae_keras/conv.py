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
The kernel gradient is a forward convolution too: TensorFlow's CPU
`Conv2DBackpropFilter` is also slower than a forward convolution of the same
size (1.5 to 3.5x on the networks' stride-1 shapes), and

* the kernel gradient of `y = conv(x, w)` is `conv(x', dy')`, where `x'` is `x`
  with its batch and channel axes swapped and `dy'` is `dy` laid out as a
  kernel (its batch axis as the input channels).

A stride-1 "valid" convolution whose kernel covers its whole input (the
encoder's last layer, 8×8 → 1×1 on SVHN) is a matrix product, and so is the
transposed convolution of a 1×1 input (the decoder's first layer): both use
`matmul`, whose gradients are matrix products too, where TensorFlow's input
gradient kernel took a second per SVHN batch on this machine.

These layers compute exactly that. Other strides and paddings fall back to Keras.

The weights, configuration and outputs are those of the Keras layers they
subclass, so they are drop-in replacements.
"""

import keras
import tensorflow as tf


def _rotate_and_swap(kernel):
    """[k, k, a, b] -> rotated by 180° and transposed to [k, k, b, a]."""
    return tf.transpose(tf.reverse(kernel, [0, 1]), [0, 1, 3, 2])


def _pad_full(x, kernel):
    """Pads by the kernel's size minus one on each side of each spatial axis."""
    h, w = kernel.shape[0] - 1, kernel.shape[1] - 1
    return tf.pad(x, [[0, 0], [h, h], [w, w], [0, 0]])


def filter_gradient(inputs, out_backprop):
    """The kernel gradient `[k, k, in, out]` of `conv(inputs, kernel)` (stride 1, "valid")."""
    # Batch and channels change places: the sum over the batch and the output
    # positions becomes the sum over the input channels and the kernel taps
    # of a forward convolution, whose output is the kernel-sized map.
    swapped = tf.transpose(inputs, [3, 1, 2, 0])
    as_kernel = tf.transpose(out_backprop, [1, 2, 0, 3])
    return tf.transpose(tf.nn.conv2d(swapped, as_kernel, 1, "VALID"), [1, 2, 0, 3])


@tf.custom_gradient
def conv2d_valid(inputs, kernel):
    """`conv(inputs, kernel)`, stride 1, "valid"; kernel `[k, k, in, out]`."""
    outputs = tf.nn.conv2d(inputs, kernel, 1, "VALID")

    def gradient(dy):
        dx = tf.nn.conv2d(_pad_full(dy, kernel), _rotate_and_swap(kernel), 1, "VALID")
        return dx, filter_gradient(inputs, dy)

    return outputs, gradient


@tf.custom_gradient
def conv2d_transpose_valid(inputs, kernel):
    """`conv_transpose(inputs, kernel)`, stride 1, "valid"; kernel `[k, k, out, in]` (Keras' layout)."""
    outputs = tf.nn.conv2d(_pad_full(inputs, kernel), _rotate_and_swap(kernel), 1, "VALID")

    def gradient(dy):
        dx = tf.nn.conv2d(dy, kernel, 1, "VALID")
        # The transposed convolution is the input gradient of conv(., kernel):
        # its kernel gradient swaps the roles of input and output.
        return dx, filter_gradient(dy, inputs)

    return outputs, gradient


def _covers_input(inputs, kernel):
    """Whether the kernel spans the (static) spatial size of `inputs`: a 1×1 output."""
    return tuple(inputs.shape[1:3]) == tuple(kernel.shape[:2])


def conv2d_as_matmul(inputs, kernel):
    """`conv(inputs, kernel)` when the kernel covers the input: `[B, 1, 1, out]`."""
    k_h, k_w, c_in, c_out = kernel.shape
    flat = tf.reshape(inputs, [-1, k_h * k_w * c_in])
    return tf.reshape(tf.matmul(flat, tf.reshape(kernel, [k_h * k_w * c_in, c_out])), [-1, 1, 1, c_out])


def conv2d_transpose_from_1x1(inputs, kernel):
    """`conv_transpose(inputs, kernel)` of a `[B, 1, 1, in]` input: `[B, k, k, out]`."""
    k_h, k_w, c_out, c_in = kernel.shape
    flat = tf.reshape(inputs, [-1, c_in])
    outputs = tf.matmul(flat, tf.reshape(kernel, [k_h * k_w * c_out, c_in]), transpose_b=True)
    return tf.reshape(outputs, [-1, k_h, k_w, c_out])


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
            kernel = tf.convert_to_tensor(kernel)
            if _covers_input(inputs, kernel):
                return conv2d_as_matmul(inputs, kernel)
            return conv2d_valid(inputs, kernel)
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
        kernel = tf.convert_to_tensor(self.kernel)
        if tuple(inputs.shape[1:3]) == (1, 1):
            outputs = conv2d_transpose_from_1x1(inputs, kernel)
        else:
            outputs = conv2d_transpose_valid(inputs, kernel)
        if self.use_bias:
            outputs = outputs + self.bias
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs
