"""Command line: `python -m gmvae_keras.suggest --model_dir=RUN --count=N [--out=FILE]`: which images to label next.

Ranks a finished semi-supervised run's unlabeled images (`gmvae_keras.labeling`;
by default `--signal=uncertainty`: the least sure k-NN votes, one pick per
cluster of the features) through the run's SavedModel (`RUN/export`), and
writes a CSV (`labeling.write_csv`) to standard output or `--out`. A folder
run ranks the files of its `unlabeled/` (label them by moving them into
`labeled/<class>/`); a built-in data set's run ranks its train split, each
image named by its row of the official train set (train again with
`--add_labeled=FILE` to simulate labeling them). Then train again, from
scratch or from the run's weights with `--init_from=RUN`. Bad arguments exit
with status 2.
"""

import argparse
import dataclasses
import io
import sys
from pathlib import Path

from gmvae_keras._quiet import quiet_tensorflow

# The SavedModel outputs `suggest` reads: x̂, q(y|x̂) and the run's predicted class.
_OUTPUTS = ("features", "classifier_probabilities", "label")


def unlabeled_features(model_dir, config, count, batch_size=1000, print_fn=None):
    """The run's images through its export: a dict with `features`, `classes` (q(y|x̂)'s argmax) and `predicted`
    (the run's rule) of the unlabeled images, `labeled_features`, `labeled_labels`, `names` (files, or None for a
    built-in data set's images) and `rows` (each unlabeled image's row of the official train set, or None).

    Raises:
        LabelingError: the run has no unlabeled image, or fewer than `count`, or no labeled set.
        PredictError: no SavedModel, or one without the outputs read here (older than `suggest`).
    """
    import tensorflow as tf

    from gmvae_keras.predict import PredictError, find_export

    export_dir = find_export(model_dir)
    loaded = tf.saved_model.load(str(export_dir))
    for name in ("serving_bytes", "serving_uint8"):
        if name not in loaded.signatures or not set(_OUTPUTS) <= set(loaded.signatures[name].structured_outputs):
            raise PredictError(
                f"{export_dir} predates suggestions (no {name} with {', '.join(_OUTPUTS)}); export it again with "
                f"python -m gmvae_keras.export --model_dir={model_dir}"
            )
    encode = _encode_folder if config.dataset == "folder" else _encode_train_split
    encoded = encode(loaded, model_dir, config, count, batch_size, print_fn)
    features, probabilities, predicted = encoded.pop("outputs")
    return {"features": features, "classes": probabilities.argmax(axis=-1), "predicted": predicted, **encoded}


def _encode_folder(loaded, model_dir, config, count, batch_size, print_fn):
    """`unlabeled_features` of a folder run: the files of `unlabeled/` and `labeled/`, through `serving_bytes`."""
    import numpy as np

    from gmvae_keras.checkpoint import read_json
    from gmvae_keras.data.folder import list_folder
    from gmvae_keras.labeling import LabelingError, check_count
    from gmvae_keras.predict import predict_files

    listing = list_folder(config.data_dir)
    # The vote reads labeled/ as it is now, its classes numbered in the folder's order: the run's must be those.
    trained = read_json(Path(model_dir) / "class_names.json", {}).get("class_names")
    if trained is not None and list(listing.class_names) != list(trained):
        raise LabelingError(
            f"{listing.root / 'labeled'} holds the classes {', '.join(listing.class_names)}, but {model_dir} was "
            f"trained on {', '.join(trained)}: train again on the folder as it is"
        )
    unlabeled = [Path(path) for path, _ in listing.files.get("unlabeled", [])]
    if not unlabeled:
        raise LabelingError(f"{listing.root / 'unlabeled'} holds no image: nothing to suggest")
    check_count(count, len(unlabeled))
    if print_fn:
        print_fn(f"encoding {len(unlabeled)} unlabeled and {len(listing.files['labeled'])} labeled images")
    serve = loaded.signatures["serving_bytes"]

    def skipped(path, message):
        if print_fn:
            print_fn(f"left out {path}: {message}")

    kept, outputs = predict_files(serve, unlabeled, batch_size, skipped, _OUTPUTS)
    labeled = [Path(path) for path, _ in listing.files["labeled"]]
    kept_labeled, labeled_features = predict_files(serve, labeled, batch_size, skipped, "features")
    label_of = {Path(path): label for path, label in listing.files["labeled"]}
    labeled_labels = np.array([label_of[path] for path in kept_labeled], np.int64)
    return {
        "outputs": outputs,
        "labeled_features": labeled_features,
        "labeled_labels": labeled_labels,
        "names": kept,
        "rows": None,
    }


def _encode_train_split(loaded, model_dir, config, count, batch_size, print_fn):
    """`unlabeled_features` of a built-in data set's run: its train split, the run's labeled rows apart."""
    import numpy as np
    import tensorflow as tf

    from gmvae_keras.labeling import LabelingError, check_count
    from gmvae_keras.train import load_data

    # The run's labeled set is its labeled_indices.npy: its --add_labeled CSV need not be read again.
    data = load_data(dataclasses.replace(config, add_labeled=None))
    try:
        labeled_rows = np.load(Path(model_dir) / "labeled_indices.npy")
    except (OSError, ValueError) as e:
        raise LabelingError(f"cannot read the labeled set of {model_dir}: {e}") from None
    rows = np.setdiff1d(np.arange(len(data.train_labels)), labeled_rows)
    if not len(rows):
        raise LabelingError(f"every train image of {model_dir} is labeled: nothing to suggest")
    check_count(count, len(rows))
    serve = loaded.signatures["serving_uint8"]

    def through(images):
        parts = [serve(images=tf.constant(images[s : s + batch_size])) for s in range(0, len(images), batch_size)]
        return [np.concatenate([part[name].numpy() for part in parts]) for name in _OUTPUTS]

    if print_fn:
        print_fn(f"encoding {len(rows)} unlabeled and {len(labeled_rows)} labeled images")
    labeled = {"labeled_features": through(data.train_images[labeled_rows])[0]}
    labeled["labeled_labels"] = data.train_labels[labeled_rows]
    return {"outputs": through(data.train_images[rows]), **labeled, "names": None, "rows": data.train_rows[rows]}


def suggest(model_dir, count, signal=None, print_fn=None):
    """`(picks of labeling.rank, encoded images of unlabeled_features, class names)` of a finished run; `signal`
    defaults to `labeling.rank`'s."""
    from gmvae_keras import labeling
    from gmvae_keras.checkpoint import read_json
    from gmvae_keras.config import read_config

    config = read_config(model_dir)
    if config is None:
        raise labeling.LabelingError(f"{model_dir} holds no config.json: not a run of gmvae_keras.main")
    if config.mode == "clustering":
        raise labeling.LabelingError(
            f"{model_dir} is a clustering run: it has no classes to suggest labels for (train a semi-supervised run)"
        )
    class_names = read_json(Path(model_dir) / "class_names.json", {}).get("class_names")
    if not class_names:
        raise labeling.LabelingError(f"{model_dir} holds no class_names.json: not a finished run")
    encoded = unlabeled_features(model_dir, config, count, print_fn=print_fn)
    labeling.check_count(count, len(encoded["features"]))  # a folder's undecodable files are left out
    picks = labeling.rank(
        encoded["features"],
        encoded["labeled_features"],
        encoded["labeled_labels"],
        encoded["classes"],
        count,
        len(class_names),
        config.k,
        signal=signal or labeling.SIGNALS[0],
        seed=config.seed,
    )
    return picks, encoded, class_names


def main(argv=None):
    quiet_tensorflow()  # gmvae_keras.labeling imports TensorFlow
    from gmvae_keras.labeling import SIGNALS

    parser = argparse.ArgumentParser(prog="python -m gmvae_keras.suggest", description=__doc__.splitlines()[0])
    parser.add_argument("--model_dir", required=True, help="a finished run of gmvae_keras.main (reads RUN/export)")
    parser.add_argument("--count", required=True, type=int, help="how many images to suggest")
    parser.add_argument("--out", default=None, help="write the CSV here instead of standard output")
    parser.add_argument("--signal", default=SIGNALS[0], choices=SIGNALS, help="what ranks the images (see labeling)")
    args = parser.parse_args(argv)
    from gmvae_keras import labeling, paths
    from gmvae_keras.config import ConfigError, RunError
    from gmvae_keras.data import DataError
    from gmvae_keras.predict import PredictError, write_output

    def note(message):
        print(message, file=sys.stderr, flush=True)

    try:
        if args.count < 1:
            raise labeling.LabelingError(f"--count must be >= 1, got {args.count}")
        model_dir = paths.check_input_dir(args.model_dir, "--model_dir")
        out = paths.check_output_file(args.out, "--out") if args.out else None
        picks, encoded, class_names = suggest(model_dir, args.count, args.signal, note)
    except (labeling.LabelingError, PredictError, paths.PathError, ConfigError, RunError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    text = io.StringIO()
    labeling.write_csv(text, picks, encoded["predicted"], class_names, encoded["names"], encoded["rows"])
    write_output(text.getvalue(), out, f"wrote {len(picks['index'])} suggestions to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
