"""Shared test helpers: synthetic data sets in their original file formats.

Synthetic images encode their index in the official split in their first
three pixels (little-endian), so tests can tell which image a pipeline row
came from: `decode_index(images)` inverts the encoding, for uint8 images or
float images scaled to [0, 1].

Every test starts from global seed 0 (`_global_seed`) and ends with `--deterministic`'s
process-wide state off (`_determinism_left_off`). Tests of the real data
sets take the `real_dataset` fixture. Hypothesis runs
the `ci` settings profile when `CI=true` (fixed examples), else `dev`.
"""

import gzip
import os
import pathlib
import struct
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

# CI draws the same examples on every run, so that a failure there is a failure of the change;
# local runs draw new and more examples, to find what CI's fixed ones miss.
# Both start from Hypothesis' defaults: the profile it loads itself under any `CI` variable is not inherited.
settings.register_profile(
    "ci",
    settings.get_profile("default"),
    derandomize=True,
    max_examples=30,
    print_blob=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "dev",
    settings.get_profile("default"),
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("ci" if os.environ.get("CI") == "true" else "dev")


@pytest.fixture(autouse=True)
def _global_seed():
    """Every test starts from the same global seed.

    Layers built without a `seed` draw their initial weights from it, so a
    test's numbers must not depend on which tests ran before it in the
    process (or on `-k` selecting it alone).
    """
    import keras

    keras.utils.set_random_seed(0)


@pytest.fixture(autouse=True)
def _determinism_left_off():
    """A test that trains with `--deterministic` in this process does not leave it on.

    `gmvae_keras.determinism.enable` holds for the whole process: the tests after such a test would
    otherwise sum their gradients in its order and run without Grappler's arithmetic optimizer.
    """
    yield
    determinism = sys.modules.get("gmvae_keras.determinism")
    if determinism is not None:
        determinism.disable()


# Set by CI when the real data sets are beside the clone: a real-data test then fails instead of skipping.
REQUIRE_DATASETS = "GMVAE_REQUIRE_DATASETS"


def datasets_root():
    """Folder of the real data sets, or None when absent.

    `$GMVAE_DATASETS` if set, else `../shared/datasets` relative to the
    repository root.
    """
    root = os.environ.get("GMVAE_DATASETS")
    path = pathlib.Path(root) if root else REPO_ROOT.parent / "shared" / "datasets"
    return path if path.is_dir() else None


@pytest.fixture
def real_dataset(request):
    """`real_dataset(name)`: the folder of the real data set `name`, or a skip that says why.

    Under `GMVAE_REQUIRE_DATASETS=1` the missing folder fails the test instead.
    """

    def folder(name):
        root = datasets_root()
        if root is not None and (root / name).is_dir():
            return root / name
        where = os.environ.get("GMVAE_DATASETS") or REPO_ROOT.parent / "shared" / "datasets"
        # The skip is raised here, so pytest reports this line: the reason names the test.
        reason = f"{request.node.nodeid} needs the real {name} files: no folder {name} in {where} (set GMVAE_DATASETS)"
        if os.environ.get(REQUIRE_DATASETS) == "1":
            pytest.fail(f"{REQUIRE_DATASETS}=1 but {reason}", pytrace=False)
        pytest.skip(reason)

    return folder


def encode_index(images, offset=0):
    """Writes `offset + i` into the first three pixels of image `i` (in place)."""
    flat = images.reshape(images.shape[0], -1)
    codes = np.arange(images.shape[0], dtype=np.int64) + offset
    for byte in range(3):
        flat[:, byte] = (codes >> (8 * byte)) & 0xFF
    return images


def decode_index(images):
    """Indices encoded by `encode_index` in uint8 or [0, 1] float images."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        images = np.rint(images.astype(np.float64) * 255.0).astype(np.int64)
    flat = images.reshape(images.shape[0], -1).astype(np.int64)
    return flat[:, 0] | (flat[:, 1] << 8) | (flat[:, 2] << 16)


def idx_bytes(array):
    """The IDX encoding (uint8 data) of `array`."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write_idx(path, array, compress=None):
    """Writes `array` as an IDX file, gzip-compressed when the name ends .gz."""
    path = pathlib.Path(path)
    if compress is None:
        compress = path.suffix == ".gz"
    data = idx_bytes(array)
    if compress:
        data = gzip.compress(data, compresslevel=1)
    path.write_bytes(data)
    return path


def _balanced_labels(rng, n, num_classes):
    return rng.permutation(np.arange(n) % num_classes).astype(np.int64)


def write_idx_dataset(dir, n_train, n_test, shape=(28, 28), num_classes=10, seed=0, gz=True, learnable=False):
    """Writes the four MNIST-style IDX files of a synthetic data set.

    Labels are as balanced as `n` allows; image `i` of each split encodes
    `i` (see `encode_index`), the other pixels are random. `learnable`: the
    pixels are dim noise, and each class lights a band of rows of its own,
    so that a model has classes to find.

    Returns:
        `{"train": (images, labels), "test": (images, labels)}` as the
        loader should return them: uint8 (N, H, W, C) and int64 (N,).
    """
    dir = pathlib.Path(dir)
    dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    suffix = ".gz" if gz else ""
    out = {}
    for part, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        images = rng.integers(0, 256, size=(n,) + tuple(shape), dtype=np.uint8)
        labels = _balanced_labels(rng, n, num_classes)
        if learnable:
            images //= 4
            band = shape[0] // num_classes
            for c in range(num_classes):
                images[labels == c, c * band : (c + 1) * band] |= 0xC0
        encode_index(images)
        write_idx(dir / f"{prefix}-images-idx3-ubyte{suffix}", images)
        write_idx(dir / f"{prefix}-labels-idx1-ubyte{suffix}", labels)
        if images.ndim == 3:
            images = images[..., None]
        out[part] = (images, labels)
    return out


def write_svhn_dataset(dir, n_train, n_test, seed=0):
    """Writes synthetic `train_32x32.mat` and `test_32x32.mat` (SVHN layout).

    `X` is uint8 (32, 32, 3, N), `y` is (N, 1) with labels 1..10 (10 for the
    digit 0). Image `i` encodes `i` (see `encode_index`).

    Returns:
        `{"train": (images, labels), "test": (images, labels)}` as the
        loader should return them: uint8 (N, 32, 32, 3) and int64 labels
        0..9.
    """
    import scipy.io

    dir = pathlib.Path(dir)
    dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = {}
    for part, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
        encode_index(images)
        digits = _balanced_labels(rng, n, 10)
        y = np.where(digits == 0, 10, digits).astype(np.uint8).reshape(n, 1)
        scipy.io.savemat(
            str(dir / f"{part}_32x32.mat"),
            {"X": np.transpose(images, (1, 2, 3, 0)), "y": y},
        )
        out[part] = (images, digits)
    return out


# The smallest run of the package on `write_idx_dataset` files: 20 labeled images, batches of 40.
TINY_RUN = dict(
    dataset="mnist",
    num_labeled=20,
    batch_size=40,
    feature_size=8,
    latent_size=4,
    k=3,
    eval_batch_size=64,
    image_summary_every=0,
    verbose=0,
)


def tiny_values(data_dir, **overrides):
    """The settings of a tiny run on the files in `data_dir`, as a dict (`TINY_RUN` with `overrides`)."""
    return {**TINY_RUN, "data_dir": str(data_dir), **overrides}


def tiny_config(data_dir, **overrides):
    """The `Config` of `tiny_values`."""
    from gmvae_keras.config import Config

    return Config(**tiny_values(data_dir, **overrides))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A finished one-epoch run on tiny synthetic MNIST files (shared by the tests that read runs)."""
    from gmvae_keras.train import train_and_evaluate

    folder = tmp_path_factory.mktemp("data")
    write_idx_dataset(folder, n_train=200, n_test=60, seed=3)
    config = tiny_config(folder, epochs=1, steps_per_epoch=2)
    model_dir = tmp_path_factory.mktemp("run") / "run"
    train_and_evaluate(config, model_dir)
    return model_dir


@pytest.fixture
def global_dtype_policy():
    """Keras' global dtype policy, restored after the test whatever the test set or left behind."""
    import keras

    previous = keras.config.dtype_policy()
    yield previous
    keras.config.set_dtype_policy(previous)


@pytest.fixture
def on_cpu(monkeypatch):
    """The device check of `gmvae_keras.conv` (and of the fused BatchNorm) reports a CPU-only machine."""
    from gmvae_keras import conv

    monkeypatch.setattr(conv, "_runs_on_cpu", lambda: True)


@pytest.fixture
def on_gpu(monkeypatch):
    """The device check reports a visible GPU (none is needed to take that branch)."""
    from gmvae_keras import conv

    monkeypatch.setattr(conv, "_runs_on_cpu", lambda: False)
