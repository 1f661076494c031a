"""`ModelSettings`: the model's own settings, defined and checked in one place.

`GMVAE` takes them as constructor arguments and returns them from
`get_config`; `config.Config` extends them with the run's settings (data,
schedule, run directory), so every one of them is also a command-line flag.
"""

import dataclasses


class ConfigError(ValueError):
    """An impossible configuration; the message is one line for the user."""


def field(default, help, choices=None):
    """A dataclass field with the help text (and choices) of its command-line flag."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices})


def check_choice(name, value, choices):
    if value not in choices:
        raise ConfigError(f"--{name} must be one of {list(choices)}, got {value!r}")


# Options that were removed: those that measured as not helping
# (docs/RESULTS.md, "Tried and not adopted") and those of the authors'
# released code that no recipe used. The value that meant "off", and the last
# release that has the option (None: it came and went between releases). A
# saved model or run directory that holds one at "off" still loads. Saved
# models hold the model's arguments (`warmup_steps`, `hard_gumbel`), run
# directories the flags.
REMOVED_OPTIONS = {
    "assignment_confidence": (0.0, "0.1.0"),
    "ema_momentum": (0.0, "0.1.0"),
    "auxiliary_warmup_epochs": (0.0, None),
    "warmup_steps": (0, None),
    "augment_shift": (0, None),
    "augment_flip": (False, None),
    "hard_gumbel": (False, None),
    "assignment_weighting": ("distance", None),
    "lr_decay_epochs": (30, None),
    "lr_decay_rate": (0.5, None),
}
# Values of kept options that were removed: the values, and the last release that has them.
REMOVED_VALUES = {
    "assignment_balance": (("distance",), "0.1.0"),
    "lr_schedule": (("step",), None),
}
# Removed options that acted only together with another option's value: a
# run directory that holds them without it loads whatever they were set to.
ACTED_ONLY_WITH = {
    "lr_decay_epochs": ("lr_schedule", "step"),
    "lr_decay_rate": ("lr_schedule", "step"),
}


def _removed(what, last_release):
    """How a refusal of a removed option or value ends: where it can still be loaded."""
    if last_release is None:
        return (
            f"{what} that only development versions after gmvae_keras 0.1.0 had; load it with the commit that wrote it"
        )
    return f"{what} removed after gmvae_keras {last_release}; load it with gmvae_keras {last_release}"


def drop_removed_options(values, source):
    """`values` (a dict of settings) without the removed options left at "off".

    Raises:
        ConfigError: `values` sets a removed option, or a removed value.
    """
    values = dict(values)
    for name, (off, last_release) in REMOVED_OPTIONS.items():
        if name in values:
            inert = name in ACTED_ONLY_WITH and values.get(ACTED_ONLY_WITH[name][0]) != ACTED_ONLY_WITH[name][1]
            if values[name] != off and not inert:
                raise ConfigError(f"{source} sets --{name}={values[name]!r}, " + _removed("an option", last_release))
            del values[name]
    for name, (removed, last_release) in REMOVED_VALUES.items():
        if values.get(name) in removed:
            raise ConfigError(f"{source} sets --{name}={values[name]!r}, " + _removed("a value", last_release))
    return values


@dataclasses.dataclass
class ModelSettings:
    """Sizes, loss weights and rules of the GMVAE (the paper's §3 and §5.2)."""

    # Networks.
    feature_size: int = field(100, "f_sz: length of the features x̂ = g(x).")
    latent_size: int = field(100, "z_sz: length of the Gaussian latent z.")
    reconstruction: str = field("mse", "Reconstruction loss L_R.", choices=("mse", "bce"))
    # Loss weights.
    gaussian_weight: float = field(1.0, "w_G, weight of the Gaussian KL term L_G.")
    categorical_weight: float = field(1.0, "w_C, weight of the categorical KL term L_C.")
    categorical_kl: str = field(
        "image",
        "L_C: KL(q(y|x̂) ‖ uniform) of each image (paper), or batch: of the batch's mean q(y|x̂), which asks for "
        "equally used categories without pulling each image's q(y|x̂) towards uniform (not in the paper).",
        choices=("image", "batch"),
    )
    assignment_weight: float = field(1.0, "w_A, weight of the assignment loss L_A.")
    metric_weight: float = field(1.0, "w_M, weight of the lifted structured loss L_M.")
    margin: float = field(1.0, "Margin of the lifted structured loss.")
    # The k-NN label assignment of L_A.
    k: int = field(5, "Neighbours in the k-NN label assignment.")
    assignment_balance: str = field(
        "none",
        "Rebalance the k-NN votes of each batch so every class gets about an equal share of the unlabeled "
        "images (Sinkhorn over the classes; not in the paper): none (paper) or vote.",
        choices=("none", "vote"),
    )
    feature_clusters: int = field(
        0,
        "Clustering only (not in the paper): every N epochs fit a Gaussian mixture, one diagonal component per "
        "category, to the top principal components of the training features x̂, and from then on train q(y|x̂) by "
        "L_A (--assignment_weight) towards each image's most likely component; 0 (paper) disables.",
    )
    consistency_share: float = field(
        1.0,
        "With a second view (--consistency_shift/--consistency_flip): the share of L_A's cross-entropy taken on "
        "it, the rest on the image itself; 1 takes it on the view alone.",
    )
    prediction: str = field(
        "classifier",
        "Predicted class: argmax q(y|x̂) (paper), or knn: the plain k-NN vote of L_A's assignment rule (--k, "
        "1/distance weights; no --assignment_balance) among the labeled training images' features. Also picks the "
        "best-validation model.",
        choices=("classifier", "knn"),
    )

    @classmethod
    def names(cls):
        """The settings' names, in declaration order."""
        return tuple(f.name for f in dataclasses.fields(ModelSettings))

    @classmethod
    def from_values(cls, values):
        """`ModelSettings` of `{name: value}` (the others at their defaults), each value cast to its field's type."""
        fields = {f.name: f for f in dataclasses.fields(ModelSettings)}
        return cls(**{name: type(fields[name].default)(value) for name, value in values.items()})

    @classmethod
    def choices(cls, name):
        """The values field `name` may take (None: any of its type)."""
        return cls.__dataclass_fields__[name].metadata["choices"]

    def __post_init__(self):
        # Checked once, where it is made (`dataclasses.replace` makes a new one).
        self.validate()

    def validate(self):
        """Raise ConfigError for an impossible value of a model setting."""
        for name in ("gaussian_weight", "categorical_weight", "assignment_weight", "metric_weight", "margin"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"--{name} must be >= 0, got {getattr(self, name)}")
        if self.feature_clusters < 0:
            raise ConfigError(f"--feature_clusters must be >= 0, got {self.feature_clusters}")
        for name in ("feature_size", "latent_size", "k"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name} must be >= 1, got {getattr(self, name)}")
        for f in dataclasses.fields(ModelSettings):
            if f.metadata["choices"]:
                check_choice(f.name, getattr(self, f.name), f.metadata["choices"])
        if not 0.0 < self.consistency_share <= 1.0:
            raise ConfigError(f"--consistency_share must be in (0, 1], got {self.consistency_share}")

    def model_settings(self):
        """The `ModelSettings` part of this object (of a `Config`, say)."""
        return ModelSettings(**{f.name: getattr(self, f.name) for f in dataclasses.fields(ModelSettings)})
