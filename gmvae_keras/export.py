"""SavedModel export of a trained GMVAE, and `python -m gmvae_keras.export`.

The export needs only TensorFlow to serve:

    loaded = tf.saved_model.load("RUN/export")
    out = loaded.signatures["serving_default"](images=float_images)   # [0, 1]
    out = loaded.signatures["serving_uint8"](images=uint8_images)     # 0-255
    out = loaded.signatures["serving_bytes"](images=tf.constant([png_or_jpeg_bytes, ...]))
    names = [n.decode() for n in loaded.class_names[0].numpy()]

The first two take a batch in the model's image shape; `serving_bytes` takes
encoded image files (PNG, JPEG, BMP, GIF; any size, grey or colour) and
decodes, converts and resizes them in the graph as the folder reader does
(`data.images.decode_bytes`). All three return, deterministically
(inference mode: no sampling, BatchNorm moving averages):

- `probabilities`: the distribution the prediction is the argmax of: q(y|x̂),
  or for a model trained with `--prediction=knn` each class's share of the
  k-NN vote among the labeled training images (their features are computed
  once, when the model is exported, and stored in the export);
- `label`: int64, the argmax of `probabilities`;
- `classifier_probabilities`: q(y|x̂) in both modes;
- `features`: x̂;
- `class_name`: the name of `label` (the export's `class_names`).

Images of another shape, and float images outside [0, 1], fail with an
InvalidArgumentError that says so; another dtype fails when the signature
binds its arguments.
"""

import os
import shutil
import sys
from pathlib import Path

if __name__ == "__main__":
    # As in gmvae_keras.main: TensorFlow's C++ start-up notices would bury the output; before any import of it.
    from gmvae_keras._quiet import quiet_tensorflow

    quiet_tensorflow()

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from gmvae_keras import prediction  # noqa: E402
from gmvae_keras.data.images import decode_bytes  # noqa: E402


class _Stored(tf.Module):
    """What the export keeps beside the model: the class names, and the labeled images' features
    (`--prediction=knn`), fixed at export so that serving does not re-encode them."""

    def __init__(self, class_names, labeled_features=None):
        super().__init__(name="stored")
        self.class_names = tf.Variable(list(class_names), trainable=False, name="class_names")
        self.labeled_features = None
        if labeled_features is not None:
            self.labeled_features = tf.Variable(labeled_features, trainable=False, name="labeled_features")


def _outputs(model, images, stored):
    features, logits = model.classify(images, training=False)
    labeled_labels = model.labeled_image_labels if model.prediction == "knn" else None
    probabilities = prediction.rule_probabilities(
        model.prediction, features, logits, stored.labeled_features, labeled_labels, model.k
    )
    label = tf.argmax(probabilities, axis=-1, output_type=tf.int64)
    return {
        "probabilities": probabilities,
        "label": label,
        "classifier_probabilities": tf.nn.softmax(logits, axis=-1),
        "features": features,
        "class_name": tf.gather(stored.class_names, label),
    }


def export_saved_model(model, export_dir, class_names=None):
    """Writes `model`'s inference signatures as a SavedModel into `export_dir`.

    `class_names` (default "0", "1", ...) name the classes in `class_name`
    and the export's `class_names`. The SavedModel is written next to
    `export_dir` and renamed into place, so an existing export is replaced
    only by a complete one.
    """
    export_dir = Path(export_dir)
    labeled_features = None
    if model.prediction == "knn":
        labeled_images = keras.ops.convert_to_numpy(model.labeled_images)
        labeled_features = prediction.features_and_logits(model, labeled_images)[0]
    stored = _Stored(prediction.class_names(class_names, model.num_classes), labeled_features)
    image_shape = tuple(model.image_shape)
    checked = _shape_check(image_shape)

    def serve_float(images):
        images = checked(images)
        message = "float32 images must be in [0, 1]; use serving_uint8 for 0-255 pixels"
        checks = [
            tf.debugging.assert_greater_equal(images, 0.0, message=message),
            tf.debugging.assert_less_equal(images, 1.0, message=message),
        ]
        with tf.control_dependencies(checks):
            return _outputs(model, tf.identity(images), stored)

    def serve_uint8(images):
        return _outputs(model, prediction.unit_float(checked(images)), stored)

    size, channels = image_shape[0], image_shape[-1]

    def serve_bytes(images):
        decoded = tf.map_fn(
            lambda encoded: decode_bytes(encoded, size, channels),
            images,
            fn_output_signature=tf.TensorSpec(image_shape, tf.uint8),
        )
        return _outputs(model, prediction.unit_float(decoded), stored)

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.track(stored)
    archive.add_variable_collection("class_names", [stored.class_names])
    archive.add_endpoint(
        "serving_default", serve_float, input_signature=[tf.TensorSpec(None, tf.float32, name="images")]
    )
    archive.add_endpoint("serving_uint8", serve_uint8, input_signature=[tf.TensorSpec(None, tf.uint8, name="images")])
    archive.add_endpoint(
        "serving_bytes", serve_bytes, input_signature=[tf.TensorSpec([None], tf.string, name="images")]
    )

    _write_in_place(archive, export_dir)
    return export_dir


def _shape_check(image_shape):
    """`images` checked to be `[batch, *image_shape]` in the graph, with a message that names both shapes."""
    expected = f"[batch, {', '.join(map(str, image_shape))}]"

    def checked(images):
        # The signatures accept any shape, so that a wrong one fails here with
        # this message instead of deep inside a convolution.
        shape = tf.shape(images)
        padded = tf.concat([shape, tf.zeros([4], tf.int32)], axis=0)[1:4]
        valid = tf.logical_and(
            tf.equal(tf.size(shape), 4), tf.reduce_all(tf.equal(padded, tf.constant(image_shape, tf.int32)))
        )
        check = tf.debugging.Assert(valid, [f"images must have shape {expected}, got", shape])
        with tf.control_dependencies([check]):
            return tf.ensure_shape(images, (None,) + image_shape)

    return checked


def _write_in_place(archive, export_dir):
    """Writes `archive` next to `export_dir` and renames it into place: an export is replaced only by a complete one."""
    tmp = export_dir.with_name(f".{export_dir.name}.tmp-{os.getpid()}")
    old = export_dir.with_name(f".{export_dir.name}.old-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    archive.write_out(str(tmp), verbose=False)
    if export_dir.exists():
        os.replace(export_dir, old)
    os.replace(tmp, export_dir)
    shutil.rmtree(old, ignore_errors=True)


def main(argv=None):
    """`python -m gmvae_keras.export --model_dir=RUN [--which=best|last] [--export_dir=DIR]`."""
    import argparse

    from gmvae_keras import checkpoint as ckpt
    from gmvae_keras import paths
    from gmvae_keras.settings import ConfigError

    parser = argparse.ArgumentParser(prog="python -m gmvae_keras.export", description=__doc__.splitlines()[0])
    parser.add_argument("--model_dir", required=True, help="run directory of gmvae_keras.main")
    parser.add_argument("--which", choices=["best", "last"], default="best", help="model to export")
    parser.add_argument("--export_dir", default=None, help="where to write (default MODEL_DIR/export)")
    args = parser.parse_args(argv)
    try:
        model_dir = paths.check_input_dir(args.model_dir, "--model_dir")
        shown = paths.check_output_dir(args.export_dir or model_dir / "export", "--export_dir")
        # The export is written beside the folder and replaces it whole: only an earlier export may go.
        export_dir = shown.absolute()
        if export_dir.is_dir():
            if any(export_dir.iterdir()) and not (export_dir / "saved_model.pb").is_file():
                raise paths.PathError(f"--export_dir={shown} holds files other than a SavedModel")
            problem = paths.output_dir_problem(export_dir.parent)
            if problem:
                raise paths.PathError(f"--export_dir={shown} cannot be replaced: {export_dir.parent} {problem}")
        _, path = ckpt.read_run(model_dir, args.which)
        # Runs made before class names were kept have none: "0", "1", ... then.
        class_names = ckpt.read_json(model_dir / "class_names.json", {}).get("class_names")
        model = ckpt.load_model(path)
    except (paths.PathError, ConfigError, ckpt.RunError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = export_saved_model(model, export_dir, class_names)
    print(f"exported {path} to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
