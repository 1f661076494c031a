"""The command line and `train_and_evaluate` end to end, on tiny synthetic files."""

import dataclasses
import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from gmvae_keras import checkpoint as ckpt
from gmvae_keras import flagfiles, prediction
from gmvae_keras.config import Config, ConfigError
from gmvae_keras.data import DataError
from gmvae_keras.flagfiles import config_from_args, with_recipe
from gmvae_keras.train import RunError, train_and_evaluate

from conftest import REPO_ROOT, write_idx_dataset, write_svhn_dataset
from conftest import tiny_config as conftest_tiny_config

FLAGS_DIR = REPO_ROOT / "gmvae_keras" / "flags"


def tiny_config(data_dir, **overrides):
    defaults = {"epochs": 2, "margin": 1.0, "image_summary_every": 1, "temperature_epochs": 2}
    return conftest_tiny_config(data_dir, **{**defaults, **overrides})


@pytest.fixture(scope="module")
def mnist_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mnist")
    write_idx_dataset(folder, n_train=200, n_test=50, seed=1)
    return folder


@pytest.fixture(scope="module")
def finished_run(mnist_files, tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("run") / "run"
    config = tiny_config(mnist_files, epochs=1)
    first = train_and_evaluate(config, model_dir)
    config.epochs = 2
    metrics = train_and_evaluate(config, model_dir)  # resumes after epoch 1
    return model_dir, config, first, metrics


def test_run_writes_every_artifact(finished_run):
    model_dir, config, _, metrics = finished_run
    assert json.loads((model_dir / "config.json").read_text()) == config.to_dict()
    for name in ("best.keras", "metrics.json", "state.json", "labeled_indices.npy", "export/saved_model.pb"):
        assert (model_dir / name).exists(), name
    assert [p.name for p in (model_dir / "checkpoints").iterdir()] == ["epoch-0002.keras"]
    assert len(np.load(model_dir / "labeled_indices.npy")) == 20
    on_disk = json.loads((model_dir / "metrics.json").read_text())
    assert on_disk == metrics
    for split in ("val", "test"):
        for score in ("error", "cluster_accuracy", "nmi"):
            for which in ("best", "last"):
                assert 0.0 <= metrics[f"{split}_{score}_{which}"] <= 100.0
    # Both prediction rules are scored on the same models; the run's own rule is the headline error.
    for key in ("val_error", "test_error"):
        for which in ("best", "last"):
            assert metrics[f"{key}_{which}"] == metrics[f"{key}_{config.prediction}_{which}"]
            assert 0.0 <= metrics[f"{key}_knn_{which}"] <= 100.0
    assert metrics["monitor"] == "val_error" and metrics["mode"] == "semi_supervised"
    assert metrics["epochs"] == 2 and metrics["train_images_per_second"] > 0 and metrics["train_seconds"] > 0


def _event_tags(folder):
    tags = {}
    for path in folder.glob("events.out.tfevents.*"):
        for raw in tf.data.TFRecordDataset(str(path)):
            event = tf.compat.v1.Event.FromString(raw.numpy())
            for value in event.summary.value:
                tags.setdefault(value.tag, []).append(event.step)
    return tags


def _event_values(folder, tag):
    values = {}
    for path in folder.glob("events.out.tfevents.*"):
        for raw in tf.data.TFRecordDataset(str(path)):
            event = tf.compat.v1.Event.FromString(raw.numpy())
            for value in event.summary.value:
                if value.tag == tag:
                    values[event.step] = float(tf.make_ndarray(value.tensor))
    return [values[step] for step in sorted(values)]


def test_tensorboard_logs_scalars_and_images(finished_run):
    model_dir = finished_run[0]
    train = _event_tags(model_dir / "logs" / "train")
    for tag in (
        "epoch_reconstruction_loss",
        "epoch_gaussian_loss",
        "epoch_categorical_loss",
        "epoch_assignment_loss",
        "epoch_metric_loss",
        "epoch_loss",
        "epoch_assignment_accuracy",
        "epoch_temperature",
        "epoch_learning_rate",
    ):
        assert tag in train, tag
    # The resumed run continues the curve: epochs 0 and 1, once each.
    assert sorted(train["epoch_loss"]) == [0, 1]
    validation = _event_tags(model_dir / "logs" / "validation")
    for tag in ("epoch_error", "epoch_cluster_accuracy", "epoch_nmi"):
        assert sorted(validation[tag]) == [0, 1], tag
    images = _event_tags(model_dir / "logs" / "images")
    assert sorted(images["reconstructions"]) == [0, 1]
    assert "generated_per_category" in images


def test_finished_run_is_not_retrained(finished_run, capsys):
    model_dir, config, _, metrics = finished_run
    state = json.loads((model_dir / "state.json").read_text())
    again = train_and_evaluate(config, model_dir)
    assert json.loads((model_dir / "state.json").read_text()) == state
    assert again["test_error_best"] == metrics["test_error_best"]


@pytest.mark.slow
def test_saved_model_serves_without_gmvae_keras(finished_run, tmp_path):

    import gmvae_keras.model  # noqa: F401

    model_dir = finished_run[0]
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(7, 28, 28, 1), dtype=np.uint8)
    np.save(tmp_path / "images.npy", images)
    script = textwrap.dedent(
        f"""
        import sys, numpy as np, tensorflow as tf
        loaded = tf.saved_model.load({str(model_dir / "export")!r})
        x = np.load({str(tmp_path / "images.npy")!r})
        f = loaded.signatures["serving_default"](images=tf.constant(x.astype("float32") / 255.0))
        u = loaded.signatures["serving_uint8"](images=tf.constant(x))
        f_out = {{"f_" + k: v.numpy() for k, v in f.items()}}
        u_out = {{"u_" + k: v.numpy() for k, v in u.items()}}
        np.savez({str(tmp_path / "out.npz")!r}, **f_out, **u_out)
        assert "gmvae_keras" not in sys.modules
        try:
            loaded.signatures["serving_default"](images=tf.constant(x.astype("float32")))
        except tf.errors.InvalidArgumentError as e:
            assert "must be in [0, 1]" in str(e)
        else:
            raise SystemExit("out-of-range float images were accepted")
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path)
    out = np.load(tmp_path / "out.npz")
    model = keras.saving.load_model(model_dir / "best.keras")
    probabilities = prediction.predict_proba(model, images)
    for prefix in ("f_", "u_"):
        np.testing.assert_allclose(out[prefix + "probabilities"], probabilities, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(out[prefix + "label"], prediction.predict_labels(model, images))
        np.testing.assert_allclose(
            out[prefix + "features"], prediction.features_and_logits(model, images)[0], rtol=1e-5, atol=1e-5
        )

    shown = subprocess.run(
        [
            os.path.join(os.path.dirname(sys.executable), "saved_model_cli"),
            "show",
            "--dir",
            str(model_dir / "export"),
            "--all",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "signature_def['serving_default']" in shown and "probabilities" in shown


def test_metrics_score_the_best_model_as_best_and_the_last_as_last(finished_run):
    from gmvae_keras import train

    model_dir, config, _, _ = finished_run
    data = train.load_data(config)
    best, last = (ckpt.load_model(model_dir / "best.keras") for _ in range(2))
    rng = np.random.default_rng(0)  # another model than the best
    last.set_weights([rng.permutation(w.ravel()).reshape(w.shape) for w in last.get_weights()])
    metrics = train._final_metrics(config, data, ckpt.read_json(model_dir / "state.json"), last, best)
    splits = (("val", data.val_images, data.val_labels), ("test", data.test_images, data.test_labels))
    for which, model in (("best", best), ("last", last)):
        for split, images, labels in splits:
            scores = train._scores(model, images, labels, data, config.eval_batch_size, split)
            assert {k: metrics[f"{k}_{which}"] for k in scores} == scores
    assert metrics["val_nmi_best"] != metrics["val_nmi_last"]


def test_export_command_reexports_a_run(finished_run, tmp_path):
    from gmvae_keras.export import main as export_main

    assert (
        export_main(["--model_dir", str(finished_run[0]), "--export_dir", str(tmp_path / "e"), "--which", "last"]) == 0
    )
    assert (tmp_path / "e" / "saved_model.pb").exists()
    assert export_main(["--model_dir", str(tmp_path / "nothing")]) == 2


def _mtimes(folder):
    """Each file's and folder's modification time: what a refused run must leave as it was."""
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*")}


def test_resuming_with_other_flags_is_refused_and_writes_nothing(finished_run):
    model_dir, config, _, _ = finished_run
    before = _mtimes(model_dir)
    other = Config(**{**config.to_dict(), "margin": 3.0, "k": 2})
    with pytest.raises(RunError, match=r"--margin=1.0 there, 3.0 now.*--k=3 there, 2 now.*--overwrite"):
        train_and_evaluate(other, model_dir)
    assert _mtimes(model_dir) == before


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_run_another_training_writes_is_refused_and_left_alone(finished_run, overwrite):
    model_dir, config, _, _ = finished_run
    other = Config(**{**config.to_dict(), "margin": 3.0, "overwrite": True}) if overwrite else config
    with ckpt.run_lock(model_dir):  # the other training, still going
        before = _mtimes(model_dir)
        with pytest.raises(RunError, match=rf"is being written by another training \(process {os.getpid()}\)"):
            train_and_evaluate(other, model_dir)
        assert _mtimes(model_dir) == before


def test_a_run_another_training_went_on_with_before_the_lock_is_refused(finished_run, tmp_path, monkeypatch):
    import contextlib
    import shutil

    model_dir, config, _, _ = finished_run
    run = tmp_path / "run"
    shutil.copytree(model_dir, run)
    other_state = {**ckpt.read_json(run / "state.json"), "epoch": 3}
    lock = ckpt.run_lock

    before = {}

    @contextlib.contextmanager
    def lock_taken_after_another_training(path):
        ckpt.atomic_write_json(path / "state.json", other_state)  # it trained epoch 3 meanwhile, and let go
        with lock(path):
            before.update(_mtimes(path))
            yield

    monkeypatch.setattr(ckpt, "run_lock", lock_taken_after_another_training)
    with pytest.raises(RunError, match="was written by another training while this one started"):
        train_and_evaluate(Config(**{**config.to_dict(), "epochs": 3}), run)
    assert before and _mtimes(run) == before


def test_the_run_lock_is_let_go_at_the_end_and_on_errors(tmp_path):
    model_dir = tmp_path / "new" / "run"
    with pytest.raises(KeyError), ckpt.run_lock(model_dir):
        with pytest.raises(RunError, match="another training"), ckpt.run_lock(model_dir):
            pass
        raise KeyError("a training that failed")
    with ckpt.run_lock(model_dir):
        assert (model_dir / ".lock").read_text() == f"{os.getpid()}\n"


@pytest.mark.parametrize(
    "overrides, error, message",
    [
        ({"dataset": "no_such_dataset"}, DataError, "unknown dataset"),
        ({"num_labeled": 25}, DataError, "must be divisible by the number of classes"),
        ({"num_labeled": 1000}, DataError, "num_labeled"),
        ({"batch_size": 41}, ConfigError, "must be even"),
        ({"batch_size": 16, "k": 3}, ConfigError, "cannot hold one example of each"),
        ({"k": 0}, ConfigError, "--k must be >= 1"),
        ({"k": 21}, ConfigError, "larger than the labeled part"),
        ({"metric_weight": -1.0}, ConfigError, "--metric_weight must be >= 0"),
        ({"margin": -0.5}, ConfigError, "--margin must be >= 0"),
        ({"learning_rate": 0.0}, ConfigError, "--learning_rate must be > 0"),
        ({"consistency_shift": -1}, ConfigError, "--consistency_shift must be >= 0"),
        ({"consistency_flip": True, "assignment_weight": 0.0}, ConfigError, "change L_A, which"),
        ({"consistency_shift": 2, "consistency_share": 0.0}, ConfigError, r"--consistency_share must be in \(0, 1\]"),
        ({"consistency_share": 0.5}, ConfigError, "set --consistency_shift or --consistency_flip"),
        ({"assignment_balance": "sinkhorn"}, ConfigError, "--assignment_balance must be one of"),
        ({"feature_clusters": 2}, ConfigError, "--feature_clusters is for --mode=clustering"),
        ({"feature_clusters": -1}, ConfigError, "--feature_clusters must be >= 0"),
        (
            {"mode": "clustering", "num_labeled": 0, "metric_weight": 0.0, "assignment_weight": 0.0}
            | {"feature_clusters": 2},
            ConfigError,
            "--feature_clusters trains q\\(y\\|x̂\\) through L_A, which --assignment_weight=0 leaves out",
        ),
        (
            {
                "mode": "clustering",
                "num_labeled": 0,
                "metric_weight": 0.0,
                "feature_clusters": 1,
                "consistency_shift": 2,
            },
            ConfigError,
            "--feature_clusters takes L_A on the images themselves",
        ),
        ({"prediction": "vote"}, ConfigError, "--prediction must be one of"),
        ({"precision": "fp8"}, ConfigError, "--precision must be one of"),
        (
            {
                "prediction": "knn",
                "mode": "clustering",
                "num_labeled": 0,
                "assignment_weight": 0.0,
                "metric_weight": 0.0,
            },
            ConfigError,
            "--prediction=knn votes among labeled",
        ),
        (
            {"mode": "clustering", "num_labeled": 0, "metric_weight": 0.0},
            ConfigError,
            "set --num_labeled=0 --assignment_weight=0 --metric_weight=0; got --assignment_weight=1.0$",
        ),
        (
            {"mode": "clustering", "num_labeled": 0, "assignment_weight": 0.0},
            ConfigError,
            "uses no labeled data .*; got --metric_weight=1.0$",
        ),
        (
            {"prediction": "knn", "num_labeled": 10, "batch_size": 60, "k": 15},
            ConfigError,
            "larger than --num_labeled=10",
        ),
    ],
)
def test_bad_input_fails_before_writing(mnist_files, tmp_path, overrides, error, message):
    model_dir = tmp_path / "run"
    model_dir.mkdir()
    (model_dir / "keep.txt").write_text("precious")
    with pytest.raises(error, match=message) as info:
        train_and_evaluate(tiny_config(mnist_files, **overrides), model_dir)
    assert "\n" not in str(info.value)
    assert [p.name for p in model_dir.iterdir()] == ["keep.txt"]


@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_damaged_files_fail_before_writing(mnist_files, tmp_path, damage):
    folder = tmp_path / "data"
    folder.mkdir()
    for path in mnist_files.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    target = folder / "train-images-idx3-ubyte.gz"
    if damage == "missing":
        target.unlink()
    else:
        target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    with pytest.raises(DataError, match="train-images-idx3-ubyte"):
        train_and_evaluate(tiny_config(folder), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def _cli(*args, cwd=None):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    return subprocess.run(
        [sys.executable, "-m", "gmvae_keras.main", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=280
    )


def test_cli_bad_input_is_one_line_and_nonzero(mnist_files, tmp_path):
    result = _cli("--dataset=mnist", f"--data_dir={mnist_files}", "--batch_size=41", f"--model_dir={tmp_path / 'r'}")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: --batch_size must be even (half unlabeled, half labeled), got 41"]
    assert not (tmp_path / "r").exists()


def test_cli_bad_flag_value_is_one_line_and_nonzero(tmp_path):
    result = _cli("--dataset=mnist", "--precision=fp8", f"--model_dir={tmp_path / 'r'}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        "error: flag --precision=fp8: value should be one of <float32|mixed_bfloat16|mixed_float16>"
    ]
    assert not (tmp_path / "r").exists()


def test_dataset_flagfile_goes_first_so_the_command_line_wins():
    argv = with_recipe(["prog", "--dataset=svhn", "--k=7"])
    assert argv[1] == f"--flagfile={FLAGS_DIR / 'svhn.cfg'}"
    assert argv[2:] == ["--dataset=svhn", "--k=7"]
    assert with_recipe(["prog", "--dataset=cifar10"]) == ["prog", "--dataset=cifar10"]
    argv = with_recipe(["prog", "--dataset", "mnist", "--mode=clustering"])
    assert argv[1] == f"--flagfile={FLAGS_DIR / 'mnist_clustering.cfg'}"


def test_cpu_settings_flagfile_follows_the_papers():
    argv = with_recipe(["prog", "--dataset=mnist", "--settings=cpu", "--seed=3"])
    assert argv[1:3] == [
        f"--flagfile={FLAGS_DIR / 'mnist.cfg'}",
        f"--flagfile={FLAGS_DIR / 'mnist_cpu.cfg'}",
    ]
    assert argv[3:] == ["--dataset=mnist", "--settings=cpu", "--seed=3"]
    with pytest.raises(ConfigError, match="no CPU settings for svhn"):
        with_recipe(["prog", "--dataset=svhn", "--settings=cpu"])


@pytest.mark.parametrize("dataset", ["mnist", "fashion_mnist"])
def test_clustering_cpu_settings_follow_the_papers_clustering_settings(dataset):
    argv = with_recipe(["prog", f"--dataset={dataset}", "--mode=clustering", "--settings=cpu"])
    assert argv[1:3] == [
        f"--flagfile={FLAGS_DIR / f'{dataset}_clustering.cfg'}",
        f"--flagfile={FLAGS_DIR / f'{dataset}_clustering_cpu.cfg'}",
    ]
    config = config_from_args([f"--dataset={dataset}", "--mode=clustering", "--settings=cpu"])
    assert (config.epochs, config.lr_schedule, config.temperature_epochs, config.categorical_kl) == (
        30,
        "cosine",
        4,
        "batch",
    )
    # Still §5.3.1's everywhere else, and without labels.
    assert (config.batch_size, config.gaussian_weight, config.reconstruction) == (64, 5.0, "bce")
    assert (config.num_labeled, config.metric_weight) == (0, 0.0)
    # MNIST's adds the mixture over x̂ as L_A's target; Fashion-MNIST's has no L_A.
    mixture = (2, 1.0) if dataset == "mnist" else (0, 0.0)
    assert (config.feature_clusters, config.assignment_weight) == mixture
    # The paper's clustering settings have neither, and keep the paper's per-image L_C.
    paper = config_from_args([f"--dataset={dataset}", "--mode=clustering"])
    assert (paper.feature_clusters, paper.assignment_weight, paper.categorical_kl) == (0, 0.0, "image")


def test_cpu_settings_for_one_label_count_come_last():
    flags_dir = FLAGS_DIR
    files = [
        f"--flagfile={flags_dir / n}"
        for n in ("fashion_mnist.cfg", "fashion_mnist_cpu.cfg", "fashion_mnist_cpu_1000.cfg")
    ]
    argv = with_recipe(["prog", "--dataset=fashion_mnist", "--settings=cpu", "--num_labeled=1000"])
    assert argv[1:4] == files
    assert argv[4:] == ["--dataset=fashion_mnist", "--settings=cpu", "--num_labeled=1000"]
    # No file for 100 labels, none with the paper's settings, none for a malformed count.
    for extra in (
        ["--settings=cpu", "--num_labeled=100"],
        ["--num_labeled=1000"],
        ["--settings=cpu", "--num_labeled=1e3"],
    ):
        argv = with_recipe(["prog", "--dataset=fashion_mnist"] + extra)
        assert [a for a in argv if a.startswith("--flagfile=")] == files[: 1 + ("--settings=cpu" in extra)]
    config = config_from_args(["--dataset=fashion_mnist", "--settings=cpu", "--num_labeled=1000"])
    assert (config.batch_size, _labeled_per_batch(config), config.epochs) == (150, 100, 10)
    assert (config.consistency_shift, config.consistency_flip, config.consistency_share) == (2, True, 0.5)
    config = config_from_args(["--dataset=fashion_mnist", "--settings=cpu", "--num_labeled=100"])
    assert (config.batch_size, _labeled_per_batch(config)) == (200, 100)
    assert (config.consistency_shift, config.consistency_flip, config.consistency_share) == (2, True, 1.0)
    config = config_from_args(
        ["--dataset=fashion_mnist", "--settings=cpu", "--num_labeled=1000", "--batch_size=200", "--labeled_per_batch=0"]
    )
    assert (config.batch_size, _labeled_per_batch(config)) == (200, 100)


def _labeled_per_batch(config):
    from gmvae_keras.batches import batch_layout

    return batch_layout(config.batch_size, labeled_per_batch=config.labeled_per_batch, num_labeled=config.num_labeled)[
        1
    ]


def test_the_recipe_follows_dataset_and_labels_given_in_a_users_flagfile(tmp_path):
    own = tmp_path / "mine.cfg"
    own.write_text("# my settings\n--dataset=fashion_mnist\n--num_labeled=1000\n--k=4\n")
    argv = with_recipe(["prog", f"--flagfile={own}", "--settings=cpu"])
    assert argv[1:4] == [
        f"--flagfile={FLAGS_DIR / n}"
        for n in ("fashion_mnist.cfg", "fashion_mnist_cpu.cfg", "fashion_mnist_cpu_1000.cfg")
    ]
    config = config_from_args([f"--flagfile={own}", "--settings=cpu"])
    # The user's file overrides the recipe (k), and the command line the user's file.
    assert (config.dataset, config.num_labeled, config.k, config.batch_size) == ("fashion_mnist", 1000, 4, 150)
    assert config_from_args([f"--flagfile={own}", "--k=5"]).k == 5


def test_helpfull_lists_the_kept_options_and_no_removed_one():
    result = _cli("--helpfull")
    assert "--learning_rate" in result.stdout, result.stderr[-2000:]  # absl exits 1 after help
    for removed in (
        "--ema_momentum",
        "--assignment_confidence",
        "distance (over the distances",
        "--auxiliary_warmup_epochs",
        "--augment_shift",
        "--augment_flip",
        "hard_gumbel",
        "--assignment_weighting",
        "--lr_decay",
        "step decay",
    ):
        assert removed not in result.stdout
    for kept in (
        "--lr_schedule:",
        "--assignment_balance:",
        "--consistency_shift:",
        "consistency_flip:",
    ):
        assert kept in result.stdout
    short = _cli("--helpshort").stdout
    assert "--dataset:" in short and "--settings:" in short and "--model_dir:" in short


def test_cli_refuses_a_flagfile_it_cannot_read_in_one_line(tmp_path):
    result = _cli(f"--flagfile={tmp_path / 'missing.cfg'}", f"--model_dir={tmp_path / 'r'}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "missing.cfg" in errors[0]
    assert not (tmp_path / "r").exists()


def test_cli_refuses_cpu_settings_that_do_not_exist(tmp_path):
    result = _cli("--dataset=svhn", "--settings=cpu", f"--model_dir={tmp_path / 'r'}")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: --settings=cpu: there are no CPU settings for svhn (gmvae_keras/flags/svhn_cpu.cfg)"]
    assert not (tmp_path / "r").exists()


def _read_flagfile(path):
    return flagfiles.read(path)


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_cpu_flagfiles_parse_and_keep_the_papers_batch(name):
    parsed = _read_flagfile(FLAGS_DIR / f"{name}_cpu.cfg")
    assert parsed["epochs"] == "10"
    # The budget changes the optimisation, not the data each step sees.
    assert "batch_size" not in parsed and "num_labeled" not in parsed and "dataset" not in parsed


def test_per_label_count_cpu_flagfiles_change_only_the_batch():
    paths = sorted(FLAGS_DIR.glob("*_cpu_*.cfg"))
    assert paths, "flags/fashion_mnist_cpu_1000.cfg is missing"
    for path in paths:
        parsed = _read_flagfile(path)
        # The label count's file is picked by --num_labeled; the budget (epochs) is the dataset's.
        # It may also change how a dataset-wide setting acts on L_A, not switch it on.
        assert set(parsed) <= {
            "batch_size",
            "labeled_per_batch",
            "consistency_shift",
            "consistency_flip",
            "consistency_share",
        }, (path.name, parsed)
        assert parsed.get("consistency_shift", "0") == "0" and parsed.get("consistency_flip", "false") == "false"


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "svhn"])
def test_flagfiles_hold_the_papers_settings(name):
    parsed = _read_flagfile(FLAGS_DIR / f"{name}.cfg")
    expected = {
        "mnist": dict(
            batch_size="200",
            feature_size="100",
            latent_size="100",
            k="5",
            assignment_weight="1",
            metric_weight="1",
            margin="2",
            num_labeled="100",
        ),
        "fashion_mnist": dict(
            batch_size="200",
            feature_size="200",
            latent_size="50",
            k="3",
            assignment_weight="1",
            metric_weight="0.1",
            margin="1",
            num_labeled="100",
        ),
        "svhn": dict(
            batch_size="400",
            feature_size="100",
            latent_size="150",
            k="3",
            assignment_weight="5",
            metric_weight="3",
            margin="0.5",
            num_labeled="1000",
        ),
    }[name]
    for key, value in expected.items():
        assert parsed[key] == value, key
    assert parsed["learning_rate"] == "0.001" and parsed["epochs"] == "200" and parsed["reconstruction"] == "mse"
    assert parsed["temperature_epochs"] == "50" and parsed["temperature_end"] == "0.5"


def test_svhn_trains_end_to_end_on_synthetic_mat_files(tmp_path):
    from gmvae_keras.train import load_data

    write_svhn_dataset(tmp_path / "svhn", n_train=120, n_test=30)
    config = tiny_config(
        tmp_path / "svhn",
        dataset="svhn",
        epochs=1,
        steps_per_epoch=2,
        image_summary_every=0,
        # A k-NN run: the model stores the labeled set, and the vote is what is scored and served.
        prediction="knn",
        # The flags beyond the paper that act inside the train step ride along.
        consistency_shift=1,
        consistency_flip=True,
        consistency_share=0.5,
        assignment_balance="vote",
    )
    model_dir = tmp_path / "run"
    metrics = train_and_evaluate(config, model_dir)
    assert metrics["dataset"] == "svhn" and 0 <= metrics["test_error_best"] <= 100
    data = load_data(config)
    best = keras.saving.load_model(model_dir / "best.keras")
    np.testing.assert_array_equal(best.labeled_images.numpy(), prediction.unit_float(data.labeled_images))
    np.testing.assert_array_equal(best.labeled_image_labels.numpy(), data.labeled_labels)
    predicted = prediction.predict_labels(best, data.test_images)
    assert metrics["test_error_best"] == pytest.approx(100.0 * np.mean(predicted != data.test_labels))
    assert metrics["test_error_knn_best"] == metrics["test_error_best"]
    _, logits = prediction.features_and_logits(best, data.test_images)
    assert metrics["test_error_classifier_best"] == pytest.approx(
        100.0 * np.mean(logits.argmax(-1) != data.test_labels)
    )
    served = tf.saved_model.load(str(model_dir / "export")).signatures["serving_uint8"](
        images=tf.constant(data.test_images)
    )
    np.testing.assert_array_equal(served["label"].numpy(), predicted)
    np.testing.assert_array_equal(served["probabilities"].numpy().argmax(-1), predicted)


@pytest.mark.slow
def test_short_real_mnist_run(tmp_path, real_dataset):
    config = tiny_config(
        real_dataset("mnist"),
        num_labeled=100,
        batch_size=100,
        feature_size=32,
        latent_size=16,
        epochs=1,
        steps_per_epoch=20,
        eval_batch_size=2000,
        image_summary_every=0,
        learning_rate=3e-3,
    )
    metrics = train_and_evaluate(config, tmp_path / "run")
    # 20 steps are far from convergence: 28.1 and 34.0 % by q(y|x̂), 18.0 and 22.9 % by the k-NN vote
    # (seeds 0 and 1), against 90 % by chance.
    assert metrics["test_error_best"] < 45.0 and metrics["test_error_knn_best"] < 35.0


@pytest.mark.parametrize("name, feature_size, latent_size", [("mnist", "100", "150"), ("fashion_mnist", "200", "50")])
def test_clustering_flagfiles_hold_the_papers_settings(name, feature_size, latent_size):
    parsed = _read_flagfile(FLAGS_DIR / f"{name}_clustering.cfg")
    expected = dict(
        mode="clustering",
        num_labeled="0",
        batch_size="64",
        feature_size=feature_size,
        latent_size=latent_size,
        gaussian_weight="5",
        reconstruction="bce",
        assignment_weight="0",
        metric_weight="0",
    )
    for key, value in expected.items():
        assert parsed[key] == value, key


def _clustering_config(data_dir):
    return tiny_config(
        data_dir,
        mode="clustering",
        num_labeled=0,
        batch_size=32,
        assignment_weight=0.0,
        metric_weight=0.0,
        gaussian_weight=5.0,
        reconstruction="bce",
        epochs=3,
        steps_per_epoch=3,
        image_summary_every=0,
    )


def test_clustering_run_reports_accuracy_and_nmi_and_chooses_its_model_without_labels(tmp_path, monkeypatch):
    from gmvae_keras import train

    # Classes a model can find: each lights a band of rows of its own.
    write_idx_dataset(tmp_path / "data", n_train=300, n_test=100, seed=1, learnable=True)
    config = _clustering_config(tmp_path / "data")
    config.deterministic = True
    honest = train_and_evaluate(config, tmp_path / "honest")
    assert honest["monitor"] == "val_loss" and honest["mode"] == "clustering"
    # Nine steps find the classes: ACC / NMI 62 / 80 (38-62 / 63-80 on seeds 0-2), against 26 / 32 for the
    # same run whose learning rate is 1e-9.
    assert honest["test_cluster_accuracy_best"] >= 45.0 and honest["test_nmi_best"] >= 60.0
    # Its categories are not the classes: no classification error is reported.
    assert not [key for key in honest if "error" in key]
    assert json.loads((tmp_path / "honest" / "state.json").read_text())["monitor"] == "val_loss"
    with pytest.raises(ConfigError, match="--mode=clustering uses no labeled data"):
        train_and_evaluate(Config(**{**config.to_dict(), "num_labeled": 20}), tmp_path / "other")
    load_data = train.load_data

    def shuffled_validation_labels(config, print_fn=None):
        data = load_data(config, print_fn)
        return dataclasses.replace(data, val_labels=np.random.default_rng(1).permutation(data.val_labels))

    monkeypatch.setattr(train, "load_data", shuffled_validation_labels)
    shuffled = train_and_evaluate(config, tmp_path / "shuffled")
    # The best epoch is the one of the lowest validation loss (TensorBoard's validation "epoch_loss").
    losses = _event_values(tmp_path / "honest" / "logs" / "validation", "epoch_loss")
    assert len(losses) == 3 and honest["best_epoch"] == 1 + int(np.argmin(losses))
    # Other validation labels change what is scored, not what is chosen: the same epoch, the same weights.
    assert shuffled["best_epoch"] == honest["best_epoch"]
    assert _event_values(tmp_path / "shuffled" / "logs" / "validation", "epoch_loss") == losses
    weights = [keras.saving.load_model(tmp_path / name / "best.keras").get_weights() for name in ("honest", "shuffled")]
    for a, b in zip(*weights, strict=True):
        np.testing.assert_array_equal(a, b)


def test_feature_clusters_start_l_a_after_the_first_fit_and_survive_a_resume(mnist_files, tmp_path):
    from gmvae_keras import train

    config = dataclasses.replace(_clustering_config(mnist_files), epochs=2, assignment_weight=1.0, feature_clusters=1)
    train_and_evaluate(config, tmp_path / "run")
    # Fitted at the end of epoch 1: L_A is 0 in epoch 1 and trains q(y|x̂) in epoch 2.
    assignment = _event_values(tmp_path / "run" / "logs" / "train", "epoch_assignment_loss")
    assert assignment[0] == 0.0 and assignment[1] > 0.0
    agreement = _event_values(tmp_path / "run" / "logs" / "train", "epoch_feature_cluster_agreement")
    assert len(agreement) == 2 and all(0.0 < value <= 1.0 for value in agreement)
    # The mixture is part of the checkpoint: a resumed run starts from the fitted one.
    checkpoint = keras.saving.load_model(tmp_path / "run" / "checkpoints" / "epoch-0002.keras")
    assert float(checkpoint.feature_mixture.fitted) == 1.0
    assert train.FEATURE_CLUSTER_IMAGES >= 1000
    train_and_evaluate(dataclasses.replace(config, epochs=3), tmp_path / "run")
    resumed = _event_values(tmp_path / "run" / "logs" / "train", "epoch_assignment_loss")
    # Without the restored mixture, epoch 3 would train no L_A (an unfitted mixture weighs it 0).
    assert len(resumed) == 3 and resumed[2] > 0.0


# ----------------------------------------------------------- mixed precision


def _spy_on_load_model(monkeypatch):
    """The models `keras.saving.load_model` returns while the test lasts."""
    loaded, original = [], keras.saving.load_model

    def spy(*args, **kwargs):
        loaded.append(original(*args, **kwargs))
        return loaded[-1]

    monkeypatch.setattr(keras.saving, "load_model", spy)
    return loaded


def test_only_an_emulated_bfloat16_run_without_xla_gets_the_slowness_note(monkeypatch):
    import gmvae_keras.train as train_module

    no_bfloat16 = {"avx2": True, "avx512_bf16": False, "amx_bf16": False}
    monkeypatch.setattr(train_module, "cpu_info", lambda: ("Test CPU", no_bfloat16))
    note = train_module._precision_note(Config(precision="mixed_bfloat16"))
    assert note.startswith("note: ") and "emulated" in note and "--jit_compile" in note
    # Under XLA the emulation keeps up with float32, so there is nothing to warn about.
    assert train_module._precision_note(Config(precision="mixed_bfloat16", jit_compile=True)) is None
    assert train_module._precision_note(Config(precision="float32")) is None
    monkeypatch.setattr(train_module, "cpu_info", lambda: ("Test CPU", {**no_bfloat16, "avx512_bf16": True}))
    assert train_module._precision_note(Config(precision="mixed_bfloat16")) is None


def test_a_mixed_bfloat16_run_trains_resumes_in_bfloat16_and_restores_the_policy(
    mnist_files, tmp_path, monkeypatch, capsys, global_dtype_policy
):
    import gmvae_keras.train as train_module

    keras.config.set_dtype_policy("float32")
    model_dir = tmp_path / "run"
    config = tiny_config(mnist_files, epochs=1, steps_per_epoch=2, image_summary_every=0, precision="mixed_bfloat16")
    no_bfloat16 = {"avx2": True, "avx512_bf16": False, "amx_bf16": False}
    monkeypatch.setattr(train_module, "cpu_info", lambda: ("Test CPU", no_bfloat16))
    first = train_and_evaluate(config, model_dir)
    # On a CPU without bfloat16 instructions the run says, once, why it is slow.
    assert capsys.readouterr().out.count("--precision=mixed_bfloat16 is emulated and trains slower") == 1
    monkeypatch.setattr(train_module, "cpu_info", lambda: ("Test CPU", {**no_bfloat16, "amx_bf16": True}))
    assert keras.config.dtype_policy().name == "float32"
    assert json.loads((model_dir / "config.json").read_text())["precision"] == "mixed_bfloat16"
    config.epochs = 2
    loaded = _spy_on_load_model(monkeypatch)
    metrics = train_and_evaluate(config, model_dir)  # resumes after epoch 1
    assert "is emulated" not in capsys.readouterr().out
    assert keras.config.dtype_policy().name == "float32"
    assert first["epochs"] == 1 and metrics["epochs"] == 2
    # The resumed model, and the best one, computed in bfloat16.
    assert loaded and all(model.dtype_policy.name == "mixed_bfloat16" for model in loaded)
    trained = loaded[0]  # resumed from epoch 1 and trained on in place
    assert all(model.encoder.blocks[0].compute_dtype == "bfloat16" for model in loaded)
    # And trained as float32 does: its four steps moved the weights from the same start by as much, the same way.
    from gmvae_keras.train import build_model, load_data

    float32 = dataclasses.replace(config, precision="float32")
    train_and_evaluate(float32, tmp_path / "float32")
    data = load_data(config)
    keras.utils.set_random_seed(config.seed)  # as the run does before it builds its model
    start = build_model(float32, 10, data.image_shape, 2, (data.labeled_images, data.labeled_labels))

    def flat(model):
        return np.concatenate(
            [keras.ops.convert_to_numpy(w).astype("float32").ravel() for w in model.trainable_weights]
        )

    last = sorted((tmp_path / "float32" / "checkpoints").iterdir())[-1]
    moved, reference = (flat(m) - flat(start) for m in (trained, keras.saving.load_model(last)))
    cosine = moved @ reference / np.linalg.norm(moved) / np.linalg.norm(reference)
    assert cosine > 0.8 and abs(np.linalg.norm(moved) / np.linalg.norm(reference) - 1.0) < 0.2, cosine
    # A run does not change precision on the way: resuming in float32 is refused, and the policy is restored.
    with pytest.raises(RunError, match="--precision='mixed_bfloat16' there, 'float32' now"):
        train_and_evaluate(tiny_config(mnist_files, epochs=2, steps_per_epoch=2, image_summary_every=0), model_dir)
    assert keras.config.dtype_policy().name == "float32"
