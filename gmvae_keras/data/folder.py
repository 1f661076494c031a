"""A user's own images: a folder, or arrays, as the `SplitData` that training takes.

Folder layout (`from_folder`)::

    DIR/labeled/<class name>/...   the labeled images, any depth below the class folder
    DIR/unlabeled/...              images without labels, any depth (optional)
    DIR/val/<class name>/...       validation images (optional)
    DIR/test/<class name>/...      test images (optional)

- Classes are the folder names of `labeled/`, sorted by their Unicode code
  points; class `i` is the `i`-th name. `val/` and `test/` may hold fewer
  classes, never others.
- The unlabeled stream is the labeled images followed by `unlabeled/`, as
  with the built-in data sets, whose labeled set is part of the train split.
- Order: within each part, files sorted by their path relative to the part
  (the labeled part class by class). `train_images` are the labeled images,
  then the unlabeled ones; `labeled_indices` are `0 .. n_labeled - 1`.
- Without `val/`, the run has no validation split and keeps its last epoch
  (a stratified share of a few labeled images would select noisily and take
  labels from training). Without `test/`, there is no test error.
- A clustering (`num_classes=K` and no `labeled/`) reads `unlabeled/` alone.
- Files whose extension is not one of `images.EXTENSIONS` (`.txt`,
  `.DS_Store`) and hidden files are ignored and counted.
- Every image is decoded once, in parallel, into uint8 arrays, by the
  SavedModel's own decoding (`images.decode_bytes`); the arrays are cached
  under `cache_dir`, keyed by the listing (paths, sizes, modification
  times) and the settings, so a second run or a resume does not decode again.

Every bad input raises `DataError` with one line naming the path.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from gmvae_keras.data import images as image_lib
from gmvae_keras.data.errors import DataError
from gmvae_keras.data.splits import SplitData, checked_images, checked_pair

PARTS = ("labeled", "unlabeled", "val", "test")

# Bumped when what a cache file holds changes.
_CACHE_VERSION = 2


@dataclasses.dataclass
class Listing:
    """The image files of a folder: `{part: [(path str, class index or -1), ...]}`, the classes, what was ignored."""

    root: Path
    class_names: tuple
    files: dict
    ignored: int


def default_cache_dir():
    """`$GMVAE_KERAS_CACHE`, else `$XDG_CACHE_HOME/gmvae_keras`, else `~/.cache/gmvae_keras`."""
    if os.environ.get("GMVAE_KERAS_CACHE"):
        return Path(os.environ["GMVAE_KERAS_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "gmvae_keras"


def image_paths(folder):
    """`(image files below `folder` sorted by their relative path, count of ignored files)`; paths are str.

    Hidden files and folders, and files without an image extension (`images.EXTENSIONS`), are the ignored ones.
    """
    found, ignored = [], 0
    prefix = len(str(folder)) + 1
    for directory, subdirs, names in os.walk(folder):
        subdirs[:] = [d for d in subdirs if not d.startswith(".")]
        for name in names:
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in image_lib.EXTENSIONS:
                found.append(os.path.join(directory, name))
            else:
                ignored += 1
    # Sorted as relative POSIX paths, whatever the platform's separator.
    found.sort(key=lambda path: path[prefix:].replace(os.sep, "/"))
    return found, ignored


def list_folder(root, num_classes=None):
    """The `Listing` of a folder in the layout above.

    Args:
        root: the folder.
        num_classes: the categories of a clustering of `unlabeled/` alone
            (only without `labeled/`).
    """
    root = Path(root)
    if not root.exists():
        raise DataError(f"--data_dir={root} does not exist")
    if not root.is_dir():
        raise DataError(f"--data_dir={root} is a file, not a folder")
    labeled = root / "labeled"
    files = {}
    if labeled.is_dir():
        if num_classes:
            raise DataError(f"--num_classes is for a folder without labeled/: {labeled} names the classes")
        class_names, files["labeled"], ignored = _list_labeled(labeled, root)
    elif num_classes:
        class_names, ignored = tuple(str(c) for c in range(int(num_classes))), 0
    else:
        raise DataError(
            f"{root} has no labeled/ folder: put labeled images in {labeled}/<class name>/, or cluster "
            "unlabeled/ alone with --mode=clustering --num_classes=K"
        )
    unlabeled = root / "unlabeled"
    if unlabeled.is_dir():
        found, skipped = image_paths(unlabeled)
        files["unlabeled"], ignored = [(path, -1) for path in found], ignored + skipped
    if "labeled" not in files and not files.get("unlabeled"):
        raise DataError(f"{unlabeled} holds no image to cluster")
    for part in ("val", "test"):
        if (root / part).is_dir():
            files[part], skipped = _list_classes(root / part, class_names, clustering="labeled" not in files)
            ignored += skipped
    return Listing(root=root, class_names=class_names, files=files, ignored=ignored)


def _class_folders(folder):
    """The visible subfolders of `folder`, sorted by name."""
    return sorted((d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")), key=str)


def _list_labeled(labeled, root):
    """`(class names, [(path, class index)], ignored files)` of `labeled/`, checked."""
    class_dirs = _class_folders(labeled)
    if not class_dirs:
        raise DataError(f"{labeled} holds no class folder; put each class's images in labeled/<class name>/")
    for d in class_dirs:
        if d.name in PARTS and d.name != "labeled":
            raise DataError(f"{d} would be taken for a class named {d.name!r}: move it to {root / d.name}")
    class_names = tuple(d.name for d in class_dirs)
    if len(class_names) < 2:
        raise DataError(f"{labeled} holds a single class ({class_names[0]!r}); a classifier needs two or more")
    entries, ignored = [], 0
    for index, d in enumerate(class_dirs):
        found, skipped = image_paths(d)
        ignored += skipped
        if not found:
            raise DataError(f"the class folder {d} holds no image ({', '.join(image_lib.EXTENSIONS)})")
        entries += [(path, index) for path in found]
    loose = [p for p in labeled.iterdir() if p.is_file() and not p.name.startswith(".")]
    if any(p.suffix.lower() in image_lib.EXTENSIONS for p in loose):
        raise DataError(f"{labeled} holds images outside a class folder; put them in labeled/<class name>/")
    return class_names, entries, ignored + len(loose)


def _list_classes(folder, class_names, clustering):
    """`([(path, class index)], ignored files)` of `val/` or `test/`, whose classes must be `class_names`'."""
    index = {name: i for i, name in enumerate(class_names)}
    entries, ignored = [], 0
    for d in _class_folders(folder):
        if d.name not in index:
            if clustering:
                raise DataError(f"{d}: a clustering's {folder.name}/ folders are named 0..{len(class_names) - 1}")
            raise DataError(f"{d}: class {d.name!r} is not among the classes of labeled/ ({', '.join(class_names)})")
        found, skipped = image_paths(d)
        ignored += skipped
        entries += [(path, index[d.name]) for path in found]
    return entries, ignored


def infer_settings(paths):
    """`(image_size, channels)` that suit images: the largest supported size not above their median longer
    side (the smallest supported one at least), and 1 channel when none of them holds colour."""
    from gmvae_keras.networks import IMAGE_SIZES

    longer, grey = [], True
    for path in paths:
        try:
            width, height, is_grey = image_lib.probe_file(path)
        except image_lib.BadImage:
            continue  # reported by the decoding, with its path
        longer.append(max(width, height))
        grey = grey and is_grey
    median = float(np.median(longer)) if longer else IMAGE_SIZES[0]
    fitting = [size for size in IMAGE_SIZES if size <= median]
    return (fitting[-1] if fitting else IMAGE_SIZES[0]), (1 if grey else 3)


def decode_all(paths, image_size, channels, skip_bad_images=False):
    """`(uint8 [n, size, size, channels], indices of the paths kept)`: every file through
    `images.decode_bytes`, the SavedModel's own decoding, in parallel `tf.data` threads.

    Raises:
        DataError: a file that cannot be decoded (or is too small), named,
            unless `skip_bad_images`, which leaves it out.
    """
    import tensorflow as tf

    n = len(paths)
    out = np.zeros((n, image_size, image_size, channels), np.uint8)
    kept = np.zeros(n, bool)
    if n:
        dataset = tf.data.Dataset.from_tensor_slices((np.arange(n), np.asarray(paths, dtype=object)))
        dataset = dataset.map(
            tf.autograph.experimental.do_not_convert(
                lambda i, path: (i, image_lib.decode_bytes(tf.io.read_file(path), image_size, channels))
            ),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
        try:
            start = 0
            for _, images in dataset.batch(256).as_numpy_iterator():
                out[start : start + len(images)] = images
                start += len(images)
            kept[:] = True
        except tf.errors.OpError:
            # Some file fails: again, dropping the failures (slower); the kept indices say which.
            for indices, images in dataset.ignore_errors().batch(256).as_numpy_iterator():
                out[indices] = images
                kept[indices] = True
    bad = np.flatnonzero(~kept)
    if len(bad) and not skip_bad_images:
        why = image_lib.failure(paths[bad[0]], image_size)
        raise DataError(f"{paths[bad[0]]}: {why}; pass --skip_bad_images to leave such files out")
    return (out if not len(bad) else out[kept]), np.flatnonzero(kept)


def _listing_key(listing, image_size, channels, skip_bad_images):
    digest = hashlib.sha256()
    header = {"version": _CACHE_VERSION, "size": image_size, "channels": channels, "skip": skip_bad_images}
    digest.update(json.dumps(header, sort_keys=True).encode())
    prefix = len(str(listing.root)) + 1
    for part in PARTS:
        for path, label in listing.files.get(part, ()):
            stat = os.stat(path)
            digest.update(f"{part}\0{path[prefix:]}\0{label}\0".encode())
            digest.update(f"{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:32]


def _memory_available():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _check_memory(count, image_size, channels, root):
    needed = count * image_size * image_size * channels
    available = _memory_available()
    if available is not None and needed > available:
        raise DataError(
            f"{root}: {count} images of {image_size}x{image_size}x{channels} need {needed / 2**30:.1f} GiB decoded, "
            f"more than the {available / 2**30:.1f} GiB of memory available; lower --image_size or --channels"
        )


def from_folder(
    data_dir,
    image_size=None,
    channels=None,
    skip_bad_images=False,
    num_classes=None,
    cache_dir=None,
    print_fn=None,
):
    """The `SplitData` of a folder in the layout of this module's docstring.

    Args:
        data_dir: the folder.
        image_size: the side the networks see (`networks.IMAGE_SIZES`);
            None infers it from the labeled images (`infer_settings`).
        channels: 1 or 3; None infers it from the labeled images.
        skip_bad_images: leave out files that cannot be decoded (counted)
            instead of refusing the folder.
        num_classes: the categories of a clustering of `unlabeled/` alone.
        cache_dir: where decoded arrays are cached (`default_cache_dir()`);
            False disables the cache.
        print_fn: where the start-up summary goes (None: nowhere).
    """
    from gmvae_keras.networks import IMAGE_SIZES

    if image_size is not None and image_size not in IMAGE_SIZES:
        raise DataError(f"--image_size={image_size} is not supported; the networks take {IMAGE_SIZES}")
    if channels is not None and channels not in (1, 3):
        raise DataError(f"--channels must be 1 or 3, got {channels}")
    listing = list_folder(data_dir, num_classes)
    first = listing.files.get("labeled") or listing.files.get("unlabeled")
    inferred = infer_settings([path for path, _ in first[:: max(1, len(first) // 500)]])
    settings = (image_size or inferred[0], channels or inferred[1], skip_bad_images)
    counts = {part: len(listing.files.get(part, ())) for part in PARTS}
    _check_memory(sum(counts.values()), settings[0], settings[1], listing.root)
    arrays, decoded_now = _decoded_arrays(listing, settings, counts["labeled"], cache_dir)
    num_labeled = int(arrays["num_labeled"])
    found = {"labeled": num_labeled, "unlabeled": len(arrays["train_labels"]) - num_labeled}
    found.update({part: len(arrays[f"{part}_labels"]) for part in ("val", "test") if f"{part}_labels" in arrays})
    if print_fn:
        kept = ", ".join(f"{found[part]} {part}" for part in PARTS if part in listing.files)
        skipped = sum(counts.values()) - sum(found.values())
        shown = "x".join(map(str, (settings[0], settings[0], settings[1])))
        print_fn(
            f"folder {listing.root}: {kept} images of {len(listing.class_names)} classes "
            f"({', '.join(listing.class_names)}) at {shown}"
            f"{' (inferred)' if image_size is None and channels is None else ''}; {listing.ignored} files ignored "
            f"(not images){f', {skipped} bad images skipped' if skipped else ''}; "
            f"{'decoded' if decoded_now else 'read from the cache'}"
        )
    if not len(arrays["train_labels"]):
        raise DataError(f"{listing.root}: no image could be read")
    pairs = {part: (arrays[f"{part}_images"], arrays[f"{part}_labels"]) for part in ("val", "test") if part in found}
    train = (arrays["train_images"], arrays["train_labels"])
    return _split("folder", *train, num_labeled, listing.class_names, pairs.get("val"), pairs.get("test"))


def _decoded_arrays(listing, settings, labeled_files, cache_dir):
    """`({part_images, part_labels, num_labeled}, decoded now)`: from the cache, or decoded (and cached).

    `settings` is `(image_size, channels, skip_bad_images)`. The labeled images and the unlabeled ones are
    decoded into one array, the train split, which is never copied.
    """
    cache_path = None
    if cache_dir is not False:
        cache_path = Path(cache_dir or default_cache_dir()) / f"{_listing_key(listing, *settings)}.npz"
        if cache_path.is_file():
            try:
                with np.load(cache_path) as stored:
                    return {name: stored[name] for name in stored.files}, False
            except (OSError, ValueError):
                pass  # a damaged cache is decoded again
    parts = {"train": listing.files.get("labeled", []) + listing.files.get("unlabeled", [])}
    parts.update({part: listing.files[part] for part in ("val", "test") if part in listing.files})
    arrays = {}
    for part, entries in parts.items():
        images, kept = decode_all([path for path, _ in entries], *settings)
        arrays[f"{part}_images"] = images
        arrays[f"{part}_labels"] = np.asarray([entries[i][1] for i in kept], np.int64)
        if part == "train":
            arrays["num_labeled"] = np.int64(np.sum(kept < labeled_files))
    if cache_path is not None:
        _write_cache(cache_path, arrays)
    return arrays, True


def _write_cache(path, arrays):
    """Writes the cache atomically; a folder that cannot be written leaves the run uncached."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except OSError:
        pass


def from_arrays(
    labeled_images,
    labels,
    unlabeled_images=None,
    class_names=None,
    val=None,
    test=None,
    name="arrays",
    num_classes=None,
    image_shape=None,
):
    """The `SplitData` of arrays: a labeled set, optional unlabeled images, validation and test pairs.

    Args:
        labeled_images: `[n, H, W(, C)]` uint8, or None for a clustering.
        labels: `[n]` class indices in `[0, c)`; classes may hold unequal numbers.
        unlabeled_images: `[m, H, W(, C)]` uint8 or None; the labeled images
            feed the unlabeled stream too.
        class_names: c names (default "0", "1", ...).
        val, test: `(images, labels)` or None (no validation: the run keeps
            its last epoch; no test: no test error).
        num_classes: c for a clustering without labeled images.
        image_shape: the expected `(H, W, C)` (default the images').
    """
    from gmvae_keras.prediction import class_names as resolve_names

    if labeled_images is None:
        if not num_classes and class_names is None:
            raise DataError("a clustering without labeled images needs num_classes")
        if unlabeled_images is None:
            raise DataError("no images: give labeled_images or unlabeled_images")
        num_classes = len(class_names) if class_names is not None else int(num_classes)
        unlabeled = checked_images(unlabeled_images, "unlabeled", image_shape)
        labeled, labeled_labels = unlabeled[:0], np.zeros(0, np.int64)
    else:
        labels = np.asarray(labels).reshape(-1)
        if num_classes is None:
            num_classes = len(class_names) if class_names is not None else int(labels.max()) + 1 if len(labels) else 0
        labeled, labeled_labels = checked_pair((labeled_images, labels), "labeled", num_classes, image_shape)
        if num_classes < 2:
            raise DataError("a classifier needs labeled images of two or more classes")
        unlabeled = (
            None if unlabeled_images is None else checked_images(unlabeled_images, "unlabeled", labeled.shape[1:])
        )
    train = labeled if unlabeled is None or not len(unlabeled) else np.concatenate([labeled, unlabeled])
    train_labels = np.concatenate([labeled_labels, np.full(len(train) - len(labeled), -1, np.int64)])
    return _split(name, train, train_labels, len(labeled), resolve_names(class_names, num_classes), val, test)


def _split(name, train_images, train_labels, num_labeled, class_names, val, test):
    """The `SplitData` whose train images are `train_images` (the first `num_labeled` labeled), uncopied."""
    num_classes = len(class_names)
    missing = sorted(set(range(num_classes)) - set(train_labels[:num_labeled].tolist()))
    if num_labeled and missing:
        raise DataError(f"classes {', '.join(class_names[c] for c in missing)} have no labeled image")
    shape = tuple(int(d) for d in train_images.shape[1:])
    empty = (np.zeros((0,) + shape, np.uint8), np.zeros(0, np.int64))
    val_images, val_labels = empty if val is None else checked_pair(val, "val", num_classes, shape)
    test_images, test_labels = empty if test is None else checked_pair(test, "test", num_classes, shape)
    return SplitData(
        name=name,
        num_classes=num_classes,
        image_shape=shape,
        train_images=train_images,
        train_labels=train_labels,
        val_images=val_images,
        val_labels=val_labels,
        test_images=test_images,
        test_labels=test_labels,
        labeled_indices=np.arange(num_labeled, dtype=np.int64),
        class_names=class_names,
    )
