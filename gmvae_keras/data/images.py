"""Image files as the networks see them: decoding, colour and size.

One rule for every path, so that the folder reader and the SavedModel's
bytes signature give a network the same pixels:

1. Decode to 8-bit RGB: PNG, JPEG, BMP and GIF (its first frame); a
   palette is expanded, an alpha channel dropped, grey replicated.
2. Channels: 3 keeps RGB; 1 takes the luma `(299 R + 587 G + 114 B) / 1000`,
   rounded, in integers (a grey image gives back its own values).
3. Size: an image already `size`×`size` is kept as it is. Any other is
   resized, keeping its aspect ratio, until its longer side is `size`
   (bilinear with antialiasing, `tf.image.resize`), and padded with black
   to a square, centred (`fit_square`): nothing of the image is cropped.
   An image whose shorter side is below `size / 4` pixels
   (`smallest_side`) is refused: it would be upscaled more than four times.

`decode_bytes` does all three in TensorFlow ops, for the folder reader and
the SavedModel alike. Pillow only reads headers (`probe_file`) and says why
a file fails (`decode_file`, `failure`); it decodes to the same pixels
(lossless PNG, BMP and GIF; libjpeg's accurate integer IDCT for JPEG).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

# File name extensions read as images (lower case); every other file is ignored and counted.
EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")

# Pillow modes without colour: a folder of them trains with one channel by default.
_GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")


class BadImage(ValueError):
    """A file that cannot be decoded, or is too small; the message is one line without the path."""


def smallest_side(size):
    """The shorter side, in pixels, an image needs to be resized to `size`: `size // 4`."""
    return max(1, int(size) // 4)


def is_grey(mode):
    """Whether a Pillow image mode holds no colour."""
    return mode in _GREY_MODES


def probe_file(path):
    """`(width, height, grey)` of an image file from its header, without decoding its pixels.

    Raises:
        BadImage: not an image Pillow can open.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.size[0], image.size[1], is_grey(image.mode)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise BadImage(f"not a readable image ({_reason(e)})") from None


def decode_file(path):
    """The 8-bit RGB pixels `[H, W, 3]` of an image file (GIF: its first frame).

    Raises:
        BadImage: empty, truncated, corrupt or not an image.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.seek(0)
            image.load()
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as e:
        raise BadImage(f"not a readable image ({_reason(e)})") from None


def failure(path, size=None):
    """Why a file fails to decode (or to be resized to `size`), in one line without the path."""
    import os

    if os.path.getsize(path) == 0:
        return "an empty file"
    try:
        rgb = decode_file(path)
        if size is not None:
            check_size(rgb.shape[1], rgb.shape[0], size)
    except BadImage as e:
        return str(e)
    return "an image TensorFlow cannot decode" if size is not None else "too small, or not decodable by TensorFlow"


def _reason(error):
    text = " ".join(str(error).split()) or type(error).__name__
    # Pillow names the file in some messages; the caller names it once.
    return text.split(" '")[0] if text.startswith("cannot identify image file") else text


def to_channels(rgb, channels):
    """`[..., H, W, channels]` uint8 of `[..., H, W, 3]` RGB (numpy): RGB itself, or its integer luma."""
    return rgb if channels == 3 else _tf_to_channels(tf.constant(rgb), channels).numpy()


def _tf_to_channels(rgb, channels):
    """`to_channels` in TensorFlow ops: the one home of the luma formula."""
    if channels == 3:
        return rgb
    rgb = tf.cast(rgb, tf.int32)
    grey = (299 * rgb[..., 0] + 587 * rgb[..., 1] + 114 * rgb[..., 2] + 500) // 1000
    return tf.cast(grey, tf.uint8)[..., None]


def _fit_square(image, size):
    """`fit_square` in TensorFlow ops (a graph function of one `[H, W, C]` uint8 image)."""
    shape = tf.shape(image)
    height, width = shape[0], shape[1]

    def resized():
        longer = tf.maximum(height, width)
        new_height = tf.maximum(1, (height * size + longer // 2) // longer)
        new_width = tf.maximum(1, (width * size + longer // 2) // longer)
        scaled = tf.image.resize(tf.cast(image, tf.float32), [new_height, new_width], antialias=True)
        scaled = tf.cast(tf.round(tf.clip_by_value(scaled, 0.0, 255.0)), tf.uint8)
        return tf.image.pad_to_bounding_box(scaled, (size - new_height) // 2, (size - new_width) // 2, size, size)

    same = tf.logical_and(tf.equal(height, size), tf.equal(width, size))
    return tf.cond(same, lambda: image, resized)


_fit_square_function = tf.function(
    _fit_square,
    input_signature=[tf.TensorSpec([None, None, None], tf.uint8), tf.TensorSpec([], tf.int32)],
)


def fit_square(image, size):
    """`[size, size, C]` uint8 of one `[H, W, C]` uint8 image (numpy): resized keeping its aspect, padded."""
    if image.shape[0] == size and image.shape[1] == size:
        return image
    return _fit_square_function(tf.constant(image), tf.constant(int(size), tf.int32)).numpy()


def check_size(width, height, size):
    """Raises BadImage for an image too small to be resized to `size` (see `smallest_side`)."""
    if min(width, height) < smallest_side(size):
        raise BadImage(
            f"too small: {width}x{height}; an image's shorter side must be at least {smallest_side(size)} pixels "
            f"for --image_size={size}"
        )


def prepare(rgb, size, channels):
    """What the networks see of decoded RGB pixels: `[size, size, channels]` uint8 (steps 2 and 3)."""
    check_size(rgb.shape[1], rgb.shape[0], size)
    return fit_square(to_channels(rgb, channels), size)


def decode_bytes(encoded, size, channels):
    """`prepare(decode(encoded))` in TensorFlow ops, for one encoded image (a scalar string tensor).

    Images too small for `size` fail with an InvalidArgumentError saying so.
    """
    # JPEG with libjpeg's accurate integer IDCT, as Pillow decodes it (TensorFlow's default is the fast one).
    rgb = tf.cond(
        tf.io.is_jpeg(encoded),
        lambda: tf.io.decode_jpeg(encoded, channels=3, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_image(encoded, channels=3, expand_animations=False),
    )
    shape = tf.shape(rgb)
    check = tf.debugging.assert_greater_equal(
        tf.minimum(shape[0], shape[1]),
        smallest_side(size),
        message=f"an image's shorter side must be at least {smallest_side(size)} pixels",
    )
    with tf.control_dependencies([check]):
        image = _tf_to_channels(rgb, channels)
    return tf.ensure_shape(_fit_square(image, size), (size, size, channels))
