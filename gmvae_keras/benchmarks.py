"""Settings of the speed benchmarks (`tools/benchmark.py`, `tools/ab_benchmark.py`,
`tools/torch_port.py`).

`SETTINGS[name]` holds, for the paper's MNIST and SVHN settings
(`flags/<name>.cfg`): the image shape, the batch layout (`batch_size` images,
half unlabeled and half labeled), the network sizes and loss weights of the
model, and the real data set's sizes (`num_train`, `num_test`,
`num_labeled`), with which the input-pipeline benchmark draws random data of
the same size. Kept in the package so that every tool reads the same values;
plain data, so importing it does not load TensorFlow.
"""

import json
import pathlib
import platform

SETTINGS = {
    "mnist": dict(
        image_shape=(28, 28, 1),
        num_classes=10,
        batch_size=200,  # 100 unlabeled + 100 labeled
        feature_size=100,
        latent_size=100,
        k=5,
        margin=2.0,
        gaussian_weight=1.0,
        categorical_weight=1.0,
        assignment_weight=1.0,
        metric_weight=1.0,
        temperature=1.0,
        num_train=60000,
        num_test=10000,
        num_labeled=100,
    ),
    "svhn": dict(
        image_shape=(32, 32, 3),
        num_classes=10,
        batch_size=400,  # 200 unlabeled + 200 labeled
        feature_size=100,
        latent_size=150,
        k=3,
        margin=0.5,
        gaussian_weight=1.0,
        categorical_weight=1.0,
        assignment_weight=5.0,
        metric_weight=3.0,
        temperature=1.0,
        num_train=73257,
        num_test=26032,
        num_labeled=1000,
    ),
}


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
