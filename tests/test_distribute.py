"""tf.distribute on CPU: two logical devices (mirrored) and two local workers."""

import inspect
import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest

from conftest import REPO_ROOT, write_idx_dataset

pytestmark = pytest.mark.slow


def without_noise(model):
    """`model` with its Gumbel and Gaussian noise fixed (their inference-mode outputs): two runs compute alike."""
    for layer in (model.gumbel_softmax, model.gaussian_sample):
        layer.call = (lambda call: lambda inputs, training=None: call(inputs, training=False))(layer.call)
    return model


def replica_batch(rng):
    """One replica's batch of 20 images, 10 unlabeled then 10 labeled, each near one of 5 class prototypes.

    Apart, so that the k-NN vote is not a near-tie a rounding difference could flip (it moves L_A's target: a
    step 1e-5 away); the prototypes are drawn once per process, from the seed 0.
    """
    import numpy as np

    prototypes = np.random.default_rng(0).random((5, 28, 28, 1))
    classes = np.arange(20) % 5
    images = np.clip(prototypes[classes] + 0.05 * rng.standard_normal((20, 28, 28, 1)), 0.0, 1.0)
    return {
        "images": images.astype("float32"),
        "labels": classes[10:].astype("int32"),
        "unlabeled_labels": classes[:10].astype("int32"),
    }


# The scripts below run in processes of their own, each with this module's `without_noise` and `replica_batch`.
HELPERS = inspect.getsource(without_noise) + "\n\n" + inspect.getsource(replica_batch)

MIRRORED_SCRIPT = HELPERS + textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from gmvae_keras import GMVAE, determinism

    # The same initial weights in every process, and sums in an order the thread schedule does not change: under
    # load, a step's rounding otherwise varies (measured up to 5e-6 from one process on a loaded host).
    keras.utils.set_random_seed(0)
    determinism.enable()

    rng = np.random.default_rng(0)

    b1, b2 = replica_batch(rng), replica_batch(rng)
    kwargs = dict(image_shape=(28, 28, 1), num_classes=5, feature_size=8, latent_size=4, k=3, seed=0)
    strategy = tf.distribute.MirroredStrategy()
    assert strategy.num_replicas_in_sync == 2
    with strategy.scope():
        mirrored = without_noise(GMVAE(**kwargs))
        mirrored.compile(optimizer=keras.optimizers.SGD(1e-3), jit_compile=False)
    single = without_noise(GMVAE(**kwargs))
    single.set_weights(mirrored.get_weights())
    before = [w.numpy() for w in single.trainable_weights]

    # Replica 0 gets b1, replica 1 gets b2: one step of the global batch.
    dataset = strategy.distribute_datasets_from_function(
        lambda context: tf.data.Dataset.from_tensors(b1).concatenate(tf.data.Dataset.from_tensors(b2)).repeat()
    )
    history = mirrored.fit(dataset, steps_per_epoch=1, epochs=1, verbose=0).history
    # One device, the same step: each replica's slice through the model (its own batch statistics, vote and
    # L_M), the gradient of the mean of their losses.
    with tf.GradientTape() as tape:
        totals = [single.compute_losses(b["images"], tf.constant(b["labels"]), training=True)[1] for b in (b1, b2)]
        mean = tf.add_n(totals) / 2.0
    gradients = tape.gradient(mean, single.trainable_weights)
    expected = [w - 1e-3 * g.numpy() for w, g in zip(before, gradients)]
    got = [w.numpy() for w in mirrored.trainable_weights]
    print("RESULT " + json.dumps({
        "max_difference": max(float(np.abs(a - b).max()) for a, b in zip(got, expected)),
        "max_step": max(float(np.abs(a - b).max()) for a, b in zip(expected, before)),
        "loss": [history["loss"][0], float(mean)],
    }))
    """
)


def _run_mirrored(tmp_path):
    script = tmp_path / "mirrored.py"
    script.write_text(MIRRORED_SCRIPT)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=280, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    line = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT ") :])


def test_a_mirrored_step_gives_the_weights_of_one_device_on_the_same_global_batch(tmp_path):
    values = _run_mirrored(tmp_path)
    # The step moved the weights, and both runs moved them alike.
    assert values["max_step"] > 1e-3
    assert values["max_difference"] < 1e-6
    assert values["loss"][0] == pytest.approx(values["loss"][1], rel=1e-6)


MULTI_WORKER_SCRIPT = HELPERS + textwrap.dedent(
    """
    import hashlib, json, os, sys
    import numpy as np
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    import keras
    from gmvae_keras import GMVAE, determinism

    # The same initial weights in every process, and sums in an order the thread schedule does not change: under
    # load, a step's rounding otherwise varies (measured up to 5e-6 from one process on a loaded host).
    keras.utils.set_random_seed(0)
    determinism.enable()

    rng = np.random.default_rng(0)
    # Worker w trains on batches[w] in step 1 and batches[2 + w] in step 2.
    batches = [replica_batch(rng) for _ in range(4)]

    kwargs = dict(image_shape=(28, 28, 1), num_classes=5, feature_size=8, latent_size=4, k=3, seed=0)
    with strategy.scope():
        model = without_noise(GMVAE(**kwargs))
        model.compile(optimizer=keras.optimizers.SGD(1e-3), jit_compile=False)
    single = without_noise(GMVAE(**kwargs))
    single.set_weights(model.get_weights())

    def pipeline(context):
        mine = [batches[context.input_pipeline_id], batches[2 + context.input_pipeline_id]]
        return tf.data.Dataset.from_tensor_slices({k: np.stack([b[k] for b in mine]) for k in mine[0]})

    model.fit(strategy.distribute_datasets_from_function(pipeline), steps_per_epoch=2, epochs=1, verbose=0)
    for step in range(2):
        with tf.GradientTape() as tape:
            totals = [
                single.compute_losses(b["images"], tf.constant(b["labels"]), training=True)[1]
                for b in batches[2 * step : 2 * step + 2]
            ]
            mean = tf.add_n(totals) / 2.0
        gradients = tape.gradient(mean, single.trainable_weights)
        for w, g in zip(single.trainable_weights, gradients):
            w.assign(w - 1e-3 * g)
    weights = [w.numpy() for w in model.trainable_weights]
    print("RESULT " + json.dumps({
        "digest": hashlib.sha256(b"".join(w.tobytes() for w in weights)).hexdigest(),
        "max_difference": max(float(np.abs(a - b.numpy()).max()) for a, b in zip(weights, single.trainable_weights)),
    }))
    """
)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_two_workers(command, cwd, attempts=3):
    """`[(returncode, stdout, stderr)]` of two localhost workers running `command`.

    A port taken between choosing and binding it (another test under `-n 2`) shows as a worker that cannot
    bind: the pair is run again on fresh ports.
    """
    for attempt in range(attempts):
        workers = [f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"]
        processes = []
        try:
            for index in range(2):
                tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
                env = dict(os.environ, TF_CONFIG=json.dumps(tf_config), TF_CPP_MIN_LOG_LEVEL="3")
                processes.append(
                    subprocess.Popen(
                        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd
                    )
                )
            outputs = [p.communicate(timeout=280) for p in processes]
        finally:
            for p in processes:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        results = [(p.returncode, out, err) for p, (out, err) in zip(processes, outputs, strict=True)]
        if attempt + 1 < attempts and any("address already in use" in err.lower() for _, _, err in results):
            continue
        return results


def test_two_workers_end_with_identical_weights_equal_to_one_process_on_the_same_batches(tmp_path):
    script = tmp_path / "workers.py"
    script.write_text(MULTI_WORKER_SCRIPT)
    results = _run_two_workers([sys.executable, str(script)], tmp_path)
    values = []
    for code, out, err in results:
        assert code == 0, err[-3000:]
        values.append(json.loads([line for line in out.splitlines() if line.startswith("RESULT ")][-1][7:]))
    assert values[0]["digest"] == values[1]["digest"]
    # The workers agree exactly, and with one process up to float32 rounding; the loss not divided by the
    # replicas puts them 1e-2 apart.
    assert values[0]["max_difference"] < 1e-6


def test_multi_worker_trains_on_two_local_workers(tmp_path):
    data_dir = tmp_path / "data"
    write_idx_dataset(data_dir, n_train=200, n_test=50, seed=6)
    model_dir = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "gmvae_keras.main",
        "--dataset=mnist",
        f"--data_dir={data_dir}",
        "--strategy=multi_worker",
        "--num_labeled=20",
        "--batch_size=40",
        "--k=3",
        "--feature_size=8",
        "--latent_size=4",
        "--epochs=2",
        "--steps_per_epoch=2",
        "--verbose=0",
        "--image_summary_every=0",
        f"--model_dir={model_dir}",
    ]
    results = _run_two_workers(command, REPO_ROOT)
    for code, _, err in results:
        assert code == 0, err[-3000:]
    outputs = [(out, err) for _, out, err in results]
    chief_out, worker_out = outputs[0][0], outputs[1][0]
    assert "epoch 2/2" in chief_out and "done: test error" in chief_out
    assert "epoch 2/2" not in worker_out  # only the chief reports and writes
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["epochs"] == 2
    assert json.loads((model_dir / "config.json").read_text())["strategy"] == "multi_worker"
