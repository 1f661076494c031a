"""Command line: `python -m gmvae_keras.predict --model_dir=RUN PATH...`: name the classes of image files.

Reads the run's exported SavedModel (`RUN/export`) and nothing else of the
run: the images go through its `serving_bytes` signature, which decodes,
converts and resizes them as training read its folder. PATHs are image
files or folders, searched as the folder reader searches them
(`data.folder.image_paths`: recursively, for .png, .jpg, .jpeg, .bmp and
.gif files, hidden ones left out, sorted). Writes a CSV with a header row
to standard output, or to `--out=FILE`: `path, class, probability, top1, top1_probability,
top2, top2_probability, top3, top3_probability` (fewer top columns for
fewer classes), one row per image. A file that cannot be decoded is left
out with one line on standard error; bad arguments exit with status 2.
"""

import argparse
import csv
import io
import os
import sys
from pathlib import Path

from gmvae_keras._quiet import quiet_tensorflow


class PredictError(ValueError):
    """A bad argument; the message is one line."""


def image_files(paths):
    """The image files of `paths`: files as given, folders searched as the folder reader does (`image_paths`)."""
    from gmvae_keras.data.folder import image_paths
    from gmvae_keras.data.images import EXTENSIONS

    files = []
    for path in map(Path, paths):
        if path.is_dir():
            files += [Path(found) for found in image_paths(path)[0]]
        elif path.is_file():
            files.append(path)
        else:
            raise PredictError(f"{path} does not exist")
    if not files:
        raise PredictError(f"no image files ({', '.join(EXTENSIONS)}) in {' '.join(map(str, paths))}")
    return files


def find_export(model_dir):
    """The SavedModel folder of a run directory."""
    export_dir = Path(model_dir) / "export"
    if not (export_dir / "saved_model.pb").is_file():
        raise PredictError(
            f"no SavedModel in {export_dir}; a finished run writes one, or run "
            f"python -m gmvae_keras.export --model_dir={model_dir}"
        )
    return export_dir


def load_export(model_dir):
    """`(serving_bytes signature, class names)` of a run's SavedModel."""
    export_dir = find_export(model_dir)
    import tensorflow as tf

    loaded = tf.saved_model.load(str(export_dir))
    if "serving_bytes" not in loaded.signatures or not hasattr(loaded, "class_names"):
        raise PredictError(
            f"{export_dir} predates image files as input; export it again with "
            f"python -m gmvae_keras.export --model_dir={model_dir}"
        )
    names = [name.decode() for name in loaded.class_names[0].numpy()]
    return loaded.signatures["serving_bytes"], names


def predict_files(serve, files, batch_size=256, on_error=None, output="probabilities"):
    """`(files kept, [n, ...] output)` of image files through `serve` (`load_export`'s signature).

    `output` names one of the signature's outputs, or is a tuple of names (then a tuple of arrays). A file that
    cannot be decoded is left out and reported to `on_error(path, message)`.
    """
    import numpy as np
    import tensorflow as tf

    from gmvae_keras.data import images

    names = (output,) if isinstance(output, str) else tuple(output)
    kept, parts = [], []

    def run(batch):
        contents = [path.read_bytes() for path in batch]
        result = serve(images=tf.constant(contents))
        return [result[name].numpy() for name in names]

    for start in range(0, len(files), batch_size):
        batch = files[start : start + batch_size]
        try:
            parts.append(run(batch))
            kept += batch
        except (tf.errors.InvalidArgumentError, OSError):
            # One bad file fails its batch: image by image, to keep the others.
            for path in batch:
                try:
                    parts.append(run([path]))
                    kept.append(path)
                except (tf.errors.InvalidArgumentError, OSError) as e:
                    if on_error:
                        on_error(path, str(e) if isinstance(e, OSError) else images.failure(path))
    arrays = tuple(
        np.concatenate([part[i] for part in parts]) if parts else np.zeros((0, 0), "float32") for i in range(len(names))
    )
    return kept, arrays[0] if isinstance(output, str) else arrays


def write_csv(out, files, probabilities, class_names):
    """The CSV rows of the module docstring."""
    top = min(3, len(class_names))
    writer = csv.writer(out, lineterminator="\n")
    header = ["path", "class", "probability"]
    for rank in range(1, top + 1):
        header += [f"top{rank}", f"top{rank}_probability"]
    writer.writerow(header)
    for path, row in zip(files, probabilities, strict=True):
        order = row.argsort()[::-1][:top]
        line = [str(path), class_names[order[0]], f"{row[order[0]]:.6f}"]
        for c in order:
            line += [class_names[c], f"{row[c]:.6f}"]
        writer.writerow(line)


def write_output(text, out, message):
    """`text` to standard output, or to the file `out` (written whole, then renamed into place) and `message`
    to standard error."""
    if out is None:
        sys.stdout.write(text)
        return
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, out)
    print(message, file=sys.stderr, flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m gmvae_keras.predict", description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
    parser.add_argument("--model_dir", required=True, help="run directory of gmvae_keras.main (reads RUN/export)")
    parser.add_argument("--out", default=None, help="write the CSV here instead of standard output")
    parser.add_argument("--batch_size", type=int, default=256, help="images per call of the SavedModel")
    args = parser.parse_args(argv)
    quiet_tensorflow()
    from gmvae_keras import paths

    try:
        if args.batch_size < 1:
            raise PredictError(f"--batch_size must be >= 1, got {args.batch_size}")
        model_dir = paths.check_input_dir(args.model_dir, "--model_dir")
        out = paths.check_output_file(args.out, "--out") if args.out else None
        find_export(model_dir)
        files = image_files(args.paths)
        serve, class_names = load_export(model_dir)
    except (PredictError, paths.PathError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"predicting {len(files)} images with {model_dir / 'export'}", file=sys.stderr, flush=True)
    bad = []

    def report(path, message):
        bad.append(path)
        print(f"skipped {path}: {message}", file=sys.stderr, flush=True)

    kept, probabilities = predict_files(serve, files, args.batch_size, report)
    text = io.StringIO()
    write_csv(text, kept, probabilities, class_names)
    write_output(text.getvalue(), out, f"wrote {len(kept)} rows to {out}")
    if bad:
        print(f"{len(bad)} of {len(files)} files could not be read as images", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
