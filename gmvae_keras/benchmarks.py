"""Settings of the speed benchmarks (`tools/benchmark.py`, `tools/ab_benchmark.py`,
`tools/torch_port.py`).

`SETTINGS[name]` holds, for the paper's MNIST and SVHN settings: the batch
layout (`batch_size` images, half unlabeled and half labeled), the network
sizes and loss weights of the model and `num_labeled`, read from
`flags/<name>.cfg`; and the image shape and the real data set's sizes
(`num_train`, `num_test`), with which the input-pipeline benchmark draws
random data of the same size. Kept in the package so that every tool reads
the same values; importing it loads neither TensorFlow nor a flagfile.
"""

import json
import pathlib

from gmvae_keras import flagfiles

# What the flagfiles do not say: the data sets themselves.
_DATA_SETS = {
    "mnist": dict(image_shape=(28, 28, 1), num_classes=10, num_train=60000, num_test=10000),
    "svhn": dict(image_shape=(32, 32, 3), num_classes=10, num_train=73257, num_test=26032),
}
_FROM_FLAGFILE = (
    "batch_size",
    "feature_size",
    "latent_size",
    "k",
    "margin",
    "gaussian_weight",
    "categorical_weight",
    "assignment_weight",
    "metric_weight",
)


def _setting(name):
    config = flagfiles.config_from_args([f"--dataset={name}"])
    data = _DATA_SETS[name]
    return dict(
        image_shape=data["image_shape"],
        num_classes=data["num_classes"],
        **{key: getattr(config, key) for key in _FROM_FLAGFILE},
        temperature=config.temperature_start,
        num_train=data["num_train"],
        num_test=data["num_test"],
        num_labeled=config.num_labeled,
    )


def __getattr__(name):
    # SETTINGS is read from the flagfiles on first use, so that importing this module parses none.
    if name == "SETTINGS":
        globals()["SETTINGS"] = {data_set: _setting(data_set) for data_set in _DATA_SETS}
        return globals()["SETTINGS"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def print_report(result, out=None):
    """Prints a tool's JSON result, and writes it to the file `out` too when given."""
    text = json.dumps(result, indent=2)
    print(text)
    if out:
        pathlib.Path(out).parent.mkdir(parents=True, exist_ok=True)
        pathlib.Path(out).write_text(text + "\n")
