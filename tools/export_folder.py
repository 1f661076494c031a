"""Write a built-in data set as a folder of image files, in the layout `--dataset=folder` reads.

    python tools/export_folder.py --dataset=mnist --num_labeled=100 --seed=S [--data_dir=DIR] OUT
    python tools/export_folder.py --dataset=fashion_mnist --seed=S --image_size=64 --channels=3 --format=jpeg OUT

OUT gets `labeled/<class>/` (the seed's labeled draw), `unlabeled/` (the rest
of the seed's train split), `val/<class>/` and `test/<class>/`. A file is
named after the image's index in its split of `data.load_dataset(...,
seed=S)` (`train-00042.png`), and class folders sort in label order (`0`..`9`,
or `0_T-shirt-top`, `1_Trouser`, ... where the classes have names), so that
`data.from_folder(OUT)` gives back the same images and labels. By default
the images are written as they are (PNG, the data set's size and channels);
`--image_size`, `--channels` and `--format=jpeg` write another version of
them (`data.images`' resizing and grey-to-RGB replication).

The folder is written beside OUT and renamed into place: OUT must not exist.
Prints one JSON line with the counts; exits 2 on bad input.
"""

import argparse
import concurrent.futures
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

FORMATS = {"png": ".png", "jpeg": ".jpg"}


def class_folders(class_names):
    """Folder names that sort in label order: the names themselves when they are 0, 1, ..., else `i_name`."""
    if list(class_names) == [str(i) for i in range(len(class_names))] and len(class_names) <= 10:
        return list(class_names)
    width = len(str(len(class_names) - 1))
    safe = ["".join(c if c.isalnum() or c in "-_ ." else "-" for c in name) for name in class_names]
    return [f"{i:0{width}d}_{name}" for i, name in enumerate(safe)]


def _converted(image, image_size, channels):
    from gmvae_keras.data import images as image_lib

    if channels == 3 and image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    elif channels == 1 and image.shape[-1] == 3:
        image = image_lib.to_channels(image, 1)
    return image_lib.fit_square(image, image_size) if image_size else image


def _save(image, path, image_format):
    from PIL import Image

    pixels = image[..., 0] if image.shape[-1] == 1 else image
    if image_format == "jpeg":
        Image.fromarray(pixels).save(path, format="JPEG", quality=95)
    else:
        Image.fromarray(pixels).save(path, format="PNG")


def write_folder(data, out, image_size=None, channels=None, image_format="png", workers=None):
    """Writes a `SplitData` as a folder (see the module docstring); returns `{part: image count}`."""
    out = Path(out)
    extension = FORMATS[image_format]
    folders = class_folders(data.class_names)
    labeled = set(data.labeled_indices.tolist())
    jobs = []
    for i in range(len(data.train_images)):
        name = f"train-{i:05d}{extension}"
        if i in labeled:
            jobs.append((data.train_images, i, Path("labeled") / folders[data.train_labels[i]] / name))
        else:
            jobs.append((data.train_images, i, Path("unlabeled") / name))
    for part, images, labels in (
        ("val", data.val_images, data.val_labels),
        ("test", data.test_images, data.test_labels),
    ):
        for i in range(len(images)):
            jobs.append((images, i, Path(part) / folders[labels[i]] / f"{part}-{i:05d}{extension}"))
    for relative in {job[2].parent for job in jobs}:
        (out / relative).mkdir(parents=True, exist_ok=True)

    def write(job):
        images, i, relative = job
        _save(_converted(images[i], image_size, channels), out / relative, image_format)

    with concurrent.futures.ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
        list(pool.map(write, jobs, chunksize=256))
    counts = {}
    for _, _, relative in jobs:
        counts[relative.parts[0]] = counts.get(relative.parts[0], 0) + 1
    return counts


def main(argv=None):
    parser = argparse.ArgumentParser(prog="tools/export_folder.py", description=__doc__.splitlines()[0])
    parser.add_argument("out", help="the folder to write (must not exist)")
    parser.add_argument("--dataset", required=True, help="mnist, fashion_mnist, svhn or a tfds name")
    parser.add_argument("--data_dir", default=None, help="folder with the data set's original files")
    parser.add_argument("--num_labeled", type=int, default=100, help="labeled images, as for training")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split and the labeled draw")
    parser.add_argument("--image_size", type=int, default=None, help="write the images at this square size")
    parser.add_argument("--channels", type=int, choices=[1, 3], default=None, help="write 1 or 3 channels")
    parser.add_argument("--format", choices=sorted(FORMATS), default="png", help="image file format")
    args = parser.parse_args(argv)

    from gmvae_keras import data as data_lib
    from gmvae_keras import paths
    from gmvae_keras.networks import IMAGE_SIZES

    out = Path(args.out)
    try:
        if out.exists() or out.is_symlink():
            raise paths.PathError(f"{out} exists; choose a new folder (nothing was written)")
        paths.check_output_dir(out.parent if str(out.parent) else Path("."), "the parent of OUT")
        if args.image_size is not None and args.image_size not in IMAGE_SIZES:
            raise data_lib.DataError(
                f"--image_size={args.image_size} is not supported; the networks take {IMAGE_SIZES}"
            )
        if args.data_dir is not None:
            paths.check_input_dir(args.data_dir, "--data_dir")
        data = data_lib.load_dataset(args.dataset, data_dir=args.data_dir, num_labeled=args.num_labeled, seed=args.seed)
    except (paths.PathError, data_lib.DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    partial = out.with_name(f".{out.name}.partial-{os.getpid()}")
    try:
        counts = write_folder(data, partial, args.image_size, args.channels, args.format)
        os.replace(partial, out)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    print(
        json.dumps(
            {
                "out": str(out),
                "dataset": data.name,
                "seed": args.seed,
                "num_labeled": data.num_labeled,
                "format": args.format,
                "image_size": args.image_size or data.image_shape[0],
                "channels": args.channels or data.image_shape[-1],
                "images": counts,
                "seconds": round(time.perf_counter() - start, 1),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
