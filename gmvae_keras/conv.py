"""Convolutions that avoid TensorFlow's slow CPU gradient kernels.

On the CPU, TensorFlow's `Conv2DBackpropInput` (the input gradient of a
convolution, and the forward pass of a transposed convolution) and
`Conv2DBackpropFilter` (the kernel gradient) run up to several times slower
than a forward `Conv2D` of the same FLOPs (measured on the project's 2-core
AVX2 machine: docs/PERFORMANCE.md). With "valid" padding all of them can be
written as forward convolutions or matrix products:

* stride 1: the input gradient of `y = conv(x, w)` is `conv(pad(dy, k-1), w')`,
  where `w'` is `w` rotated by 180° with its input and output channels swapped;
* stride s: input rows `s·m + r` receive gradient only from the kernel taps
  `r, r + s, ...`, so the input gradient is `s_h·s_w` stride-1 input gradients
  with those sub-kernels, interleaved (no zeros inserted, same FLOPs);
* the transposed convolution `conv_transpose(x, w)` is that input gradient
  with `x` in the place of `dy`, and its input gradient is `conv(dy, w)`;
* stride 1: the kernel gradient is `conv(x', dy')`, where `x'` is `x` with its
  batch and channel axes swapped and `dy'` is `dy` laid out as a kernel (its
  batch axis as the input channels); strided kernel gradients stay
  TensorFlow's (its dilated equivalent was not faster);
* a convolution whose kernel covers its whole input (the encoders' last
  layers) is `reshape(x) @ reshape(w)`, and the transposed convolution of a
  1×1 input (the decoders' first layers) the transposed product; on the SVHN
  shape TensorFlow's input-gradient kernel took a second per batch.

These rewrites apply on the CPU only (`_runs_on_cpu`): they work around
TensorFlow's CPU kernels and were measured there alone. On a GPU, or any
other accelerator, the Keras layers run unchanged, on the vendor's kernels
(cuDNN's on an NVIDIA GPU). Other paddings, dilations, groups and unknown spatial sizes fall back
to Keras too. The weights, configuration and outputs are those of the Keras
layers they subclass, so they are drop-in replacements.
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


def input_gradient(out_backprop, kernel, input_size, strides=(1, 1)):
    """The input gradient `[B, H, W, in]` of `conv(x, kernel)` ("valid", `strides`),
    where `x` has the spatial size `input_size`; kernel `[k_h, k_w, in, out]`."""
    if tuple(strides) == (1, 1):
        return tf.nn.conv2d(_pad_full(out_backprop, kernel), _rotate_and_swap(kernel), 1, "VALID")
    # Phase decomposition: the input rows s·m + r receive gradient only from the
    # kernel taps r, r + s, r + 2s, ...; for each of the s_h·s_w phases that is a
    # stride-1 gradient with the sub-kernel of those taps. The phases are then
    # interleaved. Same FLOPs as the strided kernel, no zeros inserted.
    (height, width), (s_h, s_w) = input_size, strides
    m_h, m_w = -(-height // s_h), -(-width // s_w)
    batch, c_in = tf.shape(out_backprop)[0], kernel.shape[2]
    rows = []
    for r_h in range(s_h):
        phases = []
        for r_w in range(s_w):
            sub = kernel[r_h::s_h, r_w::s_w]
            if sub.shape[0] == 0 or sub.shape[1] == 0:  # kernel smaller than the stride
                phases.append(tf.zeros([batch, m_h, m_w, c_in], out_backprop.dtype))
                continue
            phase = input_gradient(out_backprop, sub, None)
            phases.append(tf.pad(phase, [[0, 0], [0, m_h - phase.shape[1]], [0, m_w - phase.shape[2]], [0, 0]]))
        rows.append(tf.stack(phases, axis=3))  # [B, m_h, m_w, s_w, in]
    interleaved = tf.reshape(tf.stack(rows, axis=2), [-1, m_h * s_h, m_w * s_w, c_in])
    return interleaved[:, :height, :width, :]


def _kernel_gradient(inputs, out_backprop, kernel, strides):
    if tuple(strides) == (1, 1):
        return filter_gradient(inputs, out_backprop)
    # Strided: the batch-as-channels form needs a dilated convolution, which
    # was not faster than TensorFlow's kernel on the networks' shapes.
    return tf.raw_ops.Conv2DBackpropFilter(
        input=inputs,
        filter_sizes=tf.shape(kernel),
        out_backprop=out_backprop,
        strides=[1, *strides, 1],
        padding="VALID",
    )


def conv2d_valid(inputs, kernel, strides=(1, 1)):
    """`conv(inputs, kernel)`, "valid" padding; kernel `[k_h, k_w, in, out]`."""
    strides = tuple(strides)

    @tf.custom_gradient
    def convolution(inputs, kernel):
        def gradient(dy):
            dx = input_gradient(dy, kernel, inputs.shape[1:3], strides)
            return dx, _kernel_gradient(inputs, dy, kernel, strides)

        return tf.nn.conv2d(inputs, kernel, strides, "VALID"), gradient

    return convolution(inputs, kernel)


def transposed_output_size(input_size, kernel_size, strides):
    """Keras' spatial output size of a "valid" transposed convolution."""
    return tuple(n * s + max(k - s, 0) for n, k, s in zip(input_size, kernel_size, strides, strict=True))


def conv2d_transpose_valid(inputs, kernel, strides=(1, 1)):
    """`conv_transpose(inputs, kernel)`, "valid" padding; kernel `[k_h, k_w, out, in]` (Keras' layout)."""
    strides = tuple(strides)

    @tf.custom_gradient
    def transposed(inputs, kernel):
        # The transposed convolution is the input gradient of conv(., kernel),
        # so its own gradients are that convolution and its kernel gradient
        # with the roles of input and output swapped.
        output_size = transposed_output_size(inputs.shape[1:3], kernel.shape[:2], strides)

        def gradient(dy):
            dx = tf.nn.conv2d(dy, kernel, strides, "VALID")
            return dx, _kernel_gradient(dy, inputs, kernel, strides)

        return input_gradient(inputs, kernel, output_size, strides), gradient

    return transposed(inputs, kernel)


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


def _runs_on_cpu():
    """Whether TensorFlow sees no device but CPUs, so every convolution runs on one.

    Read when a layer is traced (and at every eager call). The device of the
    op itself is no answer then: inside a `tf.function` a tensor carries at
    most the device a `tf.device` scope asked for, and TensorFlow places an
    unpinned convolution on a GPU whenever one is visible. The logical devices
    are fixed once the runtime has started, and reading them takes about a
    microsecond. With an accelerator visible every layer takes Keras' path,
    also one pinned to the CPU by `tf.device`: slower there, the same values.
    """
    return all(device.device_type == "CPU" for device in tf.config.list_logical_devices())


def _fast_path(layer, inputs):
    return (
        keras.backend.backend() == "tensorflow"
        and None not in tuple(inputs.shape[1:3])
        and tuple(layer.dilation_rate) == (1, 1)
        and layer.padding == "valid"
        and layer.data_format == "channels_last"
        and _runs_on_cpu()
    )


@keras.saving.register_keras_serializable(package="gmvae_keras")
class Conv2D(keras.layers.Conv2D):
    """`keras.layers.Conv2D` whose "valid" case back-propagates with forward
    convolutions and matrix products on the CPU (see the module docstring).

    Takes the arguments of `keras.layers.Conv2D`.
    """

    def convolution_op(self, inputs, kernel):
        if _fast_path(self, inputs) and self.groups == 1:
            # A tensor, not the variable: the custom gradient then reaches
            # the variable through the read.
            kernel = tf.convert_to_tensor(kernel)
            if _covers_input(inputs, kernel):
                return conv2d_as_matmul(inputs, kernel)
            return conv2d_valid(inputs, kernel, self.strides)
        return super().convolution_op(inputs, kernel)


@keras.saving.register_keras_serializable(package="gmvae_keras")
class Conv2DTranspose(keras.layers.Conv2DTranspose):
    """`keras.layers.Conv2DTranspose` whose "valid" case is computed with
    forward convolutions and matrix products on the CPU (see the module docstring).

    Takes the arguments of `keras.layers.Conv2DTranspose`.
    """

    def call(self, inputs):
        if not (_fast_path(self, inputs) and self.output_padding is None):
            return super().call(inputs)
        kernel = tf.convert_to_tensor(self.kernel)
        if tuple(inputs.shape[1:3]) == (1, 1) and all(
            k >= st for k, st in zip(self.kernel_size, self.strides, strict=True)
        ):
            outputs = conv2d_transpose_from_1x1(inputs, kernel)
        else:
            outputs = conv2d_transpose_valid(inputs, kernel, self.strides)
        if self.use_bias:
            outputs = outputs + self.bias
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs
