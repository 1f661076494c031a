"""The run configuration: one dataclass holding every setting of a run.

`Config` extends the model's settings (`settings.ModelSettings`) with the
run's. `gmvae_keras.flagfiles` turns each field into an absl flag (its help
text is the field's `help` metadata) and builds a `Config` from the parsed
flags (and defines `--settings` and `--model_dir` itself); tests and library users build a `Config`
directly.
"""

import dataclasses
import json
from pathlib import Path

from gmvae_keras import batches
from gmvae_keras.settings import ConfigError, ModelSettings, check_choice, drop_removed_options
from gmvae_keras.settings import field as _field

__all__ = ["Config", "ConfigError", "RunError", "read_config", "read_json"]


@dataclasses.dataclass
class Config(ModelSettings):
    """Every setting of a run: the model's (`ModelSettings`) and the data, schedule and run directory's."""

    mode: str = _field(
        "semi_supervised",
        "semi_supervised, or clustering (no labels; keeps the epoch of the lowest validation loss and reports ACC "
        "and NMI; loads the flagfile <dataset>_clustering.cfg where there is one, for mnist and fashion_mnist; "
        "another dataset needs --num_labeled=0 --assignment_weight=0 --metric_weight=0).",
        choices=["semi_supervised", "clustering"],
    )
    # Data.
    dataset: str = _field(
        "mnist",
        "mnist, fashion_mnist, svhn, a tensorflow-datasets image classification name, or folder: your own images "
        "in --data_dir (labeled/<class>/, unlabeled/, val/<class>/, test/<class>/; docs/USAGE.md).",
    )
    data_dir: str | None = _field(
        None,
        "Folder with the dataset's original files (IDX .gz or SVHN .mat) instead of tensorflow-datasets; with "
        "--dataset=folder, the folder of images.",
    )
    num_labeled: int = _field(
        100,
        "Labeled training images, drawn class-balanced and fixed for the run; 0 for clustering. A folder's "
        "labeled/ decides it.",
    )
    add_labeled: str | None = _field(
        None,
        "A built-in data set: a CSV whose `index` column names rows of the official train set "
        "(gmvae_keras.suggest's output) whose true labels join the seed's labeled draw, as if you had labeled "
        "them. A folder: move the files into labeled/<class>/ instead.",
    )
    image_size: int = _field(
        0, "--dataset=folder: the square size the networks see, 28, 32 or 64; 0 infers it from the labeled images."
    )
    channels: int = _field(
        0, "--dataset=folder: 1 (grey) or 3 (RGB); 0 infers it (1 when no labeled image has colour).", choices=[0, 1, 3]
    )
    skip_bad_images: bool = _field(
        False, "--dataset=folder: leave out (and count) files that cannot be decoded instead of refusing the folder."
    )
    num_classes: int = _field(0, "--dataset=folder --mode=clustering without labeled/: the number of clusters.")
    validation_fraction: float = _field(0.2, "Share of the official train set held out, stratified, for validation.")
    seed: int = _field(
        0, "Seed of the split, the labeled set, the shuffling, the perturbations, the sampling noise and the weights."
    )
    # Batches and schedule.
    batch_size: int = _field(200, "Training batch: unlabeled images followed by labeled images.")
    labeled_per_batch: int = _field(0, "Labeled images in each batch; 0 means batch_size/2 (none when num_labeled=0).")
    epochs: int = _field(200, "Passes over the unlabeled training split.")
    steps_per_epoch: int = _field(0, "Batches per epoch; 0 means one full pass over the unlabeled stream.")
    eval_batch_size: int = _field(1000, "Batch size of validation and test evaluation.")
    learning_rate: float = _field(1e-3, "Adam learning rate.")
    lr_schedule: str = _field(
        "constant",
        "Learning-rate schedule: constant (paper), or cosine decay to 0 over the run.",
        choices=["constant", "cosine"],
    )
    consistency_shift: int = _field(
        0,
        "Take L_A's cross-entropy on a second view of each training image, translated randomly by up to N pixels, "
        "while its label is still assigned on the image itself (consistency; not in the paper). 0 (paper) disables.",
    )
    consistency_flip: bool = _field(
        False, "Mirror that second view left-right with probability 1/2 (not in the paper); for clothes, not digits."
    )
    # Gumbel-Softmax.
    temperature_start: float = _field(1.0, "Gumbel-Softmax temperature of the first epoch.")
    temperature_end: float = _field(0.5, "Gumbel-Softmax temperature after the annealing.")
    temperature_epochs: int = _field(50, "Epochs over which the temperature is annealed linearly.")
    # Run.
    image_summary_every: int = _field(
        5, "Write reconstruction and generation image grids to TensorBoard every N epochs; 0 disables."
    )
    jit_compile: bool = _field(False, "Compile the train step with XLA.")
    precision: str = _field(
        "float32",
        "Keras dtype policy of the run: float32 (paper), or mixed_bfloat16 / mixed_float16: the layers compute in "
        "16 bits while the weights, the sampling, the densities, the distances, the k-NN vote and the losses stay "
        "float32 (mixed_float16 adds loss scaling). Fixed for the run: resuming with another is refused.",
        choices=["float32", "mixed_bfloat16", "mixed_float16"],
    )
    strategy: str = _field(
        "default",
        "tf.distribute strategy: default (one device), mirrored (the local devices), multi_worker (the machines of "
        "TF_CONFIG).",
        choices=["default", "mirrored", "multi_worker"],
    )
    deterministic: bool = _field(
        False, "Deterministic TensorFlow ops and summation orders (same seed, same losses); slower."
    )
    init_from: str | None = _field(
        None,
        "A run's folder: start from the weights of its kept model (RUN/best.keras; of a run still training, the "
        "best so far): encoder, q(y|x̂), "
        "q(z|x̂,y), p(z|y) and decoder. Started afresh from this run's flags: the optimizer, the learning-rate "
        "schedule, the Gumbel-Softmax temperature and the epochs. Needs the same image shape, classes and network "
        "sizes.",
    )
    overwrite: bool = _field(False, "Start afresh in a model_dir that holds a run made with other flags.")
    verbose: int = _field(
        1, "Keras progress output: 0 silent, 1 progress bar, 2 one line per epoch.", choices=[0, 1, 2]
    )

    # Fields that may differ when a run is resumed with the same model_dir.
    RESUMABLE_CHANGES = (
        "epochs",
        "verbose",
        "overwrite",
        "data_dir",
        "eval_batch_size",
        "image_summary_every",
        "deterministic",
        "jit_compile",
        "strategy",
    )

    def validate(self):
        """Raise ConfigError for impossible values; run when a `Config` is made."""
        ModelSettings.validate(self)
        for name in ("batch_size", "epochs", "eval_batch_size", "temperature_epochs"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name} must be >= 1, got {getattr(self, name)}")
        for name in ("learning_rate", "temperature_start", "temperature_end"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"--{name} must be > 0, got {getattr(self, name)}")
        for name in ("num_labeled", "labeled_per_batch", "steps_per_epoch", "image_summary_every", "seed"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"--{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 < self.validation_fraction < 1.0:
            raise ConfigError(f"--validation_fraction must be in (0, 1), got {self.validation_fraction}")
        for name in ("mode", "verbose", "lr_schedule", "strategy", "precision"):
            check_choice(name, getattr(self, name), Config.choices(name))
        self._validate_folder()
        self._validate_labels()
        self._validate_consistency()

    def _validate_labels(self):
        """The mode against the labels, L_A and L_M it uses, and the batch's labeled part."""
        if self.feature_clusters and self.mode != "clustering":
            raise ConfigError("--feature_clusters is for --mode=clustering (a semi-supervised L_A uses the k-NN vote)")
        if self.feature_clusters and not self.assignment_weight:
            raise ConfigError(
                "--feature_clusters trains q(y|x̂) through L_A, which --assignment_weight=0 leaves out: set "
                "--assignment_weight > 0"
            )
        if self.mode == "clustering":
            # All at once: a dataset without a clustering flagfile starts from the semi-supervised defaults.
            # L_A stays only with --feature_clusters, where the features' mixture assigns its labels.
            zeros = (
                ("num_labeled", "metric_weight")
                if self.feature_clusters
                else ("num_labeled", "assignment_weight", "metric_weight")
            )
            labeled = [f"--{name}={getattr(self, name)}" for name in zeros if getattr(self, name)]
            if labeled:
                raise ConfigError(
                    "--mode=clustering uses no labeled data (no labeled set, L_A or L_M): set "
                    f"{' '.join(f'--{name}=0' for name in zeros)}; got {', '.join(labeled)}"
                )
        if self.add_labeled is not None and (self.dataset == "folder" or self.mode == "clustering"):
            raise ConfigError(
                "--add_labeled adds labels of a built-in data set's train split to a semi-supervised run; a folder's "
                "labeled/ holds its labels"
            )
        if self.mode == "semi_supervised" and not self.num_labeled:
            raise ConfigError("--num_labeled=0 leaves nothing to supervise; use --mode=clustering")
        if self.prediction == "knn" and self.mode == "clustering":
            raise ConfigError("--prediction=knn votes among labeled images; --mode=clustering has none")
        if self.prediction == "knn" and self.k > self.num_labeled:
            raise ConfigError(f"--prediction=knn: --k={self.k} is larger than --num_labeled={self.num_labeled}")
        batches.batch_layout(self.batch_size, None, self.labeled_per_batch, self.num_labeled, self.k)

    def _validate_consistency(self):
        """The second view of L_A (`--consistency_*`) against L_A itself."""
        if self.consistency_shift < 0:
            raise ConfigError(f"--consistency_shift must be >= 0, got {self.consistency_shift}")
        if self.feature_clusters and (self.consistency_shift or self.consistency_flip):
            raise ConfigError("--feature_clusters takes L_A on the images themselves: drop --consistency_shift/_flip")
        if (self.consistency_shift or self.consistency_flip) and not self.assignment_weight:
            raise ConfigError(
                "--consistency_shift/--consistency_flip change L_A, which --assignment_weight=0 leaves out"
            )
        if self.consistency_share < 1.0 and not (self.consistency_shift or self.consistency_flip):
            raise ConfigError(
                "--consistency_share splits L_A between the image and its second view; set --consistency_shift or "
                "--consistency_flip"
            )

    def _validate_folder(self):
        from gmvae_keras.networks import IMAGE_SIZES

        if self.dataset != "folder":
            given = [f"--{name}" for name, off in FOLDER_ONLY.items() if getattr(self, name) != off]
            if given:
                raise ConfigError(f"{', '.join(given)}: for --dataset=folder only")
            return
        if self.data_dir is None:
            raise ConfigError("--dataset=folder reads the folder given by --data_dir")
        if self.image_size and self.image_size not in IMAGE_SIZES:
            raise ConfigError(
                f"--image_size={self.image_size} is not supported; the networks take "
                f"{', '.join(map(str, IMAGE_SIZES))} (or 0: inferred)"
            )
        check_choice("channels", self.channels, Config.choices("channels"))
        if self.num_classes < 0 or (self.num_classes and self.mode != "clustering"):
            raise ConfigError(
                f"--num_classes={self.num_classes}: for --mode=clustering of unlabeled/ alone (labeled/ names "
                "the classes)"
            )

    def train_pipeline_options(self):
        """The image perturbations of `data.make_train_dataset`, as its keyword arguments."""
        return {name: getattr(self, name) for name in ("consistency_shift", "consistency_flip")}

    def to_dict(self):
        return dataclasses.asdict(self)

    def to_json(self):
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values, source="the configuration"):
        """The `Config` of `values` (a run's `config.json`, say); options removed since are dropped at
        their "off" value and refused otherwise (ConfigError)."""
        return cls._of_current_options(drop_removed_options(values, source))

    @classmethod
    def _of_current_options(cls, values):
        """The `Config` of `values` that hold only current options (ConfigError for an unknown key)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError(f"unknown configuration keys: {', '.join(unknown)}")
        return cls(**values)

    def describe_differences(self, previous):
        """`--name=<previous> there, <self> now` for each of `differences(previous)`."""
        return [
            f"--{name}={getattr(previous, name)!r} there, {getattr(self, name)!r} now"
            for name in self.differences(previous)
        ]

    def differences(self, other):
        """Names of the fields, other than the resumable ones, that differ."""
        return [
            f.name
            for f in dataclasses.fields(self)
            if f.name not in self.RESUMABLE_CHANGES and getattr(self, f.name) != getattr(other, f.name)
        ]


# The settings of `--dataset=folder` alone, at their off values.
FOLDER_ONLY = {"image_size": 0, "channels": 0, "skip_bad_images": False, "num_classes": 0}


class RunError(ValueError):
    """A run directory that cannot be used; the message is one line."""


def read_config(model_dir):
    """The `Config` of a run directory's config.json; None when it has none.

    Raises:
        ConfigError: config.json sets an option removed since (said in the option's own words).
        RunError: config.json is unreadable, not a JSON object (`read_json`) or not a configuration of this
            version (an unknown key, say).
    """
    path = Path(model_dir) / "config.json"
    values = read_json(path)
    if values is None:
        return None
    # Outside the `try`: a removed option is refused in its own words.
    values = drop_removed_options(values, str(path))
    try:
        return Config._of_current_options(values)
    except (ConfigError, TypeError) as e:
        raise RunError(f"{path} is not a gmvae_keras configuration ({e})") from None


def read_json(path, default=None):
    """The JSON object (a dict) in `path`; `default` when there is no such file.

    Every file of a run directory holds one object, so any other JSON value is refused here rather than
    failing later as a TypeError at its first lookup.

    Raises:
        RunError: `path` is a folder, unreadable, not JSON or not a JSON object (a hand-edited file, say).
    """
    path = Path(path)
    if not path.exists():
        return default
    try:
        with open(path) as f:
            value = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RunError(f"cannot read {path}: {e}") from None
    if not isinstance(value, dict):
        raise RunError(f"{path} is not a JSON object")
    return value
