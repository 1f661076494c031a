"""The paper's figures for a finished run: `python -m gmvae_keras.figures --model_dir=RUN`.

Writes into `RUN/figures/` (and as images into TensorBoard, `RUN/logs/figures`):

- `generated.png` (Figure 3): one row per category, images decoded from z ~ p(z|y);
- `tsne.png` (Figure 4): t-SNE of the test features x̂, coloured by true class;
- `reconstructions.png`: test images (odd rows) above their reconstructions (even rows);
- `confusion_matrix.png`: test predictions against true classes (clusters mapped to
  classes by the best one-to-one matching for clustering runs);
- `validation_by_epoch.png`: the validation scores of every epoch trained (error, or ACC
  and NMI for a clustering), read from the run's TensorBoard logs, so that one sees
  how many epochs the method needs.
"""

import argparse
import dataclasses
import io
import sys
from pathlib import Path

if __name__ == "__main__":
    # As in gmvae_keras.main: TensorFlow's C++ start-up notices would bury the output; before any import of it.
    from gmvae_keras._quiet import quiet_tensorflow

    quiet_tensorflow()

import matplotlib  # noqa: E402

matplotlib.use("Agg")  # never open a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from gmvae_keras.callbacks import image_grid  # noqa: E402
from gmvae_keras.metrics import cluster_to_class  # noqa: E402

DPI = 100


def _show_grid(ax, grid):
    if grid.shape[-1] == 1:
        ax.imshow(grid[..., 0], cmap="gray", vmin=0.0, vmax=1.0)
    else:
        ax.imshow(np.clip(grid, 0.0, 1.0))
    ax.set_axis_off()


def generated_figure(model, samples=10, seed=0):
    """Figure 3: `samples` generated images per category, one row each."""
    images = np.concatenate([model.generate(c, samples, seed=seed + c) for c in range(model.num_classes)])
    fig, ax = plt.subplots(figsize=(samples * 0.6, model.num_classes * 0.6 + 0.4), dpi=DPI)
    _show_grid(ax, image_grid(images, samples))
    ax.set_title("Generated images, one row per category")
    return fig


def tsne_figure(features, labels, seed=0):
    """Figure 4: 2-D t-SNE of features, coloured by class, with a legend."""
    from sklearn.manifold import TSNE

    features = np.asarray(features, "float32")
    labels = np.asarray(labels)
    perplexity = min(30.0, max(2.0, (len(features) - 1) / 3.0))
    points = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(features)
    fig, ax = plt.subplots(figsize=(8, 7), dpi=DPI)
    classes = np.unique(labels)
    colours = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    for i, c in enumerate(classes):
        chosen = labels == c
        ax.scatter(points[chosen, 0], points[chosen, 1], s=4, color=colours(i % colours.N), label=str(c))
    ax.legend(markerscale=4, fontsize=8, loc="best", title="class")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"t-SNE of the features x̂ ({len(features)} test images)")
    return fig


def reconstruction_figure(images, reconstructions, columns=10):
    """Originals (odd rows) above their reconstructions (even rows)."""
    images = np.asarray(images, "float32")
    reconstructions = np.asarray(reconstructions, "float32")
    rows = []
    for start in range(0, len(images), columns):
        rows += [images[start : start + columns], reconstructions[start : start + columns]]
    grid = image_grid(np.concatenate(rows), columns)
    fig, ax = plt.subplots(figsize=(columns * 0.6, len(rows) * 0.6 + 0.4), dpi=DPI)
    _show_grid(ax, grid)
    ax.set_title("Test images (odd rows) and reconstructions (even rows)")
    return fig


def confusion_figure(labels, predictions, num_classes, title="Confusion matrix (test)", class_names=None):
    """Counts of (true class, predicted class), annotated; the axes name the classes (default 0, 1, ...)."""
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (np.asarray(labels), np.asarray(predictions)), 1)
    fig, ax = plt.subplots(figsize=(7, 6), dpi=DPI)
    ax.imshow(matrix, cmap="Blues")
    for (i, j), count in np.ndenumerate(matrix):
        colour = "white" if count > matrix.max() / 2 else "black"
        ax.text(j, i, str(count), ha="center", va="center", fontsize=7, color=colour)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    names = [str(c) for c in range(num_classes)] if class_names is None else list(class_names)
    ax.set_xticks(range(num_classes), names, rotation=90 if max(map(len, names)) > 2 else 0)
    ax.set_yticks(range(num_classes), names)
    ax.set_title(title)
    return fig


def read_validation_history(log_dir):
    """`{name: (epochs, values)}` of the validation scalars in the TensorBoard logs under `log_dir`.

    Epochs count from 1. A resumed run writes an epoch again when it was cut
    short before its checkpoint: the value written last counts.
    """
    import tensorflow as tf

    latest = {}
    for path in sorted(Path(log_dir).glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                name = value.tag.removeprefix("epoch_")
                number = float(tf.make_ndarray(value.tensor)) if value.HasField("tensor") else value.simple_value
                key = (name, int(event.step) + 1)
                if key not in latest or latest[key][0] <= event.wall_time:
                    latest[key] = (event.wall_time, number)
    history = {}
    for (name, epoch), (_, number) in sorted(latest.items()):
        history.setdefault(name, ([], []))
        history[name][0].append(epoch)
        history[name][1].append(number)
    return {name: (np.array(epochs), np.array(values)) for name, (epochs, values) in history.items()}


def history_figure(history, mode="semi_supervised"):
    """Validation scores by epoch: error (%) of a semi-supervised run, ACC and NMI (%) of a clustering."""
    names = ("cluster_accuracy", "nmi") if mode == "clustering" else ("error",)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=DPI)
    for name in names:
        if name in history:
            epochs, values = history[name]
            label = {"cluster_accuracy": "ACC", "nmi": "NMI"}.get(name, name)
            ax.plot(epochs, values, marker="o", markersize=3, label=label)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("Validation scores by epoch")
    return fig


def save_png(fig, path):
    """Writes `fig` to `path` as PNG and returns its pixels (H, W, 4) uint8."""
    fig.savefig(path, format="png", dpi=DPI)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    plt.close(fig)
    buffer.seek(0)
    return (plt.imread(buffer, format="png") * 255).astype(np.uint8)


def write_figures(
    model,
    images,
    labels,
    out_dir,
    log_dir=None,
    mode="semi_supervised",
    tsne_points=3000,
    samples=10,
    seed=0,
    history=None,
    class_names=None,
):
    """Renders every figure of a model on test `images` (uint8 or [0, 1] floats).

    `history`, the run's `read_validation_history`, adds `validation_by_epoch`.

    Returns:
        {name: path} of the PNG files written.
    """
    import keras

    from gmvae_keras import prediction

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    floats = prediction.unit_float(images)
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    subset = np.sort(rng.choice(len(images), size=min(tsne_points, len(images)), replace=False))

    features, logits = prediction.features_and_logits(model, floats)
    predictions = prediction.probabilities(model, features, logits).argmax(-1)
    title = "Confusion matrix (test)"
    if mode == "clustering":
        mapping = cluster_to_class(labels, predictions)
        predictions = np.array([mapping.get(int(p), -1) for p in predictions])
        title += ", clusters matched to classes"
    matched = predictions >= 0  # clusters beyond the number of classes match none
    few = floats[:20]
    reconstructions = keras.ops.convert_to_numpy(model(few, training=False)["reconstruction"])
    figures = {
        "generated": generated_figure(model, samples, seed),
        "tsne": tsne_figure(features[subset], labels[subset], seed=seed),
        "reconstructions": reconstruction_figure(few, reconstructions),
        "confusion_matrix": confusion_figure(
            labels[matched], predictions[matched], model.num_classes, title, class_names
        ),
    }
    if history:
        figures["validation_by_epoch"] = history_figure(history, mode)
    return _save_figures(figures, out_dir, log_dir)


def _save_figures(figures, out_dir, log_dir):
    """Writes each figure as `out_dir/<name>.png` (and into TensorBoard at `log_dir`); `{name: path}`."""
    import tensorflow as tf

    paths = {}
    writer = tf.summary.create_file_writer(str(log_dir)) if log_dir else None
    for name, fig in figures.items():
        path = out_dir / f"{name}.png"
        pixels = save_png(fig, path)
        paths[name] = path
        if writer is not None:
            with writer.as_default(step=0):
                tf.summary.image(f"figures/{name}", pixels[None])
    if writer is not None:
        writer.close()
    return paths


def _checked_dirs(args):
    """The run directory, its figure folders writable and `--data_dir` readable, or `paths.PathError`."""
    from gmvae_keras import paths

    model_dir = paths.check_input_dir(args.model_dir, "--model_dir", writable=True)
    for folder in (model_dir / "figures", model_dir / "logs" / "figures"):
        problem = paths.output_dir_problem(folder)
        if problem:
            raise paths.PathError(f"--model_dir={model_dir}: {folder} {problem}")
    if args.data_dir is not None:
        paths.check_input_dir(args.data_dir, "--data_dir")
    return model_dir


def _test_set(config, data_dir):
    """`(images, labels)` of the run's test split, read as the run read its data."""
    from gmvae_keras import data as data_lib

    if config.dataset != "folder":
        return data_lib.load_raw(config.dataset, data_dir=data_dir)[1]
    from gmvae_keras.train import load_data

    data = load_data(dataclasses.replace(config, data_dir=str(data_dir)))
    if not len(data.test_labels):
        raise data_lib.DataError(f"{data_dir} has no test/ folder: the figures are of test images")
    return data.test_images, data.test_labels


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m gmvae_keras.figures", description=__doc__.splitlines()[0])
    parser.add_argument("--model_dir", required=True, help="run directory of gmvae_keras.main")
    parser.add_argument("--which", choices=["best", "last"], default="best")
    parser.add_argument("--data_dir", default=None, help="override the run's --data_dir")
    parser.add_argument("--tsne_points", type=int, default=3000, help="test images in the t-SNE plot")
    parser.add_argument("--samples", type=int, default=10, help="generated images per category")
    args = parser.parse_args(argv)
    if args.tsne_points < 2 or args.samples < 1:
        print("error: --tsne_points must be >= 2 and --samples >= 1", file=sys.stderr)
        return 2
    from gmvae_keras import paths

    try:
        model_dir = _checked_dirs(args)
    except paths.PathError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    from gmvae_keras import checkpoint as ckpt
    from gmvae_keras import data as data_lib
    from gmvae_keras.settings import ConfigError

    try:
        config, path = ckpt.read_run(model_dir, args.which)
        class_names = ckpt.read_json(model_dir / "class_names.json", {}).get("class_names")
        test_images, test_labels = _test_set(config, args.data_dir or config.data_dir)
        model = ckpt.load_model(path)
    except (ConfigError, ckpt.RunError, data_lib.DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    written = write_figures(
        model,
        test_images,
        test_labels,
        model_dir / "figures",
        model_dir / "logs" / "figures",
        mode=config.mode,
        tsne_points=args.tsne_points,
        samples=args.samples,
        seed=config.seed,
        history=read_validation_history(model_dir / "logs" / "validation"),
        class_names=class_names,
    )
    for name, p in written.items():
        print(f"{name}: {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
