"""The first training steps of a run, seen through the k-NN label assignment.

    python tools/assignment_probe.py [--every 60] [--reports 8] [--images 5000] [--out FILE] \
        -- --dataset=mnist --settings=cpu --seed=2 --data_dir=../shared/datasets/mnist [--flag=value ...]

The flags after `--` are `gmvae_keras.main`'s. The tool builds the model, its optimizer and the
training stream as a run with those flags would (the learning-rate schedule spans the configured
epochs; the temperature stays at its first-epoch value), trains `--every` steps at a time and after
each block prints one JSON line:

* `val_error`: error (%) of the model's prediction (argmax q(y|x̂), or the vote with
  `--prediction=knn`) on `--images` validation images;
* `assignment_accuracy`, `class_accuracy[c]`, `class_share[c]`: the assignment rule of L_A
  (`losses.assign_labels`, with the run's k) applied to `--images` training images
  against the whole labeled set: how often it is right, per true class, and the share of the
  images it gives each class; `worst_class` is the class it gets most wrong (always the plain
  vote: with `--assignment_balance` the run rebalances each batch's votes, which shows in
  `train_assignment_accuracy`);
* `train_*`: the training logs' means over the block (loss terms, the assignment accuracy on
  the batches' unlabeled halves).

Nothing is written but `--out` (the same lines). Whether a class is merging into another shows in
the first hundred steps, and it decides a 10-epoch run (docs/RESULTS.md): this is the quick way to
try a change against it. The training split's labels are read only to score the assignment, the
test set never.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def assignment_report(model, data, train_subset, val_subset, batch_size=1000):
    """Validation error and per-class k-NN assignment figures of `model`, as a dict."""
    assigned = model.predict_both(
        data.train_images[train_subset],
        data.train_images[data.labeled_indices],
        data.train_labels[data.labeled_indices],
        batch_size,
    )["knn"]
    truth = data.train_labels[train_subset]
    class_accuracy = [
        float(np.mean(assigned[truth == c] == c)) if np.any(truth == c) else None for c in range(data.num_classes)
    ]
    scored = [c for c, value in enumerate(class_accuracy) if value is not None]
    worst = min(scored, key=lambda c: class_accuracy[c])
    predictions = model.predict_labels(data.val_images[val_subset], batch_size)
    return {
        "val_error": float(100.0 * np.mean(predictions != data.val_labels[val_subset])),
        "assignment_accuracy": float(np.mean(assigned == truth)),
        "worst_class": int(worst),
        "worst_class_accuracy": class_accuracy[worst],
        "class_accuracy": class_accuracy,
        "class_share": (np.bincount(assigned, minlength=data.num_classes) / len(assigned)).tolist(),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--every", type=int, default=60, help="training steps between reports")
    parser.add_argument("--reports", type=int, default=8)
    parser.add_argument("--images", type=int, default=5000, help="training and validation images scored per report")
    parser.add_argument("--out", help="also write the JSON lines here")
    parser.add_argument("flags", nargs="*", help="gmvae_keras.main flags, after --")
    args = parser.parse_args(argv)
    for name in ("every", "reports", "images"):
        if getattr(args, name) < 1:
            parser.exit(2, f"error: --{name} must be >= 1, got {getattr(args, name)}\n")
    if args.out and not Path(args.out).resolve().parent.is_dir():
        parser.exit(2, f"error: --out: the folder of {args.out} does not exist\n")

    from absl import flags

    from gmvae_keras import data as data_lib
    from gmvae_keras import train
    from gmvae_keras.config import ConfigError
    from gmvae_keras.flagfiles import config_from_args

    try:
        config = config_from_args(args.flags)
        config.validate()
        if config.mode != "semi_supervised":
            raise ConfigError("the probe scores the k-NN assignment, which needs --mode=semi_supervised")
        data = train.load_data(config)
    except (ConfigError, data_lib.DataError, flags.Error) as e:
        parser.exit(2, f"error: {str(e).splitlines()[0]}\n")

    import keras

    keras.utils.set_random_seed(config.seed)
    stream, steps = train.train_stream(data, config)
    stream = stream.repeat()  # blocks of --every steps, not epochs
    model = train.build_model(
        config, data.num_classes, data.image_shape, steps, (data.labeled_images, data.labeled_labels)
    )
    rng = np.random.default_rng(0)
    train_subset = rng.choice(len(data.train_labels), min(args.images, len(data.train_labels)), replace=False)
    val_subset = rng.choice(len(data.val_labels), min(args.images, len(data.val_labels)), replace=False)
    out = open(args.out, "w") if args.out else None

    class Report(keras.callbacks.Callback):
        def on_epoch_end(self, block, logs=None):
            row = {"step": (block + 1) * args.every}
            row.update(assignment_report(self.model, data, train_subset, val_subset))
            # The training logs' running means over the block, apart from the report's own fields.
            row.update({f"train_{name}": float(value) for name, value in (logs or {}).items()})
            line = json.dumps(row)
            print(line, flush=True)
            if out is not None:
                out.write(line + "\n")
                out.flush()

    try:
        # One fit, so that the stream's iterator carries on from block to block.
        model.fit(
            stream, epochs=args.reports, steps_per_epoch=args.every, verbose=0, shuffle=False, callbacks=[Report()]
        )
    finally:
        if out is not None:
            out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
