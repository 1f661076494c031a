"""Tests of gmvae_keras.data: file readers, splits and tf.data pipelines."""

import gzip
import importlib

import numpy as np
import pytest
import tensorflow_datasets as tfds
from hypothesis import given
from hypothesis import strategies as st

from gmvae_keras import data as gd
from gmvae_keras.data import sources
from gmvae_keras.data.errors import check_integer
from gmvae_keras.settings import ConfigError

try:
    from conftest import (
        decode_index,
        idx_bytes,
        write_idx,
        write_idx_dataset,
        write_svhn_dataset,
    )
except ImportError:  # tests/ imported as a package
    from tests.conftest import (
        decode_index,
        idx_bytes,
        write_idx,
        write_idx_dataset,
        write_svhn_dataset,
    )

SHAPE = (8, 8)


def one_line(exc_info):
    message = str(exc_info.value)
    assert "\n" not in message
    return message


@pytest.fixture
def idx_dir(tmp_path):
    """A synthetic 10-class IDX data set: 500 train, 60 test images."""
    expected = write_idx_dataset(tmp_path / "mnist", 500, 60, SHAPE, 10, seed=1)
    return tmp_path / "mnist", expected


@pytest.fixture
def split(idx_dir):
    folder, _ = idx_dir
    return gd.load_dataset("mnist", data_dir=folder, num_labeled=50, seed=0)


# --------------------------------------------------------------------------
# IDX reader.
# --------------------------------------------------------------------------


@given(
    shape=st.lists(st.integers(0, 5), min_size=1, max_size=4),
    compress=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_read_idx_round_trip(tmp_path_factory, shape, compress, seed):
    array = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    path = tmp_path_factory.mktemp("idx") / "a.idx"
    write_idx(path, array, compress=compress)
    out = gd.read_idx(path)
    assert out.dtype == np.uint8 and out.shape == tuple(shape)
    np.testing.assert_array_equal(out, array)


def test_read_idx_truncated_gzip(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    blob = gzip.compress(idx_bytes(np.zeros((20, 8, 8), np.uint8)))
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(gd.DataError) as e:
        gd.read_idx(path)
    assert str(path) in one_line(e)


@pytest.mark.parametrize(
    "mutate, words",
    [
        (lambda b: b[:-1], "truncated"),  # payload one byte short
        (lambda b: b + b"\0", "expected"),  # trailing garbage
        (lambda b: b"\x01" + b[1:], "magic"),  # wrong magic number
        (lambda b: b[:2] + b"\x0d" + b[3:], "0x0d"),  # float data type
        (lambda b: b[:6], "header"),  # header cut short
        (lambda b: b"", "bytes"),  # empty file
    ],
)
def test_read_idx_corrupt(tmp_path, mutate, words):
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    blob = mutate(idx_bytes(np.arange(12, dtype=np.uint8).reshape(3, 4)))
    path.write_bytes(gzip.compress(blob))
    with pytest.raises(gd.DataError) as e:
        gd.read_idx(path)
    message = one_line(e)
    assert str(path) in message and words in message


def test_read_idx_missing(tmp_path):
    with pytest.raises(gd.DataError, match="missing file"):
        gd.read_idx(tmp_path / "nope.gz")


# --------------------------------------------------------------------------
# Loading original files.
# --------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False])
def test_load_raw_idx(tmp_path, gz):
    expected = write_idx_dataset(tmp_path, 40, 20, SHAPE, 10, seed=3, gz=gz)
    (tx, ty), (vx, vy), k, name = gd.load_raw("Fashion-MNIST", data_dir=tmp_path)
    assert name == "fashion_mnist" and k == 10
    assert tx.shape == (40, 8, 8, 1) and tx.dtype == np.uint8
    np.testing.assert_array_equal(tx, expected["train"][0])
    np.testing.assert_array_equal(ty, expected["train"][1])
    np.testing.assert_array_equal(vx, expected["test"][0])
    np.testing.assert_array_equal(vy, expected["test"][1])


def test_load_raw_searches_named_subfolder(tmp_path):
    write_idx_dataset(tmp_path / "fashion_mnist", 30, 10, SHAPE, 10, seed=0)
    (tx, _), (vx, _), _, _ = gd.load_raw("fashion_mnist", data_dir=tmp_path)
    assert tx.shape[0] == 30 and vx.shape[0] == 10


def test_load_raw_missing_file(tmp_path):
    write_idx_dataset(tmp_path, 30, 10, SHAPE, 10)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(gd.DataError) as e:
        gd.load_raw("mnist", data_dir=tmp_path)
    assert str(tmp_path / "t10k-labels-idx1-ubyte.gz") in one_line(e)


def test_load_raw_label_count_mismatch(tmp_path):
    write_idx_dataset(tmp_path, 30, 10, SHAPE, 10)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(29, np.uint8))
    with pytest.raises(gd.DataError, match="29 labels"):
        gd.load_raw("mnist", data_dir=tmp_path)


def test_load_raw_label_out_of_range(tmp_path):
    write_idx_dataset(tmp_path, 30, 10, SHAPE, 10)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.full(10, 10, np.uint8))
    with pytest.raises(gd.DataError, match="label 10"):
        gd.load_raw("mnist", data_dir=tmp_path)


def test_load_raw_svhn(tmp_path):
    expected = write_svhn_dataset(tmp_path, 50, 20, seed=2)
    (tx, ty), (vx, vy), k, name = gd.load_raw("svhn", data_dir=tmp_path)
    assert name == "svhn" and k == 10
    assert tx.shape == (50, 32, 32, 3) and tx.dtype == np.uint8
    np.testing.assert_array_equal(tx, expected["train"][0])
    np.testing.assert_array_equal(ty, expected["train"][1])
    np.testing.assert_array_equal(vx, expected["test"][0])
    np.testing.assert_array_equal(vy, expected["test"][1])
    assert set(np.unique(ty)) == set(range(10))  # the 10s became 0s


def test_read_svhn_mat_label_ten_is_zero(tmp_path):
    import scipy.io

    x = np.zeros((32, 32, 3, 3), np.uint8)
    scipy.io.savemat(str(tmp_path / "a.mat"), {"X": x, "y": np.array([[10], [1], [9]])})
    images, labels = gd.read_svhn_mat(tmp_path / "a.mat")
    assert images.shape == (3, 32, 32, 3)
    assert labels.tolist() == [0, 1, 9]


def test_svhn_bad_files(tmp_path):
    write_svhn_dataset(tmp_path, 10, 10)
    (tmp_path / "test_32x32.mat").write_bytes(b"not a mat file at all")
    with pytest.raises(gd.DataError) as e:
        gd.load_raw("svhn", data_dir=tmp_path)
    assert str(tmp_path / "test_32x32.mat") in one_line(e)
    (tmp_path / "test_32x32.mat").unlink()
    with pytest.raises(gd.DataError, match="missing file .*test_32x32.mat"):
        gd.load_raw("svhn", data_dir=tmp_path)


def test_debian_fashion_mnist_fallback(tmp_path, monkeypatch):
    expected = write_idx_dataset(tmp_path, 30, 10, SHAPE, 10, seed=4)
    # load_raw reads both names from its own module.
    monkeypatch.setattr(sources, "DEBIAN_FASHION_MNIST_DIR", str(tmp_path))

    def no_tfds(*args, **kwargs):
        raise AssertionError("tensorflow-datasets must not be used")

    monkeypatch.setattr(sources, "_load_tfds", no_tfds)
    (tx, ty), _, k, name = gd.load_raw("fashion_mnist")
    assert name == "fashion_mnist" and k == 10
    np.testing.assert_array_equal(tx, expected["train"][0])
    np.testing.assert_array_equal(ty, expected["train"][1])
    # An incomplete folder is not used: the loader goes on to tfds.
    (tmp_path / "train-images-idx3-ubyte.gz").unlink()
    with pytest.raises(AssertionError, match="must not be used"):
        gd.load_raw("fashion_mnist")


@pytest.fixture
def no_network(monkeypatch):
    """Any connection refused at once: a tensorflow-datasets lookup that would go online fails here, offline."""
    import socket

    def refuse(*args, **kwargs):
        raise OSError("no network in the tests")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_unknown_dataset(no_network):
    for kwargs in ({}, {"data_dir": "/nonexistent"}):
        with pytest.raises(gd.DataError) as e:
            gd.load_raw("no_such_dataset_xyz", **kwargs)
        assert one_line(e) == (
            "unknown dataset 'no_such_dataset_xyz'; expected one of mnist, "
            "fashion_mnist, svhn or a tensorflow-datasets image classification "
            "name"
        )


def test_data_dir_with_tfds_only_name(no_network):
    with pytest.raises(gd.DataError, match="--data_dir"):
        gd.load_raw("cifar10", data_dir="/nonexistent")


# --------------------------------------------------------------------------
# tensorflow-datasets (mocked: no network).
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, canonical, shape",
    [
        ("mnist", "mnist", (28, 28, 1)),
        ("svhn", "svhn", (32, 32, 3)),
        ("cifar10", "cifar10", (32, 32, 3)),
    ],
)
def test_tfds_mock(name, canonical, shape, no_network):
    with tfds.testing.mock_data(num_examples=50):
        (tx, ty), (vx, vy), k, got = gd.load_raw(name)
    assert got == canonical and k == 10
    assert tx.shape == (50,) + shape and tx.dtype == np.uint8
    assert vx.shape == (50,) + shape
    assert ty.shape == vy.shape == (50,)
    assert ty.min() >= 0 and ty.max() < 10


def test_tfds_not_image_classification(no_network):
    with tfds.testing.mock_data(num_examples=5):
        with pytest.raises(gd.DataError, match="unknown dataset 'imdb_reviews'"):
            gd.load_raw("imdb_reviews")


def test_tfds_download_failure(monkeypatch, no_network):
    downloader = importlib.import_module("tensorflow_datasets.core.download.downloader")
    retries = downloader.MAX_RETRIES
    seen = []

    def offline(self, *args, **kwargs):
        seen.append(downloader.MAX_RETRIES)
        raise ConnectionError("Max retries exceeded\nName or service not known")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", offline)
    with pytest.raises(gd.DataError) as e:
        gd.load_raw("mnist")
    message = one_line(e)
    assert message.startswith("could not download 'mnist' with tensorflow-datasets")
    assert "--data_dir=DIR" in message
    assert seen and seen[0] <= 2 and downloader.MAX_RETRIES == retries


# --------------------------------------------------------------------------
# Splits and labeled set.
# --------------------------------------------------------------------------


def test_split_sizes_and_stratification(idx_dir, split):
    _, expected = idx_dir
    all_codes = set(range(500))
    train_codes = set(decode_index(split.train_images).tolist())
    val_codes = set(decode_index(split.val_images).tolist())
    assert len(train_codes) == 400 and len(val_codes) == 100
    assert train_codes | val_codes == all_codes and not train_codes & val_codes
    assert split.image_shape == (8, 8, 1) and split.num_classes == 10
    assert split.test_images.shape == (60, 8, 8, 1)
    # Labels travel with their images.
    labels = expected["train"][1]
    np.testing.assert_array_equal(split.train_labels, labels[decode_index(split.train_images)])
    # Stratified: 50 images per class -> 40 train / 10 validation.
    assert np.bincount(split.train_labels, minlength=10).tolist() == [40] * 10
    assert np.bincount(split.val_labels, minlength=10).tolist() == [10] * 10


def test_labeled_set_is_class_balanced(split):
    idx = split.labeled_indices
    assert idx.dtype == np.int64 and idx.shape == (50,)
    assert len(np.unique(idx)) == 50 and idx.min() >= 0 and idx.max() < 400
    assert np.bincount(split.labeled_labels, minlength=10).tolist() == [5] * 10
    assert split.labeled_images.shape == (50, 8, 8, 1)


def test_same_seed_same_splits(idx_dir):
    folder, _ = idx_dir
    a = gd.load_dataset("mnist", folder, num_labeled=30, seed=7)
    b = gd.load_dataset("mnist", folder, num_labeled=30, seed=7)
    c = gd.load_dataset("mnist", folder, num_labeled=30, seed=8)
    for field in ("train_images", "train_labels", "val_images", "labeled_indices"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(decode_index(a.val_images), decode_index(c.val_images))
    assert not np.array_equal(decode_index(a.labeled_images), decode_index(c.labeled_images))


def test_validation_fraction(idx_dir):
    folder, _ = idx_dir
    d = gd.load_dataset("mnist", folder, num_labeled=10, validation_fraction=0.5)
    assert len(d.train_labels) == 250 and len(d.val_labels) == 250
    d = gd.load_dataset("mnist", folder, num_labeled=10, validation_fraction=0)
    assert len(d.train_labels) == 500 and d.val_images.shape == (0, 8, 8, 1)
    with pytest.raises(gd.DataError, match="validation_fraction"):
        gd.load_dataset("mnist", folder, validation_fraction=1.0)


def test_num_labeled_zero(idx_dir):
    d = gd.load_dataset("mnist", idx_dir[0], num_labeled=0)
    assert d.labeled_indices.shape == (0,) and d.labeled_indices.dtype == np.int64
    assert d.labeled_images.shape == (0, 8, 8, 1)


@pytest.mark.parametrize(
    "num_labeled, words",
    [
        (55, "divisible"),
        (-10, ">= 0"),
        (410, "exceeds"),
        (100, "class 0 .* only"),  # 10 per class but class 0 has fewer
    ],
)
def test_bad_num_labeled(idx_dir, num_labeled, words):
    (tx, ty), test, k, name = gd.load_raw("mnist", data_dir=idx_dir[0])
    if words.startswith("class"):
        keep = (ty != 0) | (np.cumsum(ty == 0) <= 8)  # 8 zeros: < 10 in train
        tx, ty = tx[keep], ty[keep]
    with pytest.raises(gd.DataError, match=words):
        gd.split_data(name, (tx, ty), test, k, num_labeled, seed=0)


# --------------------------------------------------------------------------
# Pipelines.
# --------------------------------------------------------------------------


def collect(ds):
    return [{k: v.numpy() for k, v in b.items()} for b in ds]


def test_train_batches(split):
    batch, n_l = 20, 10
    n_u = batch - n_l
    ds = gd.make_train_dataset(split, batch, seed=0)
    spec = ds.element_spec
    assert spec["images"].shape == (batch, 8, 8, 1)
    assert spec["labels"].shape == (n_l,)
    assert spec["unlabeled_labels"].shape == (n_u,)
    assert spec["images"].dtype.name == "float32"
    assert spec["labels"].dtype.name == spec["unlabeled_labels"].dtype.name == "int32"

    steps = gd.steps_per_epoch(split, batch)
    assert steps == 400 // n_u == int(ds.cardinality())
    batches = collect(ds)
    assert len(batches) == steps

    code_to_label = dict(zip(decode_index(split.train_images), split.train_labels, strict=True))
    train_codes = set(code_to_label)
    labeled_codes = set(decode_index(split.labeled_images).tolist())
    seen_unlabeled = []
    for b in batches:
        x = b["images"]
        assert 0.0 <= x.min() and x.max() <= 1.0
        codes = decode_index(x)
        u_codes, l_codes = codes[:n_u], codes[n_u:]
        assert set(l_codes.tolist()) <= labeled_codes
        assert set(u_codes.tolist()) <= train_codes
        assert b["labels"].tolist() == [code_to_label[c] for c in l_codes]
        assert b["unlabeled_labels"].tolist() == [code_to_label[c] for c in u_codes]
        seen_unlabeled.extend(u_codes.tolist())
    # One epoch = one pass over the unlabeled stream without repetition.
    assert len(set(seen_unlabeled)) == len(seen_unlabeled) == steps * n_u


def test_train_epochs_draw_from_the_seed_and_the_epoch_alone(split):
    def order(ds):
        return np.concatenate([decode_index(b["images"]) for b in collect(ds)])

    first = order(gd.make_train_dataset(split, 20, seed=3))
    second = order(gd.make_train_dataset(split, 20, seed=3, epoch=1))
    assert not np.array_equal(first, second)  # a fresh permutation each epoch
    np.testing.assert_array_equal(order(gd.make_train_dataset(split, 20, seed=3, epoch=1)), second)
    assert not np.array_equal(order(gd.make_train_dataset(split, 20, seed=4, epoch=1)), second)

    # A stream of epochs is its epochs one after the other, whichever epoch it starts at: what a resumed run
    # reads, perturbations included.
    def epochs(start, end=None):
        options = dict(consistency_shift=1, consistency_flip=True)
        return collect(gd.make_train_dataset(split, 20, seed=3, **options, epoch=start, epochs=end))

    steps = gd.steps_per_epoch(split, 20)
    whole, resumed = epochs(0, 3), epochs(1, 3)
    assert len(whole) == 3 * steps and len(resumed) == 2 * steps
    for a, b in zip(whole[steps:], resumed, strict=True):
        assert a.keys() == b.keys() == {"images", "labels", "unlabeled_labels", "views"}
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    for a, b in zip(whole[2 * steps :], epochs(2), strict=True):
        np.testing.assert_array_equal(a["views"], b["views"])
    assert not np.array_equal(whole[0]["views"], whole[steps]["views"])


def test_train_epoch_of_more_steps_than_a_pass_walks_fresh_permutations(split):
    steps = gd.steps_per_epoch(split, 20)  # 40 batches of 10 unlabeled rows: the 400 train images
    ds = gd.make_train_dataset(split, 20, seed=3, steps=2 * steps + 5)
    assert int(ds.cardinality()) == 2 * steps + 5
    codes = np.concatenate([decode_index(b["images"])[:10] for b in collect(ds)])
    passes = [codes[:400], codes[400:800]]
    assert all(sorted(p.tolist()) == sorted(decode_index(split.train_images).tolist()) for p in passes)
    assert not np.array_equal(passes[0], passes[1])
    np.testing.assert_array_equal(
        passes[0],
        [c for b in collect(gd.make_train_dataset(split, 20, seed=3)) for c in decode_index(b["images"])[:10]],
    )


def test_train_shards_split_each_pass(split):
    shards = [collect(gd.make_train_dataset(split, 20, seed=3, num_shards=2, shard_index=i)) for i in range(2)]
    assert [len(s) for s in shards] == [200 // 10, 200 // 10]
    unlabeled = [np.concatenate([decode_index(b["images"])[:10] for b in s]) for s in shards]
    assert not set(unlabeled[0]) & set(unlabeled[1])
    assert len(set(unlabeled[0]) | set(unlabeled[1])) == 400
    labeled = [np.concatenate([decode_index(b["images"])[10:] for b in s]) for s in shards]
    assert not np.array_equal(labeled[0], labeled[1])  # each shard draws its labeled images with its own seed
    with pytest.raises(gd.DataError, match="shard"):
        gd.make_train_dataset(split, 20, num_shards=2, shard_index=2)


def test_train_labeled_part_covers_labeled_set(split):
    ds = gd.make_train_dataset(split, 40, labeled_per_batch=10, seed=0)
    batches = collect(ds)  # 13 batches x 10 = 130 draws from 50 images
    codes = np.concatenate([decode_index(b["images"])[30:] for b in batches])
    assert batches[0]["labels"].shape == (10,)
    assert set(codes.tolist()) == set(decode_index(split.labeled_images).tolist())


def test_train_unsupervised(idx_dir):
    d = gd.load_dataset("mnist", idx_dir[0], num_labeled=0)
    ds = gd.make_train_dataset(d, 32, labeled_per_batch=10)
    assert ds.element_spec["labels"].shape == (0,)
    assert ds.element_spec["unlabeled_labels"].shape == (32,)
    batches = collect(ds)
    assert len(batches) == gd.steps_per_epoch(d, 32) == 400 // 32
    assert batches[0]["images"].shape == (32, 8, 8, 1)


@pytest.mark.parametrize(
    "batch_size, labeled_per_batch, words",
    [
        (21, None, "even"),
        (0, None, ">= 2"),
        (16, None, "one example of each"),  # 8 labeled rows < 10 classes
        (40, 4, "one example of each"),
        (40, 40, "labeled_per_batch"),
        (1000, None, "exceeds"),  # 500 unlabeled rows > 400 train images
    ],
)
def test_bad_batch_layout(split, batch_size, labeled_per_batch, words):
    with pytest.raises(ConfigError, match=words):
        gd.make_train_dataset(split, batch_size, labeled_per_batch)
    with pytest.raises(ConfigError, match=words):
        gd.steps_per_epoch(split, batch_size, labeled_per_batch)


def test_batch_layout_is_each_replicas_share_and_steps_follow_it():
    from gmvae_keras.batches import batch_layout, steps_per_epoch

    assert batch_layout(64, 10) == (32, 32)
    assert batch_layout(64, 10, labeled_per_batch=16) == (48, 16)
    assert batch_layout(64, 10, labeled_per_batch=16, num_labeled=0) == (64, 0)
    assert batch_layout(200, 10, replicas=2) == (50, 50)
    assert batch_layout(200, 10, labeled_per_batch=40, replicas=4) == (40, 10)
    for args, words in [
        (dict(batch_size=200, replicas=3), "divide evenly among the 3 replicas"),
        (dict(batch_size=200, labeled_per_batch=30, replicas=4), "divide evenly"),
        (dict(batch_size=80, num_classes=10, replicas=8), "each of the 8 replicas .5. cannot hold one example"),
        (dict(batch_size=40, k=6, replicas=4), "--k=6 is larger than the labeled part of each of the 4 replicas"),
        (
            dict(batch_size=800, num_train=300, replicas=2),
            "unlabeled part of a batch .400. exceeds the 300 train images",
        ),
    ]:
        with pytest.raises(ConfigError, match=words):
            batch_layout(**args)
    # A pass over 48,000 images: 480 steps of 100 unlabeled rows, on one device or split among replicas and machines.
    assert steps_per_epoch(48000, 100) == 480
    assert steps_per_epoch(48000, 50, replicas=2) == 480
    assert steps_per_epoch(48000, 25, replicas=4, pipelines=2) == 480


def test_eval_dataset(split):
    ds = gd.make_eval_dataset(split.test_images, split.test_labels, 25)
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds], strict=True)
    assert [len(y) for y in ys] == [25, 25, 10]
    x, y = np.concatenate(xs), np.concatenate(ys)
    assert x.dtype == np.float32 and y.dtype == np.int32
    np.testing.assert_allclose(x, split.test_images / 255.0, atol=1e-6)
    np.testing.assert_array_equal(y, split.test_labels)


# --------------------------------------------------------------------------
# The real MNIST files.
# --------------------------------------------------------------------------


def test_real_mnist(real_dataset):
    (tx, ty), (vx, vy), k, name = gd.load_raw("mnist", data_dir=real_dataset("mnist"))
    assert (name, k) == ("mnist", 10)
    assert tx.shape == (60000, 28, 28, 1) and vx.shape == (10000, 28, 28, 1)
    assert ty.tolist()[:10] == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert np.bincount(ty).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert np.bincount(vy).sum() == 10000 and len(np.unique(vy)) == 10
    assert abs(tx.mean() / 255.0 - 0.1307) < 5e-4


def test_random_shift_translates_each_image_within_the_bound():
    import tensorflow as tf

    from gmvae_keras.data import random_shift

    rng = np.random.default_rng(0)
    images = rng.random((16, 8, 8, 1)).astype("float32") + 0.5  # no zero pixel
    out = random_shift(tf.constant(images), 2, tf.constant([3, 4], tf.int64)).numpy()
    assert out.shape == images.shape
    offsets = set()
    for original, shifted in zip(images, out, strict=True):
        padded = np.pad(original, ((2, 2), (2, 2), (0, 0)))
        matches = [
            (dy, dx) for dy in range(5) for dx in range(5) if np.array_equal(padded[dy : dy + 8, dx : dx + 8], shifted)
        ]
        assert len(matches) == 1
        offsets.add(matches[0])
    assert len(offsets) > 3  # offsets differ between images


def test_random_flip_mirrors_about_half_the_images():
    import tensorflow as tf

    from gmvae_keras.data import random_flip

    rng = np.random.default_rng(1)
    images = rng.random((64, 6, 6, 1)).astype("float32")
    out = random_flip(tf.constant(images), tf.constant([7, 8], tf.int64)).numpy()
    mirrored = [np.array_equal(o, i[:, ::-1]) for o, i in zip(out, images, strict=True)]
    kept = [np.array_equal(o, i) for o, i in zip(out, images, strict=True)]
    assert all(m != k for m, k in zip(mirrored, kept, strict=True))  # each image is one or the other
    assert 16 < sum(mirrored) < 48
    again = random_flip(tf.constant(images), tf.constant([7, 8], tf.int64)).numpy()
    np.testing.assert_array_equal(out, again)


def test_flipping_the_views_leaves_their_shifts_as_they_were(tmp_path):
    from gmvae_keras import data as data_lib

    write_idx_dataset(tmp_path, n_train=200, n_test=20, seed=2)
    splits = data_lib.load_dataset("mnist", data_dir=tmp_path, num_labeled=20, seed=0)

    def views(**options):
        return next(iter(data_lib.make_train_dataset(splits, 40, seed=5, **options)))["views"].numpy()

    shifted, both = views(consistency_shift=2), views(consistency_shift=2, consistency_flip=True)
    assert all(np.array_equal(b, s) or np.array_equal(b, s[:, ::-1]) for b, s in zip(both, shifted, strict=True))
    assert not np.array_equal(both, shifted)


def test_consistency_views_perturb_a_copy_and_leave_the_images(tmp_path):
    from gmvae_keras import data as data_lib

    write_idx_dataset(tmp_path, n_train=200, n_test=20, seed=2)
    splits = data_lib.load_dataset("mnist", data_dir=tmp_path, num_labeled=20, seed=0)
    plain = next(iter(data_lib.make_train_dataset(splits, 40, seed=5)))
    assert "views" not in plain
    labels = {key: plain[key].numpy() for key in ("labels", "unlabeled_labels")}
    plain = plain["images"].numpy()
    flipped = next(iter(data_lib.make_train_dataset(splits, 40, seed=5, consistency_flip=True)))
    np.testing.assert_array_equal(flipped["images"].numpy(), plain)
    views = flipped["views"].numpy()
    mirrored = [np.array_equal(v, p[:, ::-1]) and not np.array_equal(v, p) for v, p in zip(views, plain, strict=True)]
    assert 0 < sum(mirrored) < len(plain)
    assert all(np.array_equal(v, p) or m for v, p, m in zip(views, plain, mirrored, strict=True))
    shifted = next(iter(data_lib.make_train_dataset(splits, 40, seed=5, consistency_shift=2)))
    np.testing.assert_array_equal(shifted["images"].numpy(), plain)
    for key in ("labels", "unlabeled_labels"):
        np.testing.assert_array_equal(shifted[key].numpy(), labels[key])
    assert shifted["views"].shape == shifted["images"].shape
    assert not np.array_equal(shifted["views"].numpy(), plain)
    with pytest.raises(data_lib.DataError, match="consistency_shift must be >= 0, got -1"):
        data_lib.make_train_dataset(splits, 40, consistency_shift=-1)


# --------------------------------------------------------------------------
# The package's public names and the integer checks.
# --------------------------------------------------------------------------

PUBLIC_NAMES = [
    "DataError",
    "SplitData",
    "KNOWN_DATASETS",
    "DEBIAN_FASHION_MNIST_DIR",
    "IDX_FILES",
    "SVHN_FILES",
    "canonical_name",
    "load_raw",
    "split_data",
    "load_dataset",
    "make_train_dataset",
    "make_eval_dataset",
    "steps_per_epoch",
    "read_idx",
    "read_svhn_mat",
    "random_shift",
    "random_flip",
]


def test_package_exports_the_public_names():
    missing = [name for name in PUBLIC_NAMES if not hasattr(gd, name)]
    assert not missing
    assert set(PUBLIC_NAMES) <= set(gd.__all__)
    assert issubclass(gd.DataError, ValueError)


@pytest.mark.parametrize(
    "value, minimum, words",
    [
        (True, None, "n must be an integer, got True"),
        (False, 0, "n must be a non-negative integer, got False"),
        (2.0, 1, "n must be a positive integer, got 2.0"),
        ("3", None, "n must be an integer, got '3'"),
        (-1, 0, "n must be a non-negative integer, got -1"),
        (0, 1, "n must be a positive integer, got 0"),
        (np.int64(1), 2, "n must be an integer >= 2, got "),
    ],
)
def test_check_integer_refuses(value, minimum, words):
    with pytest.raises(gd.DataError) as e:
        check_integer("n", value, minimum=minimum)
    assert one_line(e).startswith(words)


def test_check_integer_accepts_numpy_integers():
    for value, minimum in ((np.int32(0), 0), (np.int64(7), 2), (-3, None)):
        got = check_integer("n", value, minimum=minimum)
        assert got == int(value) and type(got) is int
