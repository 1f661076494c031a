"""Settings of the speed benchmarks (`tools/benchmark.py`, `tools/ab_benchmark.py`,
`tools/torch_port.py`).

`SETTINGS[name]` holds, for the paper's MNIST and SVHN settings: the batch
layout (`batch_size` images, half unlabeled and half labeled), the network
sizes and loss weights of the model and `num_labeled`, read from
`flags/<name>.cfg`; and the image shape and the real data set's sizes
(`num_train`, `num_test`), with which the input-pipeline benchmark draws
random data of the same size. Kept in the package so that every tool reads
the same values; importing it does not load TensorFlow.
"""

import json
import pathlib
import platform

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


SETTINGS = {name: _setting(name) for name in _DATA_SETS}


def print_report(result, out=None):
    """Prints a tool's JSON result, and writes it to the file `out` too when given."""
    text = json.dumps(result, indent=2)
    print(text)
    if out:
        pathlib.Path(out).parent.mkdir(parents=True, exist_ok=True)
        pathlib.Path(out).write_text(text + "\n")


def cpu_info():
    """`(model name, {flag: present})` of this host's CPU, for the speed figures a run or a tool records.

    The flags say which figures the host can show: AVX-512 and AMX (bfloat16) change the speed a lot.
    """
    model, flags = None, set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model is None:
                    model = value.strip()
                elif key == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    model = model or platform.processor() or None
    return model, {name: name in flags for name in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16")}


def bfloat16_hardware(cpu_flags):
    """Whether the CPU computes bfloat16 in hardware (AMX or AVX-512 bfloat16 instructions of `cpu_info()[1]`)."""
    return bool(cpu_flags.get("amx_bf16") or cpu_flags.get("avx512_bf16"))
