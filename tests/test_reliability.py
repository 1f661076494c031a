"""Survive a kill, refuse bad input, never lose a run."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given
from hypothesis import strategies as st

import gmvae_keras.model  # noqa: F401  registers the custom layers
from gmvae_keras import checkpoint as ckpt
from gmvae_keras import data as data_lib
from gmvae_keras import losses, prediction
from gmvae_keras.callbacks import NonFiniteLoss
from gmvae_keras.checkpoint import CheckpointWriteError
from gmvae_keras.config import Config
from gmvae_keras.export import export_saved_model
from gmvae_keras.train import build_model, train_and_evaluate

import reference
from conftest import tiny_config as conftest_tiny_config
from conftest import write_idx_dataset


@pytest.fixture(scope="module")
def mnist_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mnist")
    write_idx_dataset(folder, n_train=200, n_test=50, seed=4)
    return folder


def tiny_config(data_dir, **overrides):
    return conftest_tiny_config(data_dir, **{"epochs": 3, "steps_per_epoch": 3, **overrides})


def _weights(path):
    return keras.saving.load_model(path).get_weights()


def test_nan_stops_training_and_keeps_the_last_good_checkpoint(mnist_files, tmp_path, monkeypatch):
    original = data_lib.make_train_dataset

    def poisoned(*args, **kwargs):
        def poison(index, element):
            images = element["images"]
            bad = tf.fill(tf.shape(images), float("nan"))
            return {**element, "images": tf.where(index == 4, bad, images)}

        return original(*args, **kwargs).repeat().enumerate().map(poison)

    monkeypatch.setattr(data_lib, "make_train_dataset", poisoned)
    model_dir = tmp_path / "run"
    with pytest.raises(NonFiniteLoss, match=r"epoch 2, step 2 .*reconstruction_loss=nan.*checkpoint of epoch 1"):
        train_and_evaluate(tiny_config(mnist_files), model_dir)
    state = ckpt.read_json(model_dir / "state.json")
    assert state["epoch"] == 1 and state["checkpoint"] == "epoch-0001.keras"
    for path in (model_dir / "checkpoints" / "epoch-0001.keras", model_dir / "best.keras"):
        assert all(np.all(np.isfinite(w)) for w in _weights(path))
    assert not (model_dir / "metrics.json").exists()


def test_disk_full_while_checkpointing_keeps_the_previous_checkpoint(mnist_files, tmp_path, monkeypatch):
    model_dir = tmp_path / "run"
    original_save = keras.Model.save
    calls = []

    def failing_save(self, filepath, *args, **kwargs):
        calls.append(filepath)
        if "epoch-0002" in str(filepath):
            with open(filepath, "wb") as f:
                f.write(b"PK\x03\x04 half a zip")
            raise OSError(28, "No space left on device")
        return original_save(self, filepath, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "save", failing_save)
    with pytest.raises(CheckpointWriteError, match="No space left on device.*checkpoint of epoch 1 is kept"):
        train_and_evaluate(tiny_config(mnist_files), model_dir)
    monkeypatch.setattr(keras.Model, "save", original_save)
    state = ckpt.read_json(model_dir / "state.json")
    assert state["checkpoint"] == "epoch-0001.keras"
    keras.saving.load_model(ckpt.last_checkpoint(model_dir, state))  # usable
    assert not list(model_dir.rglob(".*.tmp-*"))
    metrics = train_and_evaluate(tiny_config(mnist_files), model_dir)  # resumes after epoch 1
    assert metrics["epochs"] == 3


def test_the_best_model_is_the_epoch_with_the_lowest_validation_error(tmp_path):
    inputs = keras.Input((1,))
    model = keras.Model(inputs, keras.layers.Dense(1, use_bias=False)(inputs))
    state = ckpt.initial_state()
    checkpointer = ckpt.RunCheckpoint(tmp_path, state, batch_size=2)
    checkpointer.set_model(model)
    for epoch, val_error in enumerate([30.0, 10.0, 20.0]):
        model.set_weights([np.full((1, 1), epoch, "float32")])  # marks the epoch
        checkpointer.on_epoch_begin(epoch)
        checkpointer.on_train_batch_end(0)
        checkpointer.on_epoch_end(epoch, {"val_error": val_error})
    assert (state["best_epoch"], state["best_value"], state["epoch"]) == (2, 10.0, 3)
    assert keras.saving.load_model(checkpointer.best_path).get_weights()[0][0, 0] == 1
    assert keras.saving.load_model(ckpt.last_checkpoint(tmp_path, state)).get_weights()[0][0, 0] == 2


def test_export_rejects_wrong_shape_dtype_and_range(tmp_path):
    model = build_model(Config(feature_size=8, latent_size=4), 10, (28, 28, 1), steps_per_epoch=1)
    export_saved_model(model, tmp_path / "export")
    loaded = tf.saved_model.load(str(tmp_path / "export"))
    serve, serve_uint8 = loaded.signatures["serving_default"], loaded.signatures["serving_uint8"]
    shape_error = r"images must have shape \[batch, 28, 28, 1\]"
    with pytest.raises(tf.errors.InvalidArgumentError, match=shape_error):
        serve(images=tf.zeros((2, 32, 32, 3)))
    with pytest.raises(tf.errors.InvalidArgumentError, match=shape_error):
        serve_uint8(images=tf.zeros((2, 28, 28), tf.uint8))
    with pytest.raises(tf.errors.InvalidArgumentError, match="expected to be a float tensor but is a double tensor"):
        serve(images=tf.zeros((2, 28, 28, 1), tf.float64))
    with pytest.raises(tf.errors.InvalidArgumentError, match="expected to be a uint8 tensor but is a int32 tensor"):
        serve_uint8(images=tf.zeros((2, 28, 28, 1), tf.int32))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"must be in \[0, 1\]"):
        serve(images=tf.fill((2, 28, 28, 1), 255.0))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"must be in \[0, 1\]"):
        serve(images=tf.fill((2, 28, 28, 1), -0.5))
    assert serve(images=tf.zeros((3, 28, 28, 1)))["label"].shape == (3,)


def test_round_trips_on_real_test_images(tmp_path, real_dataset):
    (_, _), (test_images, _), _, _ = data_lib.load_raw("mnist", data_dir=real_dataset("mnist"))
    images = test_images[:500]
    model = build_model(Config(feature_size=16, latent_size=8, k=3), 10, (28, 28, 1), steps_per_epoch=1)
    batch = {
        "images": images[:40].astype("float32") / 255.0,
        "labels": np.arange(20, dtype="int32") % 10,
        "unlabeled_labels": np.zeros(20, "int32"),
    }
    model.fit(tf.data.Dataset.from_tensors(batch).repeat(3), epochs=1, verbose=0)
    expected = prediction.predict_proba(model, images)
    model.save(tmp_path / "m.keras")
    np.testing.assert_allclose(
        prediction.predict_proba(keras.saving.load_model(tmp_path / "m.keras"), images), expected, atol=1e-5
    )
    export_saved_model(model, tmp_path / "export")
    served = tf.saved_model.load(str(tmp_path / "export")).signatures["serving_uint8"](images=tf.constant(images))
    np.testing.assert_allclose(served["probabilities"].numpy(), expected, atol=1e-5)


@given(
    data=st.data(),
    num_labeled=st.integers(1, 12),
    num_unlabeled=st.integers(1, 12),
    num_classes=st.integers(2, 6),
    dims=st.integers(1, 6),
    duplicate=st.booleans(),
)
def test_fuzz_assign_labels(data, num_labeled, num_unlabeled, num_classes, dims, duplicate):
    labels = np.array(data.draw(st.lists(st.integers(0, num_classes - 1), min_size=num_labeled, max_size=num_labeled)))
    values = st.floats(-1e3, 1e3, allow_nan=False, width=32)
    labeled = np.array(
        data.draw(st.lists(st.lists(values, min_size=dims, max_size=dims), min_size=num_labeled, max_size=num_labeled)),
        "float32",
    )
    unlabeled = np.array(
        data.draw(
            st.lists(st.lists(values, min_size=dims, max_size=dims), min_size=num_unlabeled, max_size=num_unlabeled)
        ),
        "float32",
    )
    if duplicate:
        unlabeled[0] = labeled[0]  # a zero distance
    k = data.draw(st.integers(1, num_labeled + 2))
    if k > num_labeled:
        with pytest.raises(ValueError, match="larger than the number of labeled samples"):
            losses.assign_labels(losses.pairwise_distance(unlabeled, labeled), labels, num_classes, k)
        return
    computed = losses.pairwise_distance(unlabeled, labeled).numpy()
    # The distances: float32's |a|² - 2a·b + |b|² against float64, within the rounding of the squared norms.
    expected = reference.distances(unlabeled, labeled)
    norms = (unlabeled.astype(np.float64) ** 2).sum(1)[:, None] + (labeled.astype(np.float64) ** 2).sum(1)[None]
    assert np.all(np.abs(computed.astype(np.float64) ** 2 - expected**2) <= 1e-5 * norms + 1e-6)
    # The vote on those distances: the reference's winner, or one within rounding of it.
    assigned = losses.assign_labels(computed, labels, num_classes, k).numpy()
    votes = reference.votes(computed, labels, num_classes, k)
    winners = votes >= votes.max(axis=1, keepdims=True) * (1 - 1e-4)
    assert winners[np.arange(num_unlabeled), assigned].all()


@given(
    data=st.data(),
    batch=st.integers(1, 14),
    dims=st.integers(1, 6),
    pattern=st.sampled_from(["random", "one_class", "missing_class", "all_distinct"]),
    duplicates=st.booleans(),
    margin=st.floats(0.0, 5.0),
)
def test_fuzz_lifted_structured_loss(data, batch, dims, pattern, duplicates, margin):
    if pattern == "random":
        labels = data.draw(st.lists(st.integers(0, 3), min_size=batch, max_size=batch))
    elif pattern == "one_class":
        labels = [2] * batch
    elif pattern == "missing_class":
        labels = data.draw(st.lists(st.sampled_from([0, 2, 3]), min_size=batch, max_size=batch))
    else:
        labels = list(range(batch))
    values = st.floats(-100, 100, allow_nan=False, width=32)
    embeddings = np.array(
        data.draw(st.lists(st.lists(values, min_size=dims, max_size=dims), min_size=batch, max_size=batch)), "float32"
    )
    if duplicates and batch > 1:
        embeddings[1] = embeddings[0]
    x = tf.Variable(embeddings)
    with tf.GradientTape() as tape:
        loss = losses.lifted_structured_loss(np.array(labels), losses.pairwise_distance(x), margin)
    gradient = tape.gradient(loss, x)
    distances = losses.pairwise_distance(embeddings).numpy()
    expected = reference.lifted_structured_loss(labels, None, margin, d=distances)
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-4, atol=1e-5)
    assert gradient is not None and np.all(np.isfinite(gradient.numpy()))
    if pattern in ("one_class", "all_distinct"):
        assert loss.numpy() == 0.0


# The shipped recipes whose options differ (the paper's; the k-NN vote and balanced assignment; the second view;
# the batch's L_C with a cosine schedule and the mixture over x̂; the 32×32 network), shrunk to two tiny steps
# each. The others combine the same options (Fashion-MNIST's clustering flagfile is MNIST's without the
# mixture over x̂).
RECIPE_ARGS = {
    "mnist": ["--dataset=mnist"],
    "mnist-cpu": ["--dataset=mnist", "--settings=cpu"],
    "fashion_mnist-cpu": ["--dataset=fashion_mnist", "--settings=cpu"],
    "fashion_mnist-1000-cpu": ["--dataset=fashion_mnist", "--settings=cpu", "--num_labeled=1000"],
    "mnist-clustering-cpu": ["--dataset=mnist", "--mode=clustering", "--settings=cpu"],
    "svhn": ["--dataset=svhn"],
}
RECIPES_SCRIPT = """
import hashlib, json, sys
from gmvae_keras import flagfiles
from gmvae_keras.train import train_and_evaluate
import keras

recipes, data, out = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
tiny = ["--batch_size=40", "--labeled_per_batch=0", "--feature_size=8", "--latent_size=4", "--k=3", "--epochs=1",
        "--steps_per_epoch=2", "--eval_batch_size=100", "--image_summary_every=0", "--verbose=0", "--deterministic"]
digests = {}
for name, args in recipes.items():
    dataset = args[0].split("=")[1]
    given = "--mode=clustering" in args or any(a.startswith("--num_labeled") for a in args)
    labeled = [] if given else ["--num_labeled=20"]
    config = flagfiles.config_from_args(args + tiny + labeled + [f"--data_dir={data[dataset]}"])
    train_and_evaluate(config, f"{out}/{name}")
    model = keras.saving.load_model(f"{out}/{name}/checkpoints/epoch-0001.keras")
    # The weights, and every logged loss and score (the test error too), timings aside.
    metrics = json.load(open(f"{out}/{name}/metrics.json"))
    scores = json.dumps({k: v for k, v in metrics.items() if "second" not in k}, sort_keys=True).encode()
    digests[name] = hashlib.sha256(b"".join(w.tobytes() for w in model.get_weights()) + scores).hexdigest()
print("RESULT " + json.dumps(digests))
"""


@pytest.mark.slow
def test_every_shipped_recipe_repeats_bit_for_bit_in_another_process_under_deterministic(tmp_path):
    from conftest import REPO_ROOT, write_svhn_dataset

    data = {name: str(tmp_path / name) for name in ("mnist", "fashion_mnist", "svhn")}
    write_idx_dataset(data["mnist"], n_train=300, n_test=50, seed=1)
    write_idx_dataset(data["fashion_mnist"], n_train=1500, n_test=50, seed=2)  # 1000 labels: 1200 train images
    write_svhn_dataset(data["svhn"], 300, 50, seed=3)
    script = tmp_path / "recipes.py"
    script.write_text(RECIPES_SCRIPT)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    processes = [
        subprocess.Popen(
            [sys.executable, str(script), json.dumps(RECIPE_ARGS), json.dumps(data), str(tmp_path / run)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=REPO_ROOT,
        )
        for run in ("a", "b")
    ]
    digests = []
    for process in processes:
        out, err = process.communicate(timeout=280)
        assert process.returncode == 0, err[-3000:]
        digests.append(json.loads([line for line in out.splitlines() if line.startswith("RESULT ")][-1][7:]))
    assert sorted(digests[0]) == sorted(RECIPE_ARGS)
    differ = [name for name in RECIPE_ARGS if digests[0][name] != digests[1][name]]
    assert not differ, f"not repeatable across processes: {differ}"
