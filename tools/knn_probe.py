"""How a trained run's classifier compares with a k-NN vote on its features.

    python tools/knn_probe.py --model_dir=runs/mnist [--which best] [--k 1 5 10] [--split val]

Loads a run's saved model and its labeled set (`labeled_indices.npy`), embeds the labeled images
and the images of one split (default: the validation split; use `--split test` only for a
finished run you are not tuning), and prints one JSON object with the error (%) of:

* `classifier_error`: argmax q(y|x̂) (the model's prediction unless it was trained with
  `--prediction=knn`, which predicts by the vote below with the run's `--k`);
* `knn_error[k]`: the assignment rule of L_A (`losses.assign_labels`: the run's `--k` and
  weighting) applied to every image of the split, against the whole labeled set;
* `agreement`: the share of images where the classifier and the vote with the first `--k`
  (by default the run's own k) agree.

When the k-NN vote beats the classifier, the classifier lags behind the features; when both
err alike, the features are what limits the accuracy (docs/RESULTS.md).
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def probe(model, labeled_images, labeled_labels, images, labels, ks, num_classes, weighting, batch_size=1000):
    """The dict printed by the tool, for an already loaded model and data."""
    from gmvae_keras import losses

    labeled_features = model.extract_features(labeled_images, batch_size)
    features, logits = model.features_and_logits(images, batch_size)
    predictions = np.argmax(logits, axis=-1)
    result = {
        "images": int(len(labels)),
        "labeled_images": int(len(labeled_labels)),
        "classifier_error": float(100.0 * np.mean(predictions != labels)),
        "knn_error": {},
    }
    for k in ks:
        assigned = losses.assign_labels_in_batches(
            features, labeled_features, labeled_labels, num_classes, k, weighting, batch_size
        )
        result["knn_error"][str(k)] = float(100.0 * np.mean(assigned != labels))
        if k == ks[0]:
            result["agreement"] = float(100.0 * np.mean(assigned == predictions))
            result["agreement_k"] = int(k)
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_dir", required=True, help="run directory of gmvae_keras.main")
    parser.add_argument("--which", choices=["best", "last"], default="best")
    parser.add_argument("--split", choices=["val", "test"], default="val")
    parser.add_argument(
        "--k",
        type=int,
        nargs="+",
        default=None,
        help="default: the run's --k, then 1 and 10; the first is used for `agreement`",
    )
    parser.add_argument("--data_dir", default=None, help="override the run's --data_dir")
    args = parser.parse_args(argv)

    import keras

    import gmvae_keras.model  # noqa: F401  registers the custom layers
    from gmvae_keras import checkpoint as ckpt
    from gmvae_keras import data as data_lib
    from gmvae_keras.config import Config, ConfigError

    model_dir = Path(args.model_dir)
    values = ckpt.read_json(model_dir / "config.json")
    if values is None:
        parser.exit(2, f"error: {model_dir} holds no run (config.json is missing)\n")
    try:
        config = Config.from_dict(values)
    except (ConfigError, TypeError) as e:
        parser.exit(2, f"error: {model_dir}/config.json is not a gmvae_keras configuration ({e})\n")
    path = ckpt.saved_model_path(model_dir, args.which)
    labeled_path = model_dir / "labeled_indices.npy"
    if path is None or not labeled_path.exists():
        parser.exit(2, f"error: no {args.which} model or labeled set in {model_dir}\n")
    ks = args.k or [config.k] + [k for k in (1, 10) if k != config.k]
    if min(ks) < 1 or max(ks) > config.num_labeled:
        parser.exit(2, f"error: --k must be between 1 and the run's {config.num_labeled} labeled images\n")
    try:
        data = data_lib.load_dataset(
            config.dataset,
            data_dir=args.data_dir or config.data_dir,
            num_labeled=config.num_labeled,
            seed=config.seed,
            validation_fraction=config.validation_fraction,
        )
    except data_lib.DataError as e:
        parser.exit(2, f"error: {e}\n")
    labeled = np.load(labeled_path)
    if not np.array_equal(labeled, data.labeled_indices):
        parser.exit(2, f"error: {labeled_path} differs from the labeled set drawn now; the data changed\n")
    images, labels = (data.val_images, data.val_labels) if args.split == "val" else (data.test_images, data.test_labels)
    model = keras.saving.load_model(path)
    result = {"model": str(path), "split": args.split}
    result.update(
        probe(
            model,
            data.train_images[labeled],
            data.train_labels[labeled],
            images,
            labels,
            ks,
            data.num_classes,
            config.assignment_weighting,
            config.eval_batch_size,
        )
    )
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
