"""`train_and_evaluate(config, model_dir)`: one training run, start to finish."""

import contextlib
import dataclasses
import functools
import shutil
import time
from pathlib import Path

import keras
import numpy as np

from gmvae_keras import batches, determinism, distribute, paths, prediction
from gmvae_keras import checkpoint as ckpt
from gmvae_keras import data as data_lib
from gmvae_keras.callbacks import (
    EpochNoiseSeeds,
    EpochSummary,
    FeatureClusters,
    ImageSummaries,
    LearningRateLogger,
    TemperatureAnnealing,
    TerminateOnNonFinite,
    ValidationMetrics,
)
from gmvae_keras.checkpoint import RunError
from gmvae_keras.config import ConfigError
from gmvae_keras.export import export_saved_model
from gmvae_keras.host import bfloat16_hardware, cpu_info
from gmvae_keras.model import GMVAE, LOSS_TERMS, network_mismatches

# Training images the `--feature_clusters` mixture is fitted to.
FEATURE_CLUSTER_IMAGES = 20000

# Files of a run that `--overwrite` removes before starting afresh.
_RUN_FILES = ("state.json", "metrics.json", "best.keras", "labeled_indices.npy", "config.json", "class_names.json")
_RUN_DIRS = ("checkpoints", "export", "logs", "figures")


def learning_rate(config, steps_per_epoch):
    """The learning rate or schedule of `config`, in optimizer steps."""
    if config.lr_schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(config.learning_rate, decay_steps=config.epochs * steps_per_epoch)
    return config.learning_rate


def _refit_schedule(model, config, steps_per_epoch):
    """Gives a resumed model's optimizer the schedule of the run's length now.

    The checkpoint holds the schedule built for the `--epochs` the run began
    with; a run resumed with more (allowed) would train the extra epochs at the
    end of a cosine decay, at learning rate 0. Only the schedule object is
    replaced: the step count and Adam's moments are variables of their own.

    Returns:
        What the cosine decay was rebuilt for, for the resume line ("20 epochs
        of 480 steps (was 4800 steps)"), or None when the restored schedule
        already fits.
    """
    wanted = learning_rate(config, steps_per_epoch)
    # A LossScaleOptimizer (mixed_float16) holds the schedule in the optimizer it wraps.
    optimizer = getattr(model.optimizer, "inner_optimizer", model.optimizer)
    restored = optimizer.get_config()["learning_rate"]
    if not isinstance(wanted, keras.optimizers.schedules.CosineDecay) or not isinstance(restored, dict):
        return None
    if restored.get("config") == wanted.get_config():
        return None
    optimizer.learning_rate = wanted
    # In steps: a changed --steps_per_epoch or batch rebuilds it too, at the same --epochs.
    return f"{config.epochs} epochs of {steps_per_epoch} steps (was {restored['config']['decay_steps']} steps)"


def build_model(config, num_classes, image_shape, steps_per_epoch, labeled_set=None):
    """A compiled GMVAE for `config`, in the dtype policy `config.precision`.

    `labeled_set`, `(images, labels)` of the labeled training images, is
    stored in the model for `--prediction=knn` (and required by it). Under
    `mixed_float16` the optimizer is wrapped in a
    `keras.optimizers.LossScaleOptimizer`: float16 gradients underflow
    without loss scaling (bfloat16 has float32's exponent range and needs none).
    """
    knn = config.prediction == "knn"
    if knn and labeled_set is None:
        raise ValueError("--prediction=knn needs the labeled set to vote among")
    model = GMVAE(
        image_shape=image_shape,
        num_classes=num_classes,
        **dataclasses.asdict(config.model_settings()),
        temperature=config.temperature_start,
        labeled_set_size=len(labeled_set[1]) if knn else 0,
        seed=config.seed,
        dtype=config.precision,
    )
    if knn:
        model.set_labeled_set(*labeled_set)
    optimizer = keras.optimizers.Adam(learning_rate(config, steps_per_epoch))
    if config.precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    model.compile(optimizer=optimizer, jit_compile=config.jit_compile)
    return model


def _check_run_dir(config, model_dir):
    """Refuse to resume a run made with other flags, unless --overwrite."""
    previous = ckpt.read_config(model_dir)
    if previous is None:
        return False
    differences = config.describe_differences(previous)
    if differences and not config.overwrite:
        raise RunError(
            f"{model_dir} holds a run made with different flags ({', '.join(differences)}); "
            "pass --overwrite to start afresh or choose another --model_dir"
        )
    return bool(differences)


def _clear_run(model_dir):
    for name in _RUN_FILES:
        (model_dir / name).unlink(missing_ok=True)
    for name in _RUN_DIRS:
        shutil.rmtree(model_dir / name, ignore_errors=True)


def load_data(config, print_fn=None):
    """The data set of `config`, checked against it (ConfigError, data.DataError).

    A folder (`--dataset=folder`) prints its summary to `print_fn`; a
    clustering of a folder that has labeled/ takes those images unlabeled.
    """
    if config.dataset == "folder":
        data = data_lib.from_folder(
            config.data_dir,
            image_size=config.image_size or None,
            channels=config.channels or None,
            skip_bad_images=config.skip_bad_images,
            num_classes=config.num_classes or None,
            print_fn=print_fn,
        )
        if config.mode == "clustering":
            data = dataclasses.replace(data, labeled_indices=data.labeled_indices[:0])
    else:
        data = data_lib.load_dataset(
            config.dataset,
            data_dir=config.data_dir,
            num_labeled=config.num_labeled,
            seed=config.seed,
            validation_fraction=config.validation_fraction,
        )
        if config.add_labeled is not None:
            from gmvae_keras.labeling import LabelingError, read_indices

            try:
                indices = read_indices(config.add_labeled)
            except LabelingError as e:
                raise data_lib.DataError(f"--add_labeled: {e}") from None
            data = data_lib.add_labeled(data, indices)
    return data


def data_config(config, data):
    """`config` with what a folder decides: its labeled count, image size and channels (as they were inferred)."""
    if config.dataset != "folder":
        return config
    return dataclasses.replace(
        config, num_labeled=data.num_labeled, image_size=data.image_shape[0], channels=data.image_shape[-1]
    )


def _scores(model, images, labels, data, batch_size, prefix):
    """The run's scores on one split; with a labeled set, also the error of each prediction rule.

    A clustering (no labeled set) gets ACC and NMI only: its categories are not the classes.
    """
    features, logits = prediction.features_and_logits(model, images, batch_size)
    if len(data.labeled_labels) == 0:
        predicted = prediction.probabilities(model, features, logits, batch_size=batch_size).argmax(-1)
        return {f"{prefix}_{name}": value for name, value in prediction.scores(labels, predicted, True).items()}
    # Both rules on the same model, whichever one the run predicts (and selects its best epoch) with.
    labeled_set = (data.labeled_images, data.labeled_labels)
    predicted = {
        rule: prediction.probabilities(model, features, logits, rule, labeled_set, batch_size).argmax(-1)
        for rule in prediction.RULES
    }
    scores = {
        f"{prefix}_{name}": value for name, value in prediction.scores(labels, predicted[model.prediction]).items()
    }
    for rule in prediction.RULES:
        scores[f"{prefix}_error_{rule}"] = prediction.error(labels, predicted[rule])
    return scores


def train_and_evaluate(config, model_dir):
    """Trains, checkpoints, evaluates and exports one run into `model_dir`.

    Running it again with the same `config` and `model_dir` resumes after the
    last complete epoch. Every check (flags, data, run directory) happens
    before anything is written. Keras' global dtype policy is
    `config.precision` while the run lasts, and the caller's again afterwards.

    Returns:
        The dict written to `metrics.json`.

    Raises:
        ConfigError, data.DataError, RunError, paths.PathError: bad input,
            one-line messages.
        callbacks.NonFiniteLoss: a loss term became NaN or infinite.
        checkpoint.CheckpointWriteError: a checkpoint could not be written.
    """
    previous_policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(config.precision)
    try:
        return _train_and_evaluate(config, Path(model_dir))
    finally:
        keras.config.set_dtype_policy(previous_policy)


def _precision_note(config):
    """The `note:` a run prints at start when its precision is emulated on this host, else None."""
    if config.precision != "mixed_bfloat16" or config.jit_compile:
        # XLA emulates bfloat16 at about float32's speed; TensorFlow's own kernels at well under half of it.
        return None
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU") or bfloat16_hardware(cpu_info()[1]):
        return None
    return (
        "note: this CPU has no bfloat16 instructions (AMX, AVX-512 BF16) and no GPU is visible: "
        "--precision=mixed_bfloat16 is emulated and trains slower than float32 here; "
        "--jit_compile has XLA emulate it over twice as fast, near float32's speed"
    )


def _run_state(model_dir, start_afresh):
    """The state the run goes on from: its `state.json`, or a new one for a run without it or started afresh."""
    return ckpt.initial_state() if start_afresh else ckpt.read_json(model_dir / "state.json", ckpt.initial_state())


def _check_state_unchanged(model_dir, state, start_afresh):
    """Under the run's lock: the state read before it is still the run's, so no other training went on with it."""
    if _run_state(model_dir, start_afresh) != state:
        raise RunError(f"{model_dir} was written by another training while this one started; start it again")


def _train_and_evaluate(config, model_dir):
    """`train_and_evaluate` of a validated `config`, under its dtype policy: the run's steps."""
    # Created before any other TensorFlow work: multi-worker collectives need it.
    strategy = distribute.make_strategy(config.strategy)
    chief = distribute.is_chief(strategy)  # the other workers only read the run directory
    config, data = _checked_inputs(config, model_dir, chief)
    start_afresh = _check_run_dir(config, model_dir)
    # The batches start at the epoch the run resumes after; a run started afresh forgets its old state.
    state = _run_state(model_dir, start_afresh)
    source = None if state.get("checkpoint") else _init_source(config, data)  # a resumed run has its own weights
    train_dataset, steps = _train_batches(strategy, data, config, state["epoch"])
    # Checks are over: from here on the run directory is written (by the chief only, holding it).
    with ckpt.run_lock(model_dir) if chief else contextlib.nullcontext():
        if chief:
            _check_state_unchanged(model_dir, state, start_afresh)
            _prepare_run_dir(model_dir, config, data, start_afresh)
            note = _precision_note(config)
            if note:
                print(note, flush=True)
        model = _build_or_restore(strategy, config, data, model_dir, state, steps, source)
        checkpointer = ckpt.RunCheckpoint(model_dir, state, config.batch_size, _monitor(config))
        if state["epoch"] < config.epochs:
            model.fit(
                train_dataset,
                epochs=config.epochs,
                initial_epoch=state["epoch"],
                steps_per_epoch=steps,
                callbacks=_callbacks(config, data, model_dir, checkpointer, chief),
                verbose=config.verbose if chief else 0,
                shuffle=False,  # the pipeline shuffles
            )
        if not chief:
            return {}
        best = ckpt.load_model(checkpointer.best_path) if checkpointer.best_path.exists() else model
        metrics = _final_metrics(config, data, state, model, best)
        export_saved_model(best, model_dir / "export", data.class_names)
        ckpt.atomic_write_json(model_dir / "metrics.json", metrics)
    summary = _summary(metrics, config.mode == "clustering")
    print(f"done: {summary}run in {model_dir}, SavedModel in {model_dir / 'export'}", flush=True)
    return metrics


def _monitor(config):
    """The validation score that selects the best model: a clustering reads no labels, not even to choose."""
    return "val_loss" if config.mode == "clustering" else "val_error"


def _checked_inputs(config, model_dir, chief):
    """`(config, data)`: the paths checked, the data loaded, and `config` with what a folder decides."""
    if chief:
        paths.check_output_dir(model_dir, "--model_dir")
    if config.data_dir is not None:
        paths.check_input_dir(config.data_dir, "--data_dir")
    data = load_data(config, print_fn=functools.partial(print, flush=True) if chief else None)
    config = data_config(config, data)
    if chief and config.dataset == "folder":
        if not len(data.val_labels):
            print("no val/ folder: the run keeps its last epoch (nothing to select by)", flush=True)
        if not len(data.test_labels):
            print("no test/ folder: no test error will be reported", flush=True)
    return config, data


def _init_source(config, data):
    """The kept model of `--init_from`'s run (`ckpt.read_run`), or None; RunError when there is none,
    ConfigError when its networks do not fit this run's images, classes or sizes."""
    if config.init_from is None:
        return None
    run = paths.check_input_dir(config.init_from, "--init_from")
    try:
        _, path = ckpt.read_run(run)
    except (ConfigError, RunError) as e:
        raise RunError(f"--init_from: {e}") from None
    source = ckpt.load_model(path)
    mismatches = network_mismatches(
        source,
        image_shape=tuple(data.image_shape),
        num_classes=data.num_classes,
        feature_size=config.feature_size,
        latent_size=config.latent_size,
    )
    if mismatches:
        raise ConfigError(f"--init_from={run}: its model does not fit this run ({'; '.join(mismatches)})")
    return source


def _train_batches(strategy, data, config, initial_epoch):
    """`(dataset, global steps per epoch)` of the run from `initial_epoch` on, on one device or on every replica.

    Each replica gets its own batch of `batch_size / replicas` images from its machine's input pipeline
    (`tf.distribute.Strategy.distribute_datasets_from_function`), so the k-NN vote and L_M see the labeled
    part of their own replica only.
    """
    replicas = strategy.num_replicas_in_sync
    pipelines = distribute.input_pipelines(strategy) if replicas > 1 else 1
    num_train = len(data.train_labels)
    n_u, n_l = batches.batch_layout(
        config.batch_size, data.num_classes, config.labeled_per_batch, data.num_labeled, config.k, replicas, num_train
    )
    steps = config.steps_per_epoch or batches.steps_per_epoch(num_train, n_u, replicas, pipelines)
    options = dict(seed=config.seed, epoch=initial_epoch, epochs=config.epochs, **config.train_pipeline_options())
    if replicas == 1:
        return data_lib.make_train_dataset(data, config.batch_size, n_l or None, steps=steps, **options), steps

    def pipeline(context):
        # Keras does not restart a distributed iterator between epochs: the stream holds every epoch left, each
        # of one batch per replica of this pipeline and global step.
        return data_lib.make_train_dataset(
            data,
            n_u + n_l,
            n_l or None,
            steps=steps * replicas // pipelines,
            **options,
            num_shards=context.num_input_pipelines,
            shard_index=context.input_pipeline_id,
        )

    return strategy.distribute_datasets_from_function(pipeline), steps


def _prepare_run_dir(model_dir, config, data, start_afresh):
    """Creates (or clears) the run directory and writes what the run is made of: config, classes, labeled set."""
    labeled_path = model_dir / "labeled_indices.npy"
    model_dir.mkdir(parents=True, exist_ok=True)
    if start_afresh:
        _clear_run(model_dir)
    if labeled_path.exists() and not np.array_equal(np.load(labeled_path), data.labeled_indices):
        raise RunError(f"{labeled_path} differs from the labeled set drawn now; the data changed since the run began")
    ckpt.remove_stale_temporaries(model_dir)
    ckpt.atomic_write_text(model_dir / "config.json", config.to_json() + "\n")
    ckpt.atomic_write_json(model_dir / "class_names.json", {"class_names": list(data.class_names)})
    if not labeled_path.exists():
        np.save(labeled_path, data.labeled_indices)


def _build_or_restore(strategy, config, data, model_dir, state, steps, source=None):
    """A new model (with `source`'s networks, `--init_from`), or the last checkpoint's with its schedule fitted
    to the run's length now."""
    # Seeds the weights' initialisation; each epoch's data and noise are drawn from the seed and the epoch alone.
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        determinism.enable()
    last = ckpt.last_checkpoint(model_dir, state)
    with strategy.scope():
        if last is None:
            labeled_set = (data.labeled_images, data.labeled_labels)
            model = build_model(config, data.num_classes, data.image_shape, steps, labeled_set)
            if source is not None:
                model.copy_networks(source)
                print(f"starting from the weights of {config.init_from}", flush=True)
            return model
        model = ckpt.load_model(last)
    print(f"resuming {model_dir} after epoch {state['epoch']}", flush=True)
    if state["epoch"] < config.epochs:
        rebuilt = _refit_schedule(model, config, steps)
        if rebuilt:
            print(f"resuming {model_dir}: learning-rate schedule rebuilt for {rebuilt}", flush=True)
    return model


def _callbacks(config, data, model_dir, checkpointer, chief):
    """The callbacks of `fit`, in the order they must run: those that change the model, then (chief) the
    validation scores before the callbacks that read them."""
    callbacks = [
        TerminateOnNonFinite(("loss",) + LOSS_TERMS),
        TemperatureAnnealing(config.temperature_start, config.temperature_end, config.temperature_epochs),
        EpochNoiseSeeds(config.seed),
    ]
    if config.feature_clusters:
        # Every worker fits the same mixture (same weights, images and seed), so the replicas stay equal.
        # A fixed sample of the training images, drawn from the seed: seconds of fitting per refresh.
        sample = np.sort(
            np.random.default_rng(config.seed).permutation(len(data.train_images))[:FEATURE_CLUSTER_IMAGES]
        )
        callbacks.append(FeatureClusters(data.train_images[sample], config.feature_clusters, config.seed))
    if not chief:
        return callbacks
    return callbacks + [
        ValidationMetrics(
            data.val_images,
            data.val_labels,
            config.eval_batch_size,
            clustering=config.mode == "clustering",
            labeled_images=data.labeled_images,
        ),
        LearningRateLogger(),
        checkpointer,
        # An explicit progress bar runs here, so that it ends its line before the summary.
        keras.callbacks.ProgbarLogger(),
        EpochSummary(config.epochs),
        keras.callbacks.TensorBoard(log_dir=str(model_dir / "logs"), write_graph=False),
        ImageSummaries(
            model_dir / "logs" / "images",
            prediction.unit_float(data.val_images[:10]),
            every=config.image_summary_every,
            seed=config.seed,
        ),
    ]


def _final_metrics(config, data, state, last, best):
    """`metrics.json`: the last and best models' scores on validation and test (read once here), and the run."""
    evaluate_start = time.perf_counter()
    metrics = {}
    for which, scored in (("last", last), ("best", best)):
        for split, images, labels in (
            ("val", data.val_images, data.val_labels),
            ("test", data.test_images, data.test_labels),
        ):
            if not len(labels):
                continue  # a folder without val/ or test/
            scores = _scores(scored, images, labels, data, config.eval_batch_size, split)
            metrics.update({f"{key}_{which}": value for key, value in scores.items()})
    metrics.update(
        {
            "mode": config.mode,
            "monitor": _monitor(config),
            "best_epoch": state["best_epoch"],
            "epochs": state["epoch"],
            "train_seconds": round(state["train_seconds"], 2),
            "train_images_per_second": round(state["train_images"] / max(state["train_seconds"], 1e-9), 1),
            # The host that finished the run: images/s compare only on the same CPU.
            "cpu_model": cpu_info()[0],
            "evaluation_seconds": round(time.perf_counter() - evaluate_start, 2),
            "dataset": data.name,
            "num_labeled": data.num_labeled,
            "seed": config.seed,
            "class_names": list(data.class_names),
        }
    )
    return metrics


def _summary(metrics, clustering):
    """The test scores of the `done:` line, and the training speed."""
    speed = f"{metrics['train_images_per_second']:.0f} train images/s; "
    if "test_nmi_last" not in metrics:
        model = f"best model: epoch {metrics['best_epoch']}" if metrics["best_epoch"] else "model: the last epoch"
        return f"no test split, no test error ({model}); {speed}"
    best, last = (
        f"{metrics['test_cluster_accuracy_' + w]:.2f}%, NMI {metrics['test_nmi_' + w]:.2f}%" for w in ("best", "last")
    )
    if clustering:
        scores = f"test ACC {best} (lowest validation loss, epoch {metrics['best_epoch']}); ACC {last} (last); "
    else:
        scores = (
            f"test error {metrics['test_error_best']:.2f}%, ACC {best} (best model, epoch {metrics['best_epoch']}); "
            f"test error {metrics['test_error_last']:.2f}% (last); best model by each rule: classifier "
            f"{metrics['test_error_classifier_best']:.2f}%, k-NN {metrics['test_error_knn_best']:.2f}%; "
        )
    return scores + speed
