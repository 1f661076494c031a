"""Times TensorFlow's convolution kernels on the shapes of the paper's networks.

    python tools/conv_kernels.py [--settings mnist svhn] [--repeats 20] [--out FILE]

For every stride-1 "valid" convolution of the encoder (and the forward
convolution equivalent to every stride-1 transposed convolution of the
decoder), at the paper's batch size, it prints one JSON object with the
milliseconds of:

* `forward`: `Conv2D`;
* `input_gradient_tf`: `Conv2DBackpropInput`, TensorFlow's input gradient
  (also the forward pass of `keras.layers.Conv2DTranspose`);
* `input_gradient_forward_conv`: the same gradient as a forward convolution
  of the zero-padded output gradient (what `gmvae_keras.conv` does);
* `filter_gradient`: `Conv2DBackpropFilter`, TensorFlow's kernel gradient;
* `filter_gradient_forward_conv`: the same gradient as a forward convolution
  with batch and channels swapped (`gmvae_keras.conv.filter_gradient`).

This is the evidence behind `gmvae_keras.conv` (docs/PERFORMANCE.md). Run it
on a quiet machine: the numbers are wall-clock medians.
"""

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from gmvae_keras import conv, networks  # noqa: E402
from gmvae_keras.benchmarks import SETTINGS, print_report  # noqa: E402


def stride_one_shapes(setting):
    """(height, in_channels, out_channels, kernel) of each stride-1 encoder conv."""
    height, _, channels = SETTINGS[setting]["image_shape"]
    encoder = networks.Encoder(SETTINGS[setting]["image_shape"], SETTINGS[setting]["feature_size"])
    shapes = []
    for layer in encoder.blocks:
        if not isinstance(layer, keras.layers.Conv2D):
            continue
        (kernel, _), (stride, _), out = layer.kernel_size, layer.strides, layer.filters
        if stride == 1:
            shapes.append((height, channels, out, kernel))
        height, channels = (height - kernel) // stride + 1, out
    return shapes


def _milliseconds(function, *args, repeats):
    for _ in range(3):
        result = function(*args)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function(*args).numpy()
        times.append((time.perf_counter() - start) * 1e3)
    del result
    return statistics.median(times)


def measure(setting, repeats):
    batch = SETTINGS[setting]["batch_size"]
    rows = []
    for height, c_in, c_out, k in stride_one_shapes(setting):
        out = height - k + 1
        x = tf.random.normal((batch, height, height, c_in))
        w = tf.random.normal((k, k, c_in, c_out))
        dy = tf.random.normal((batch, out, out, c_out))
        forward = tf.function(lambda x, w: tf.nn.conv2d(x, w, 1, "VALID"))
        input_gradient = tf.function(
            lambda dy, w: tf.raw_ops.Conv2DBackpropInput(
                input_sizes=[batch, height, height, c_in],
                filter=w,
                out_backprop=dy,
                strides=[1, 1, 1, 1],
                padding="VALID",
            )
        )
        as_forward = tf.function(
            lambda dy, w: tf.nn.conv2d(
                tf.pad(dy, [[0, 0], [k - 1, k - 1], [k - 1, k - 1], [0, 0]]),
                tf.transpose(tf.reverse(w, [0, 1]), [0, 1, 3, 2]),
                1,
                "VALID",
            )
        )
        filter_gradient = tf.function(
            lambda x, dy: tf.raw_ops.Conv2DBackpropFilter(
                input=x,
                filter_sizes=[k, k, c_in, c_out],
                out_backprop=dy,
                strides=[1, 1, 1, 1],
                padding="VALID",
            )
        )
        filter_gradient_as_forward = tf.function(conv.filter_gradient)
        difference = float(tf.reduce_max(tf.abs(input_gradient(dy, w) - as_forward(dy, w))))
        scale = float(tf.reduce_max(tf.abs(input_gradient(dy, w))))
        rows.append(
            {
                "shape": f"{batch}x{height}x{height}x{c_in} -> {c_out}, kernel {k}",
                "forward": _milliseconds(forward, x, w, repeats=repeats),
                "input_gradient_tf": _milliseconds(input_gradient, dy, w, repeats=repeats),
                "input_gradient_forward_conv": _milliseconds(as_forward, dy, w, repeats=repeats),
                "filter_gradient": _milliseconds(filter_gradient, x, dy, repeats=repeats),
                "filter_gradient_forward_conv": _milliseconds(filter_gradient_as_forward, x, dy, repeats=repeats),
                "relative_difference": difference / max(scale, 1e-30),
            }
        )
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", nargs="+", choices=sorted(SETTINGS), default=["mnist", "svhn"])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    result = {
        "unit": "milliseconds, median",
        "load_average_1min": os.getloadavg()[0],
        "settings": {name: measure(name, args.repeats) for name in args.settings},
    }
    print_report(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
