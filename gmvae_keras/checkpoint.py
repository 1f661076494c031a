"""Checkpoints of a run directory: written atomically, read back to resume.

Layout of a run directory:

    config.json            resolved configuration
    labeled_indices.npy    the fixed labeled set (indices into the train split)
    state.json             epochs done, best monitored value, time and images so far
    checkpoints/epoch-NNNN.keras
                           model + optimizer after the last complete epoch
    best.keras             model with the best monitored validation score
    metrics.json           final scores, written at the end
    logs/                  TensorBoard
    export/                SavedModel
    figures/               PNGs of `python -m gmvae_keras.figures`
    .lock                  held by the training that writes the run (`run_lock`)

Every file is written under a temporary name and renamed into place, so a
run killed at any moment leaves the previous version intact. `state.json`
is written after the checkpoint it names, and older checkpoints are removed
only after that, so the state never points at a missing or newer file.
"""

import contextlib
import json
import os
import shutil
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: runs are not locked
    fcntl = None

import keras

from gmvae_keras.config import RunError, read_config, read_json


def atomic_write_text(path, text):
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_json(path, value):
    atomic_write_text(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


def atomic_save_model(model, path):
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.keras")
    try:
        model.save(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def read_run(model_dir, which="best"):
    """`(config, path of the saved model)` of a finished run directory; `which` is "best" or "last".

    A run without validation images (a folder without val/) has no best model: its "best" is its last, the model
    it exported.

    Raises:
        ConfigError, RunError: as `read_config`, or no config.json or no such model.
    """
    config = read_config(model_dir)
    if config is None:
        raise RunError(f"{model_dir} holds no run (config.json is missing)")
    folder = Path(model_dir)
    state = read_json(folder / "state.json", {})
    if which == "best" and (state.get("best_epoch") or not state.get("epoch")):
        path = folder / "best.keras"
    else:
        path = last_checkpoint(folder, state)
    if path is None or not path.exists():
        raise RunError(f"no {which} model in {model_dir}")
    return config, path


def load_model(path):
    """The `.keras` model at `path`; RunError (one line) when the file is not one this package can read."""
    import gmvae_keras.model  # noqa: F401  registers the custom layers

    try:
        return keras.saving.load_model(path)
    except Exception as e:  # a truncated zip, a foreign model, a newer format: the file is unusable
        message = " ".join(str(e).split())[:200]
        raise RunError(f"cannot load the model {path}: {type(e).__name__}: {message}") from None


@contextlib.contextmanager
def run_lock(model_dir):
    """Holds `model_dir/.lock` (creating the folder) while a training writes the run.

    A second training of the same folder, such as the same command started
    twice, gets RunError instead of interleaving its checkpoints with the
    first's or clearing them (`--overwrite`). The operating system lets go of
    the lock when the process ends, even when it is killed, so no stale lock
    outlives a run. Where the file system or platform has no locks
    (`flock`), nothing is held.
    """
    Path(model_dir).mkdir(parents=True, exist_ok=True)
    with open(Path(model_dir) / ".lock", "a+") as f:
        try:
            if fcntl is not None:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            raise RunError(
                f"{model_dir} is being written by another training (process {holder}); "
                "wait for it to end or choose another --model_dir"
            ) from None
        except OSError:  # a file system without locks
            pass
        f.truncate(0)
        f.write(f"{os.getpid()}\n")
        f.flush()
        yield


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written (disk full, ...); one-line message."""


def remove_stale_temporaries(model_dir):
    """Deletes the temporary files a killed run may have left behind."""
    for folder in (Path(model_dir), Path(model_dir) / "checkpoints"):
        if folder.is_dir():
            for path in folder.glob(".*.tmp-*"):
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)


def initial_state():
    return {
        "epoch": 0,
        "best_epoch": 0,
        "best_value": None,
        "train_seconds": 0.0,
        "train_images": 0,
        "checkpoint": None,
    }


def last_checkpoint(model_dir, state):
    """Path of the checkpoint the state names, or None for a fresh run."""
    if not state.get("checkpoint"):
        return None
    return Path(model_dir) / "checkpoints" / state["checkpoint"]


class RunCheckpoint(keras.callbacks.Callback):
    """Saves the last and the best model and the run state after every epoch.

    Adds `epoch_seconds` and `images_per_second` to the epoch logs, so put it
    before the callbacks that print or log them.

    Args:
        model_dir: the run directory.
        state: the dict of `initial_state()` or of a resumed `state.json`;
            updated in place.
        batch_size: images per training step.
        monitor: epoch-log key that selects the best model (the lowest value).
    """

    def __init__(self, model_dir, state, batch_size, monitor="val_error"):
        super().__init__()
        self.model_dir = Path(model_dir)
        self.state = state
        self.batch_size = int(batch_size)
        self.monitor = monitor
        self._start = None
        self._end = None
        self._steps = 0

    @property
    def best_path(self):
        return self.model_dir / "best.keras"

    def on_epoch_begin(self, epoch, logs=None):
        self._start = self._end = time.perf_counter()
        self._steps = 0

    def on_train_batch_end(self, batch, logs=None):
        # Training time excludes the validation pass that follows the last batch.
        self._steps += 1
        self._end = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        seconds = self._end - self._start
        images = self._steps * self.batch_size
        logs["epoch_seconds"] = seconds
        logs["images_per_second"] = images / seconds if seconds > 0 else 0.0
        previous = dict(self.state)
        self.state["train_seconds"] += seconds
        self.state["train_images"] += images
        self.state["epoch"] = epoch + 1
        value = logs.get(self.monitor)
        # A run resumed with another criterion (an older clustering run chose by ACC) starts its best anew.
        best = self.state["best_value"] if self.state.get("monitor", self.monitor) == self.monitor else None
        checkpoints = self.model_dir / "checkpoints"
        name = f"epoch-{epoch + 1:04d}.keras"
        try:
            checkpoints.mkdir(parents=True, exist_ok=True)
            if value is not None and (best is None or value < best):
                self.state["best_value"] = float(value)
                self.state["monitor"] = self.monitor
                self.state["best_epoch"] = epoch + 1
                atomic_save_model(self.model, self.best_path)
            atomic_save_model(self.model, checkpoints / name)
            self.state["checkpoint"] = name
            atomic_write_json(self.model_dir / "state.json", self.state)
        except OSError as e:
            self.state.clear()
            self.state.update(previous)
            raise CheckpointWriteError(
                f"could not write the checkpoint of epoch {epoch + 1} in {self.model_dir} "
                f"({e.strerror or e}); the checkpoint of epoch {epoch} is kept, rerun to resume from it"
            ) from None
        for old in checkpoints.glob("epoch-*.keras"):
            if old.name != name:
                old.unlink()
