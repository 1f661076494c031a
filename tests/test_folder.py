"""A user's own images: the folder layout, image files as they come, bad input, and the path to `predict`."""

import csv
import importlib.util
import io
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from gmvae_keras import data as data_lib
from gmvae_keras import flagfiles, prediction
from gmvae_keras.config import ConfigError
from gmvae_keras.data import images as image_lib
from gmvae_keras.data.folder import list_folder

from conftest import REPO_ROOT

spec = importlib.util.spec_from_file_location("export_folder", REPO_ROOT / "tools" / "export_folder.py")
export_folder = importlib.util.module_from_spec(spec)
spec.loader.exec_module(export_folder)


def _split(seed=0, names=None):
    """A small built-in-style `SplitData`: 3 classes of 28×28 grey images, 6 labeled."""
    rng = np.random.default_rng(seed)
    train = (rng.integers(0, 256, (90, 28, 28, 1), dtype=np.uint8), np.arange(90) % 3)
    test = (rng.integers(0, 256, (15, 28, 28, 1), dtype=np.uint8), np.arange(15) % 3)
    data = data_lib.split_data("toy", train, test, 3, num_labeled=6, seed=seed)
    if names:
        data.class_names = tuple(names)
    return data


def _index(path):
    return int(re.search(r"-(\d+)\.", os.path.basename(path)).group(1))


@pytest.mark.parametrize("names", [None, ("T-shirt/top", "Bag", "Ankle boot")])
def test_a_folder_written_from_a_built_in_split_reads_back_byte_identical(tmp_path, names):
    built_in = _split(names=names)
    counts = export_folder.write_folder(built_in, tmp_path / "toy")
    assert counts == {"labeled": 6, "unlabeled": 66, "val": 18, "test": 15}
    folder = data_lib.from_folder(tmp_path / "toy", cache_dir=False)
    # Canonical order: labeled images class by class, then unlabeled ones, each sorted by path; the file names
    # are the images' indices in the built-in split.
    files = list_folder(tmp_path / "toy").files
    order = {part: [_index(path) for path, _ in entries] for part, entries in files.items()}
    train = order["labeled"] + order["unlabeled"]
    np.testing.assert_array_equal(folder.train_images, built_in.train_images[train])
    assert sorted(order["labeled"]) == built_in.labeled_indices.tolist()
    np.testing.assert_array_equal(folder.labeled_images, built_in.train_images[order["labeled"]])
    np.testing.assert_array_equal(folder.labeled_labels, built_in.train_labels[order["labeled"]])
    assert np.all(folder.train_labels[folder.num_labeled :] == -1)
    for part in ("val", "test"):
        np.testing.assert_array_equal(
            getattr(folder, f"{part}_images"), getattr(built_in, f"{part}_images")[order[part]]
        )
        np.testing.assert_array_equal(
            getattr(folder, f"{part}_labels"), getattr(built_in, f"{part}_labels")[order[part]]
        )
    assert folder.image_shape == (28, 28, 1) and folder.num_classes == 3
    # Folder names sort in label order; the names are the folders'.
    assert len(folder.class_names) == 3
    if names:
        assert folder.class_names == ("0_T-shirt-top", "1_Bag", "2_Ankle boot")


def _write(path, pixels, **kwargs):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, **kwargs)


def _mixed_folder(root, rng):
    """A folder of every format and mode the reader takes, of several sizes, with files to ignore."""
    for name in ("cat", "dog"):
        for i in range(4):
            _write(root / "labeled" / name / f"a{i}.png", rng.integers(0, 256, (28, 28), dtype=np.uint8))
        _write(root / "labeled" / name / "deep" / "er" / "b.jpg", rng.integers(0, 256, (50, 70, 3), dtype=np.uint8))
        _write(root / "val" / name / "v.png", rng.integers(0, 256, (28, 28), dtype=np.uint8))
        _write(root / "test" / name / "t.bmp", rng.integers(0, 256, (30, 30, 3), dtype=np.uint8))
    rgba = rng.integers(0, 256, (40, 20, 4), dtype=np.uint8)
    _write(root / "unlabeled" / "rgba.png", rgba)
    Image.fromarray(rgba[..., :3]).convert("P").save(root / "unlabeled" / "palette.gif")
    _write(root / "unlabeled" / "sub" / "grey.jpeg", rng.integers(0, 256, (28, 28), dtype=np.uint8))
    (root / "unlabeled" / "notes.txt").write_text("not an image")
    (root / "labeled" / "cat" / ".DS_Store").write_bytes(b"\0")


def test_mixed_formats_modes_and_sizes_read_as_the_bytes_signature_decodes_them(tmp_path):
    root = tmp_path / "mixed"
    _mixed_folder(root, np.random.default_rng(0))
    printed = []
    data = data_lib.from_folder(root, image_size=32, cache_dir=False, print_fn=printed.append)
    # Colour among the labeled images: 3 channels by default.
    assert data.image_shape == (32, 32, 3) and data.class_names == ("cat", "dog")
    assert data.num_labeled == 10 and len(data.train_images) == 13
    assert "2 files ignored" in printed[0] and "10 labeled, 3 unlabeled, 2 val, 2 test" in printed[0]
    listing = list_folder(root)
    paths = [p for p, _ in listing.files["labeled"] + listing.files["unlabeled"]]
    grey = data_lib.from_folder(root, image_size=28, channels=1, cache_dir=False)
    assert grey.image_shape == (28, 28, 1)
    for path, image, grey_image in zip(paths, data.train_images, grey.train_images, strict=True):
        for size, channels, read in ((32, 3, image), (28, 1, grey_image)):
            expected = image_lib.decode_bytes(tf.io.read_file(path), size, channels).numpy()
            np.testing.assert_array_equal(read, expected, err_msg=path)
            # Pillow and numpy give the same pixels as TensorFlow's decoding, colour conversion and resizing.
            pillow = image_lib.prepare(image_lib.decode_file(path), size, channels)
            np.testing.assert_array_equal(pillow, expected, err_msg=path)


def test_one_channel_is_the_integer_luma_of_rgb(tmp_path):
    rgb = np.random.default_rng(3).integers(0, 256, (28, 28, 3), dtype=np.uint8)
    wide = rgb.astype(np.int64)
    luma = ((299 * wide[..., 0] + 587 * wide[..., 1] + 114 * wide[..., 2] + 500) // 1000).astype(np.uint8)[..., None]
    np.testing.assert_array_equal(image_lib.to_channels(rgb, 1), luma)
    _write(tmp_path / "c.png", rgb)
    np.testing.assert_array_equal(image_lib.decode_bytes(tf.io.read_file(str(tmp_path / "c.png")), 28, 1), luma)


def test_resizing_keeps_the_aspect_ratio_and_pads_with_black():
    wide = np.full((10, 40, 1), 200, np.uint8)
    out = image_lib.fit_square(wide, 28)
    rows = np.flatnonzero(out[..., 0].max(axis=1))
    assert out.shape == (28, 28, 1) and len(rows) == 7 and rows[0] == 10  # 40x10 -> 28x7, centred
    assert out[0].max() == 0 and out[-1].max() == 0
    same = np.arange(28 * 28, dtype=np.uint8).reshape(28, 28, 1)
    assert image_lib.fit_square(same, 28) is same


def test_a_second_read_comes_from_the_cache_until_a_file_changes(tmp_path):
    root = tmp_path / "toy"
    export_folder.write_folder(_split(), root)
    printed = []
    first = data_lib.from_folder(root, cache_dir=tmp_path / "cache", print_fn=printed.append)
    second = data_lib.from_folder(root, cache_dir=tmp_path / "cache", print_fn=printed.append)
    assert printed[0].endswith("decoded") and printed[1].endswith("read from the cache")
    np.testing.assert_array_equal(first.train_images, second.train_images)
    changed = next((root / "unlabeled").iterdir())
    # New content under the old modification time: the size tells.
    stat = changed.stat()
    _write(changed, np.zeros((28, 28), np.uint8))
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    third = data_lib.from_folder(root, cache_dir=tmp_path / "cache", print_fn=printed.append)
    assert printed[2].endswith("decoded") and not np.array_equal(third.train_images, first.train_images)
    # The same size under a new modification time: the time tells.
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    data_lib.from_folder(root, cache_dir=tmp_path / "cache", print_fn=printed.append)
    assert printed[3].endswith("decoded")
    data_lib.from_folder(root, cache_dir=tmp_path / "cache", image_size=32, print_fn=printed.append)
    assert printed[4].endswith("decoded")


def _good_folder(root, classes=("a", "b"), per_class=3, size=(28, 28)):
    rng = np.random.default_rng(1)
    for name in classes:
        for i in range(per_class):
            _write(root / "labeled" / name / f"{i}.png", rng.integers(0, 256, size, dtype=np.uint8))
    return root


def _damage(kind):
    def apply(root):
        target = root / "labeled" / "a" / "0.png"
        if kind == "no labeled":
            os.rename(root / "labeled", root / "other")
        elif kind == "no class folder":
            for d in (root / "labeled").iterdir():
                for f in d.iterdir():
                    f.unlink()
                d.rmdir()
        elif kind == "empty class":
            (root / "labeled" / "c").mkdir()
        elif kind == "single class":
            for f in (root / "labeled" / "b").iterdir():
                f.unlink()
            (root / "labeled" / "b").rmdir()
        elif kind == "unlabeled inside labeled":
            _write(root / "labeled" / "unlabeled" / "x.png", np.zeros((28, 28), np.uint8))
        elif kind == "truncated":
            target.write_bytes(target.read_bytes()[:40])
        elif kind == "zero bytes":
            target.write_bytes(b"")
        elif kind == "text named png":
            target.write_text("hello")
        elif kind == "test class not labeled":
            _write(root / "test" / "zebra" / "z.png", np.zeros((28, 28), np.uint8))
        elif kind == "too small":
            _write(target, np.zeros((5, 40), np.uint8))
        elif kind == "a file as the folder":
            return root / "labeled" / "a" / "1.png"
        return root

    return apply


BAD_FOLDERS = [
    ("no labeled", r"has no labeled/ folder"),
    ("no class folder", r"holds no class folder"),
    ("empty class", r"labeled/c holds no image"),
    ("single class", r"holds a single class \('a'\)"),
    ("unlabeled inside labeled", r"labeled/unlabeled would be taken for a class named 'unlabeled': move it to"),
    ("truncated", r"labeled/a/0.png: not a readable image"),
    ("zero bytes", r"labeled/a/0.png: an empty file"),
    ("text named png", r"labeled/a/0.png: not a readable image"),
    ("test class not labeled", r"test/zebra: class 'zebra' is not among the classes of labeled/ \(a, b\)"),
    ("too small", r"labeled/a/0.png: too small: 40x5; an image's shorter side must be at least 7 pixels"),
    ("a file as the folder", r"is a file, not a folder"),
]


@pytest.mark.parametrize("kind, message", BAD_FOLDERS, ids=[kind for kind, _ in BAD_FOLDERS])
def test_a_bad_folder_is_refused_in_one_line_naming_the_path(tmp_path, kind, message):
    root = _damage(kind)(_good_folder(tmp_path / "f"))
    with pytest.raises(data_lib.DataError, match=message) as raised:
        data_lib.from_folder(root, image_size=28, cache_dir=False)
    assert "\n" not in str(raised.value)


def test_bad_images_are_skipped_and_counted_with_skip_bad_images(tmp_path):
    root = _good_folder(tmp_path / "f")
    (root / "labeled" / "a" / "0.png").write_bytes(b"")
    (root / "labeled" / "b" / "1.png").write_text("hello")
    printed = []
    data = data_lib.from_folder(root, skip_bad_images=True, cache_dir=False, print_fn=printed.append)
    assert data.num_labeled == 4 and data.labeled_labels.tolist() == [0, 0, 1, 1]
    assert "2 bad images skipped" in printed[0]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--num_labeled=50"], "a folder's labeled/ decides"),
        (["--image_size=48"], "--image_size=48 is not supported; the networks take 28, 32, 64"),
        (["--num_classes=3"], "--num_classes=3: for --mode=clustering"),
    ],
)
def test_folder_flags_that_cannot_work_are_refused(tmp_path, args, message):
    with pytest.raises(ConfigError, match=message):
        flagfiles.config_from_args(["--dataset=folder", f"--data_dir={tmp_path}", *args]).validate()


def test_folder_only_flags_are_refused_with_another_dataset():
    with pytest.raises(ConfigError, match="--image_size, --channels: for --dataset=folder only"):
        flagfiles.config_from_args(["--dataset=mnist", "--image_size=32", "--channels=3"]).validate()


def test_a_folder_can_start_from_a_built_in_recipe_without_its_dataset_taking_over(tmp_path):
    config = flagfiles.config_from_args(
        ["--dataset=folder", f"--data_dir={tmp_path}", "--recipe=fashion_mnist", "--settings=cpu"]
    )
    recipe = flagfiles.config_from_args(["--dataset=fashion_mnist", "--settings=cpu"])
    assert config.dataset == "folder"
    assert config.assignment_weight == recipe.assignment_weight == 4.7 and config.steps_per_epoch == 0
    own = flagfiles.config_from_args(["--dataset=folder", f"--data_dir={tmp_path}", "--settings=cpu"])
    assert own.steps_per_epoch == 480 and own.epochs == recipe.epochs


def test_unequal_labeled_classes_are_drawn_class_balanced():
    rng = np.random.default_rng(0)
    labels = np.array([0] * 20 + [1] * 2)
    data = data_lib.from_arrays(
        rng.integers(0, 256, (22, 28, 28), dtype=np.uint8),
        labels,
        unlabeled_images=rng.integers(0, 256, (200, 28, 28), dtype=np.uint8),
    )
    pool = data_lib.balanced_pool(data.labeled_indices, data.labeled_labels)
    assert np.bincount(data.labeled_labels[pool]).tolist() == [20, 20]
    batches = list(data_lib.make_train_dataset(data, batch_size=20, labeled_per_batch=10, seed=0, epochs=4))
    drawn = np.concatenate([b["labels"].numpy() for b in batches])
    assert len(drawn) == 4 * 22 * 10 and abs(np.mean(drawn == 1) - 0.5) < 0.05
    # A user's unlabeled images have no labels to monitor the assignment with.
    assert "unlabeled_labels" not in batches[0]
    # Equal classes: the labeled set as it is, so the built-in data sets draw as before.
    np.testing.assert_array_equal(data_lib.balanced_pool([4, 9, 2], [0, 1, 2]), [4, 9, 2])


def test_from_arrays_refuses_what_cannot_train():
    images = np.zeros((4, 28, 28), np.uint8)
    with pytest.raises(data_lib.DataError, match=r"classes c have no labeled image"):
        data_lib.from_arrays(images, [0, 1, 0, 1], class_names=["a", "b", "c"])
    with pytest.raises(data_lib.DataError, match="must be uint8"):
        data_lib.from_arrays(images.astype("float32"), [0, 1, 0, 1])
    with pytest.raises(data_lib.DataError, match=r"test labels must be in 0..1"):
        data_lib.from_arrays(images, [0, 1, 0, 1], test=(images, [0, 1, 2, 0]))
    with pytest.raises(data_lib.DataError, match="two or more"):
        data_lib.from_arrays(images, [0, 0, 0, 0])


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    """A finished tiny run on a folder without val/, then its SavedModel."""
    from gmvae_keras.train import train_and_evaluate

    root = tmp_path_factory.mktemp("data") / "toy"
    export_folder.write_folder(_split(names=("cat", "dog", "bird")), root)
    for f in (root / "val").rglob("*.png"):
        f.unlink()
    for d in sorted((root / "val").rglob("*"), reverse=True):
        d.rmdir()
    (root / "val").rmdir()
    model_dir = tmp_path_factory.mktemp("run") / "run"
    config = flagfiles.config_from_args(
        [
            "--dataset=folder",
            f"--data_dir={root}",
            "--batch_size=12",
            "--feature_size=8",
            "--latent_size=4",
            "--k=3",
            "--epochs=1",
            "--steps_per_epoch=3",
            "--image_summary_every=0",
            "--verbose=0",
        ]
    )
    os.environ["GMVAE_KERAS_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    try:
        metrics = train_and_evaluate(config, model_dir)
    finally:
        del os.environ["GMVAE_KERAS_CACHE"]
    return root, model_dir, metrics


def test_a_folder_run_keeps_its_class_names_and_its_last_epoch(folder_run):
    root, model_dir, metrics = folder_run
    names = ["0_cat", "1_dog", "2_bird"]
    assert metrics["class_names"] == names and metrics["num_labeled"] == 6
    assert json.loads((model_dir / "class_names.json").read_text())["class_names"] == names
    assert json.loads((model_dir / "config.json").read_text())["image_size"] == 28
    assert metrics["best_epoch"] == 0 and "val_error_last" not in metrics and "test_error_best" in metrics
    loaded = tf.saved_model.load(str(model_dir / "export"))
    assert [n.decode() for n in loaded.class_names[0].numpy()] == names


@pytest.mark.slow
def test_predict_names_the_test_folder_as_the_run_scored_it(folder_run, tmp_path):
    import keras

    root, model_dir, _ = folder_run
    out = tmp_path / "predictions.csv"
    done = subprocess.run(
        [sys.executable, "-m", "gmvae_keras.predict", f"--model_dir={model_dir}", f"--out={out}", str(root / "test")],
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    header = "path,class,probability,top1,top1_probability,top2,top2_probability,top3,top3_probability"
    assert out.read_text().splitlines()[0] == header
    data = data_lib.from_folder(root, cache_dir=False)
    # Without val/ the run exports its last epoch.
    model = keras.saving.load_model(sorted((model_dir / "checkpoints").iterdir())[-1])
    predicted = prediction.predict_labels(model, data.test_images)
    assert [row["path"] for row in rows] == sorted(str(p) for p in (root / "test").rglob("*.png"))
    assert [row["class"] for row in rows] == [data.class_names[c] for c in predicted]
    probabilities = prediction.predict_proba(model, data.test_images)
    np.testing.assert_allclose([float(row["probability"]) for row in rows], probabilities.max(-1), atol=2e-6)


def test_the_bytes_signature_gives_the_array_signatures_probabilities(folder_run):
    root, model_dir, _ = folder_run
    loaded = tf.saved_model.load(str(model_dir / "export"))
    files = sorted((root / "test").rglob("*.png"))
    arrays = np.stack([image_lib.decode_bytes(tf.io.read_file(str(f)), 28, 1).numpy() for f in files])
    by_bytes = loaded.signatures["serving_bytes"](images=tf.constant([f.read_bytes() for f in files]))
    by_arrays = loaded.signatures["serving_uint8"](images=tf.constant(arrays))
    np.testing.assert_allclose(by_bytes["probabilities"].numpy(), by_arrays["probabilities"].numpy(), atol=1e-5)
    # A JPEG of another size and colour is decoded, made grey and resized in the graph.
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (90, 60, 3), dtype=np.uint8)).save(buffer, "JPEG")
    served = loaded.signatures["serving_bytes"](images=tf.constant([buffer.getvalue()]))
    assert served["probabilities"].shape == (1, 3)


def test_predict_refuses_bad_arguments_in_one_line(folder_run, tmp_path, capsys):
    # In this process: tests/test_quiet.py checks that no start-up notice joins the line in a fresh one.
    from gmvae_keras import predict

    _, model_dir, _ = folder_run
    for args, message in (
        ([f"--model_dir={model_dir}", str(tmp_path / "missing")], "does not exist"),
        ([f"--model_dir={tmp_path}", str(tmp_path)], "no SavedModel in"),
        ([f"--model_dir={model_dir}", str(tmp_path)], "no image files"),
    ):
        assert predict.main(args) == 2, args
        err = capsys.readouterr().err
        assert message in err and err.strip().count("\n") == 0, err


def test_suggest_lists_files_of_unlabeled_and_refuses_a_folder_without_them(folder_run, tmp_path, capsys):
    import shutil

    from gmvae_keras import suggest

    root, model_dir, _ = folder_run
    out = tmp_path / "next.csv"
    assert suggest.main([f"--model_dir={model_dir}", "--count=4", f"--out={out}"]) == 0
    rows = list(csv.DictReader(out.open()))
    unlabeled = sorted(str(p) for p in (root / "unlabeled").rglob("*.png"))
    assert len(rows) == 4 and {r["path"] for r in rows} <= set(unlabeled)
    loaded = tf.saved_model.load(str(model_dir / "export"))
    served = loaded.signatures["serving_bytes"](images=tf.constant([open(r["path"], "rb").read() for r in rows]))
    assert [r["predicted"] for r in rows] == [n.decode() for n in served["class_name"].numpy()]
    bare, run = tmp_path / "bare", tmp_path / "run"
    shutil.copytree(root, bare)
    shutil.rmtree(bare / "unlabeled")
    shutil.copytree(model_dir, run)
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "data_dir": str(bare)}))
    capsys.readouterr()
    assert suggest.main([f"--model_dir={run}", "--count=1"]) == 2
    err = capsys.readouterr().err
    assert "holds no image: nothing to suggest" in err and err.strip().count("\n") == 0, err
    # A class folder added since the run would renumber the labeled images' classes under the vote.
    grown = tmp_path / "grown"
    shutil.copytree(root, grown)
    first_class = sorted(p for p in (grown / "labeled").iterdir())[0]
    shutil.copytree(first_class, grown / "labeled" / "0_aardvark")
    (run / "config.json").write_text(json.dumps({**config, "data_dir": str(grown)}))
    assert suggest.main([f"--model_dir={run}", "--count=1"]) == 2
    err = capsys.readouterr().err
    assert "but" in err and "train again on the folder as it is" in err and err.strip().count("\n") == 0, err


def test_a_folder_of_unlabeled_images_alone_is_clustered(tmp_path):
    root = tmp_path / "f"
    rng = np.random.default_rng(0)
    for i in range(30):
        _write(root / "unlabeled" / f"{i}.png", rng.integers(0, 256, (28, 28), dtype=np.uint8))
    data = data_lib.from_folder(root, num_classes=4, cache_dir=False)
    assert data.num_classes == 4 and data.num_labeled == 0 and len(data.train_images) == 30
    assert data.class_names == ("0", "1", "2", "3")


def test_the_64_pixel_networks_train_and_reconstruct_at_their_size():
    import keras

    from gmvae_keras import GMVAE

    keras.utils.set_random_seed(0)
    model = GMVAE(image_shape=(64, 64, 3), num_classes=3, feature_size=8, latent_size=4, k=2, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=False)
    images = np.random.default_rng(0).random((8, 64, 64, 3)).astype("float32")
    batch = {"images": images, "labels": np.array([0, 1, 2, 0])}
    logs = model.fit(tf.data.Dataset.from_tensors(batch).repeat(2), epochs=1, verbose=0).history
    assert np.isfinite(logs["loss"][0])
    assert model(images, training=False)["reconstruction"].shape == (8, 64, 64, 3)


def test_the_cli_refuses_a_bad_folder_in_one_line_and_writes_nothing(tmp_path):
    root = _good_folder(tmp_path / "f")
    (root / "labeled" / "b" / "2.png").write_text("hello")
    model_dir = tmp_path / "run"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "gmvae_keras.main",
            "--dataset=folder",
            f"--data_dir={root}",
            f"--model_dir={model_dir}",
        ],
        capture_output=True,
        text=True,
        timeout=280,
        env={**os.environ, "GMVAE_KERAS_CACHE": str(tmp_path / "cache")},
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: {root / 'labeled' / 'b' / '2.png'}: not a readable image (cannot identify image file); "
        "pass --skip_bad_images to leave such files out"
    ]
    assert not model_dir.exists() and not (tmp_path / "cache").exists()


def test_a_folder_is_clustered_end_to_end_with_its_clustering_recipe(tmp_path, monkeypatch):
    from gmvae_keras.train import train_and_evaluate

    root = tmp_path / "f"
    rng = np.random.default_rng(0)
    for i in range(40):
        _write(root / "unlabeled" / f"{i}.png", rng.integers(0, 256, (28, 28), dtype=np.uint8))
    for i in range(6):
        _write(root / "val" / str(i % 3) / f"{i}.png", rng.integers(0, 256, (28, 28), dtype=np.uint8))
    args = ["--dataset=folder", f"--data_dir={root}", "--mode=clustering", "--num_classes=3", "--batch_size=8"]
    args += ["--feature_size=8", "--latent_size=4", "--epochs=1", "--steps_per_epoch=2", "--verbose=0"]
    config = flagfiles.config_from_args(args)
    assert config.num_labeled == 0 and config.assignment_weight == 0 and config.reconstruction == "bce"
    monkeypatch.setenv("GMVAE_KERAS_CACHE", str(tmp_path / "cache"))
    metrics = train_and_evaluate(config, tmp_path / "run")
    assert metrics["mode"] == "clustering" and metrics["class_names"] == ["0", "1", "2"]
    assert "val_nmi_best" in metrics and "test_nmi_best" not in metrics


def test_figures_of_a_folder_run_read_its_test_folder(folder_run, monkeypatch, tmp_path):
    from gmvae_keras import figures

    _, model_dir, _ = folder_run
    monkeypatch.setenv("GMVAE_KERAS_CACHE", str(tmp_path / "cache"))
    # Without val/ the "best" model is the last one, which the run exported.
    assert figures.main([f"--model_dir={model_dir}", "--tsne_points=10"]) == 0
    assert (model_dir / "figures" / "confusion_matrix.png").stat().st_size > 0
