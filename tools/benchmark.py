"""Throughput of gmvae_keras on this machine: training, input pipeline, serving, FLOPs.

    python tools/benchmark.py [--out FILE] [--quick] [--settings mnist svhn] [--no-torch] [--jit_compile]
                              [--precision float32|mixed_bfloat16|mixed_float16]

Prints one JSON object (and writes it to --out) with, for each setting
(`gmvae_keras.benchmarks.SETTINGS`: the paper's MNIST and SVHN batch layouts
and network sizes):

* `train_images_per_second`: steady-state images/s of `GMVAE.train_step` with
  all five losses on a synthetic batch (`tf.data.Dataset.from_tensors(batch)
  .repeat()`), Adam 1e-3. A warm-up `model.fit` traces (and with
  `--jit_compile` XLA-compiles) the step; then `model.train_function` — the
  compiled function `fit` calls each step — is timed on the same iterator,
  median of `--repeats` repeats.
* `pipeline_images_per_second`: `data.make_train_dataset` alone, on a
  `SplitData` of random uint8 images of the real data set's size.
* `inference_images_per_second`: the `serving_default` signature of
  `export.export_saved_model`, reloaded with `tf.saved_model.load`, on
  float32 batches of 1000; `inference_knn_images_per_second` the same for a
  `--prediction=knn` model holding `num_labeled` labeled images.
* `flops_per_train_image` (see `FLOPS_CONVENTION`), `achieved_gflops` and
  `matmul_peak_gflops` (a 2048x2048 fp32 matmul, best of a few, same process).
* `peak_rss_mb` of the process that measured the setting.
* `torch_train_images_per_second`: the same train step in plain eager
  PyTorch (`tools/torch_port.py`), and `speedup_vs_torch`. Null, with a note,
  when torch is not installed or `--no-torch` is given.

`--precision` is the dtype policy of the models (`--precision` of
`gmvae_keras.main`; float32 by default). With `mixed_bfloat16` the PyTorch
port runs under `torch.autocast("cpu", dtype=torch.bfloat16)`, with the same
parts kept float32; with `mixed_float16` its fields are null (torch's float16
autocast on a CPU is no comparable baseline). The JSON records `precision` and
`bfloat16_hardware` (the CPU has AMX or AVX-512 bfloat16 instructions); without
them bfloat16 is emulated (slowly, unless `--jit_compile` has XLA do it)
and a note says the figures are not comparable. `matmul_peak_gflops` stays a float32 figure.

Each setting is measured in its own subprocess (so peak RSS and thread pools
are per setting), the PyTorch port in another one. Numbers taken while other
work loads the CPU are not meaningful: the JSON records how many cores other
work kept busy just before the run (from /proc/stat, over a second) and the
load average.
`--quick` takes very few steps, as a smoke test of the tool.

`--decoding` measures the reading of a folder of image files instead
(`data.from_folder`, no cache): `DECODING_SETS` are written into a temporary
folder (60,000 28×28 grey PNGs; 5,000 colour JPEGs from 64×64 to 500×400,
read at 64×64×3), and each is read in a subprocess. The JSON gives, per set,
`images_per_second`, the `decoded_mb` of the arrays and the
`peak_memory_mb` the reading added to the process (peak RSS after minus RSS
before), and their ratio `memory_over_decoded`.
"""

import argparse
import importlib.util
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gmvae_keras.benchmarks import SETTINGS
from gmvae_keras.host import bfloat16_hardware, cpu_info

TOOLS = Path(__file__).resolve().parent
REPO = TOOLS.parent

FLOPS_CONVENTION = (
    "FLOPs = 2 x multiply-accumulates (MACs) of the Conv2D, Conv2DTranspose and Dense layers only "
    "(Conv2D: H_out*W_out*k_h*k_w*C_in*C_out; Conv2DTranspose: H_in*W_in*k_h*k_w*C_in*C_out; "
    "Dense: in*out); biases, BatchNorm, activations, sampling, the pairwise-distance matrix, "
    "the losses and the optimizer update are not counted. A training image costs 3 x its forward "
    "FLOPs (forward, backward to the activations, backward to the weights); an inference image "
    "costs the forward FLOPs of the encoder and q(y|x). achieved_gflops = flops_per_train_image "
    "x train_images_per_second / 1e9; matmul_peak_gflops = 2*n^3 / best time of one n x n "
    "float32 tf.linalg.matmul."
)

TIMING_METHOD = (
    "train: after a warm-up model.fit(steps_per_epoch=warmup), model.train_function(iterator) "
    "(the compiled step fit calls) is called directly on a from_tensors(batch).repeat() "
    "iterator; unless --steps is given, one more untimed call sets the calls per repeat "
    "(about --repeat_seconds each); images/s per repeat = calls x steps_per_execution x "
    "batch_size / wall time; the median of the repeats is reported. torch: the same protocol "
    "in tools/torch_port.py (the last warm-up step sets the steps per repeat)."
)

RESULT_MARK = "BENCHMARK_RESULT "

# name -> (files, format, (smallest, largest) (width, height), image_size, channels) of `--decoding`.
DECODING_SETS = {
    "png_28": (60000, "png", ((28, 28), (28, 28)), 28, 1),
    "jpeg_mixed": (5000, "jpeg", ((64, 64), (500, 400)), 64, 3),
}

# `--precision` of gmvae_keras.main, spelled here so that parsing the arguments imports no gmvae_keras module.
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="also write the JSON here")
    parser.add_argument("--quick", action="store_true", help="very few steps: a smoke test of the tool")
    parser.add_argument("--settings", nargs="+", choices=sorted(SETTINGS), default=["mnist", "svhn"])
    parser.add_argument("--no-torch", dest="no_torch", action="store_true", help="skip the PyTorch port")
    parser.add_argument("--jit_compile", action="store_true", help="compile the train step with XLA")
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="float32",
        help="dtype policy of the models (float32, the paper's; or mixed precision)",
    )
    parser.add_argument("--steps_per_execution", type=int, default=1, help="Keras steps_per_execution")
    parser.add_argument(
        "--warmup", type=int, default=1, help="warm-up train steps before timing (the first one traces the step)"
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="train calls per timed repeat (default: about --repeat_seconds; quick 1)",
    )
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats (default 3, quick 2)")
    parser.add_argument("--repeat_seconds", type=float, default=8.0, help="target length of a timed repeat")
    parser.add_argument(
        "--pipeline_batches", type=int, default=None, help="timed pipeline batches (default 60, quick 5)"
    )
    parser.add_argument(
        "--inference_batches",
        type=int,
        default=None,
        help="timed serving calls of 1000 images per repeat (default 5, quick 1)",
    )
    parser.add_argument("--matmul_size", type=int, default=2048)
    parser.add_argument("--intra_op_threads", type=int, default=0, help="TensorFlow intra-op threads (0: its default)")
    parser.add_argument("--inter_op_threads", type=int, default=0, help="TensorFlow inter-op threads (0: its default)")
    parser.add_argument("--torch_threads", type=int, default=2)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--decoding", action="store_true", help="measure the reading of image folders instead")
    parser.add_argument("--decoding_worker", nargs=3, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    quick = args.quick
    for name, full, small in (
        ("repeats", 3, 2),
        ("pipeline_batches", 60, 5),
        ("inference_batches", 5, 1),
    ):
        if getattr(args, name) is None:
            setattr(args, name, small if quick else full)
    if quick and args.steps is None:
        args.steps = 1
    for name in ("warmup", "repeats", "pipeline_batches", "inference_batches", "steps_per_execution", "matmul_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")
    if args.steps is not None and args.steps < 1:
        parser.error("--steps must be >= 1")
    return args


def steps_for(step_seconds, repeat_seconds, max_steps=50):
    """Calls per timed repeat so that one repeat lasts about `repeat_seconds`."""
    return max(1, min(max_steps, math.ceil(repeat_seconds / max(step_seconds, 1e-9))))


def _log(message):
    print(f"[benchmark] {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------- worker


def count_macs(model):
    """Multiply-accumulates per image of each part of a built gmvae_keras.GMVAE."""
    import keras  # noqa: PLC0415

    def prod(values):
        return math.prod(int(v) for v in values)

    encoder, shape = 0, (1,) + tuple(model.image_shape)
    for layer in model.encoder.blocks:
        out = layer.compute_output_shape(shape)
        if isinstance(layer, keras.layers.Conv2D):
            encoder += prod(out[1:3]) * prod(layer.kernel.shape)
        shape = out
    decoder, shape = 0, (1, 1, 1, model.latent_size)
    for layer in model.decoder.blocks + [model.decoder.output_conv]:
        out = layer.compute_output_shape(shape)
        if isinstance(layer, keras.layers.Conv2DTranspose):
            decoder += prod(shape[1:3]) * prod(layer.kernel.shape)
        shape = out
    dense = lambda *layers: sum(prod(layer.kernel.shape) for layer in layers)  # noqa: E731
    categorical = dense(model.categorical_inference.hidden, model.categorical_inference.logits)
    gaussian = dense(model.gaussian_inference.hidden, model.gaussian_inference.mean, model.gaussian_inference.variance)
    prior = dense(model.gaussian_prior.mean, model.gaussian_prior.variance)
    return {
        "encoder": encoder,
        "categorical_inference": categorical,
        "gaussian_inference": gaussian,
        "gaussian_prior": prior,
        "decoder": decoder,
    }


def matmul_peak_gflops(tf, n, repeats):
    a = tf.random.uniform((n, n), dtype=tf.float32)
    b = tf.random.uniform((n, n), dtype=tf.float32)
    tf.linalg.matmul(a, b).numpy()
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        c = tf.linalg.matmul(a, b)
        c[0, 0].numpy()
        best = min(best, time.perf_counter() - start)
    return 2.0 * n**3 / best / 1e9


def synthetic_batch(setting, seed=0):
    import numpy as np  # noqa: PLC0415

    rng = np.random.default_rng(seed)
    batch, c = setting["batch_size"], setting["num_classes"]
    n_l = batch // 2
    return {
        "images": rng.random((batch,) + tuple(setting["image_shape"]), dtype=np.float32),
        "labels": (np.arange(n_l) % c).astype(np.int32),
        "unlabeled_labels": rng.integers(0, c, batch - n_l).astype(np.int32),
    }


def build_model(setting, jit_compile=False, steps_per_execution=1, prediction="classifier", precision="float32"):
    """The compiled `GMVAE` of a `gmvae_keras.benchmarks.SETTINGS` entry (seeded), Adam 1e-3.

    With `prediction="knn"` it stores `num_labeled` random labeled images to vote among.
    `precision` is its dtype policy, as `train.build_model` sets it (a loss-scaled
    Adam under mixed_float16).
    """
    import keras  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    from gmvae_keras.model import GMVAE  # noqa: PLC0415

    keras.utils.set_random_seed(0)
    model = GMVAE(
        image_shape=setting["image_shape"],
        num_classes=setting["num_classes"],
        feature_size=setting["feature_size"],
        latent_size=setting["latent_size"],
        gaussian_weight=setting["gaussian_weight"],
        categorical_weight=setting["categorical_weight"],
        assignment_weight=setting["assignment_weight"],
        metric_weight=setting["metric_weight"],
        margin=setting["margin"],
        k=setting["k"],
        temperature=setting["temperature"],
        prediction=prediction,
        labeled_set_size=setting["num_labeled"] if prediction == "knn" else 0,
        seed=0,
        dtype=precision,
    )
    if prediction == "knn":
        rng = np.random.default_rng(2)
        shape = (setting["num_labeled"],) + tuple(setting["image_shape"])
        model.set_labeled_set(rng.random(shape, dtype=np.float32), np.arange(shape[0]) % setting["num_classes"])
    optimizer = keras.optimizers.Adam(1e-3)
    if precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    model.compile(optimizer=optimizer, jit_compile=jit_compile, steps_per_execution=steps_per_execution)
    return model


def measure_train(tf, model, setting, args):
    steps_per_execution = args.steps_per_execution
    ds = tf.data.Dataset.from_tensors(synthetic_batch(setting)).repeat()
    start = time.perf_counter()
    model.fit(ds, steps_per_epoch=args.warmup * steps_per_execution, epochs=1, verbose=0)
    warmup_seconds = time.perf_counter() - start
    iterator = iter(ds)
    train_function = model.train_function
    calls, extra_warmup = args.steps, 0
    if calls is None:  # one more (untimed) call sets the calls per repeat
        start = time.perf_counter()
        float(train_function(iterator)["loss"])
        calls, extra_warmup = steps_for(time.perf_counter() - start, args.repeat_seconds), 1
    images_per_call = steps_per_execution * setting["batch_size"]
    rates, cpu_seconds, wall_seconds = [], 0.0, 0.0
    for _ in range(args.repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        for _ in range(calls):
            logs = train_function(iterator)
        loss = float(logs["loss"])  # waits for the last step
        elapsed = time.perf_counter() - start
        cpu_seconds += time.process_time() - cpu_start
        wall_seconds += elapsed
        rates.append(calls * images_per_call / elapsed)
    if not math.isfinite(loss):
        raise RuntimeError(f"non-finite training loss {loss}")
    return {
        "train_images_per_second": statistics.median(rates),
        "train_repeats_images_per_second": rates,
        "train_steps_per_repeat": calls * steps_per_execution,
        "train_warmup_steps": (args.warmup + extra_warmup) * steps_per_execution,
        "train_warmup_seconds": warmup_seconds,
        # Process CPU seconds per wall second while timing: about the thread
        # count on an idle machine, less when other work takes the cores.
        "train_cpu_utilization": cpu_seconds / wall_seconds,
    }


def measure_pipeline(setting_name, setting, args):
    import numpy as np  # noqa: PLC0415

    from gmvae_keras import data as data_lib  # noqa: PLC0415

    rng = np.random.default_rng(0)
    shape, c = tuple(setting["image_shape"]), setting["num_classes"]
    start = time.perf_counter()
    train = (
        rng.integers(0, 256, (setting["num_train"],) + shape, dtype=np.uint8),
        rng.integers(0, c, setting["num_train"]),
    )
    test = (
        rng.integers(0, 256, (setting["num_test"],) + shape, dtype=np.uint8),
        rng.integers(0, c, setting["num_test"]),
    )
    split = data_lib.split_data(setting_name, train, test, c, setting["num_labeled"], seed=0)
    del train, test
    ds = data_lib.make_train_dataset(split, setting["batch_size"], seed=0)
    available = data_lib.steps_per_epoch(split, setting["batch_size"])
    iterator = iter(ds)
    warmup = min(3, available - 1)
    for _ in range(warmup):
        next(iterator)
    setup_seconds = time.perf_counter() - start
    batches = max(1, min(args.pipeline_batches, available - warmup))
    start = time.perf_counter()
    for _ in range(batches):
        element = next(iterator)
    elapsed = time.perf_counter() - start
    assert element["images"].shape[0] == setting["batch_size"]
    return {
        "pipeline_images_per_second": batches * setting["batch_size"] / elapsed,
        "pipeline_batches": batches,
        "pipeline_setup_seconds": setup_seconds,
    }


def measure_inference(tf, model, setting, args, batch_size=1000, prefix="inference"):
    import numpy as np  # noqa: PLC0415

    from gmvae_keras.export import export_saved_model  # noqa: PLC0415

    images = tf.constant(
        np.random.default_rng(1).random((batch_size,) + tuple(setting["image_shape"]), dtype=np.float32)
    )
    with tempfile.TemporaryDirectory(prefix="gmvae-benchmark-") as tmp:
        start = time.perf_counter()
        export_dir = export_saved_model(model, Path(tmp) / "export")
        serve = tf.saved_model.load(str(export_dir)).signatures["serving_default"]
        export_seconds = time.perf_counter() - start
        for _ in range(2):
            serve(images=images)["label"].numpy()
        rates = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            for _ in range(args.inference_batches):
                out = serve(images=images)
                out["label"].numpy()
            rates.append(args.inference_batches * batch_size / (time.perf_counter() - start))
    assert out["probabilities"].shape == (batch_size, setting["num_classes"])
    return {
        f"{prefix}_images_per_second": statistics.median(rates),
        f"{prefix}_repeats_images_per_second": rates,
        f"{prefix}_batch_size": batch_size,
        f"{prefix}_export_seconds": export_seconds,
    }


def run_setting(name, args):
    """Every measurement of one setting, in this process; returns a dict."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    if args.intra_op_threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.intra_op_threads)
    if args.inter_op_threads:
        tf.config.threading.set_inter_op_parallelism_threads(args.inter_op_threads)
    # As gmvae_keras.main runs: the global policy too, for whatever the models do not build themselves.
    keras.config.set_dtype_policy(args.precision)

    setting = SETTINGS[name]
    result = {
        "batch_size": setting["batch_size"],
        "image_shape": list(setting["image_shape"]),
        "config": {k: v for k, v in setting.items() if k not in ("image_shape", "batch_size")},
    }

    _log(f"{name}: matmul peak")
    result["matmul_peak_gflops"] = matmul_peak_gflops(tf, args.matmul_size, 2 if args.quick else 5)

    model = build_model(
        setting,
        jit_compile=args.jit_compile,
        steps_per_execution=args.steps_per_execution,
        precision=args.precision,
    )
    macs = count_macs(model)
    forward = 2 * sum(macs.values())
    result["flops_per_train_image"] = 3 * forward
    result["flops_per_inference_image"] = 2 * (macs["encoder"] + macs["categorical_inference"])
    result["macs_per_image"] = macs

    _log(f"{name}: train step ({args.warmup} warm-up step(s), then {args.repeats} timed repeats)")
    result.update(measure_train(tf, model, setting, args))
    result["achieved_gflops"] = result["flops_per_train_image"] * result["train_images_per_second"] / 1e9
    result["fraction_of_matmul_peak"] = result["achieved_gflops"] / result["matmul_peak_gflops"]

    _log(f"{name}: SavedModel serving")
    result.update(measure_inference(tf, model, setting, args))
    _log(f"{name}: SavedModel serving, --prediction=knn")
    knn = build_model(setting, prediction="knn", precision=args.precision)
    result.update(measure_inference(tf, knn, setting, args, prefix="inference_knn"))
    _log(f"{name}: input pipeline")
    result.update(measure_pipeline(name, setting, args))
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

    cpu_model, cpu_flags = cpu_info()
    result["environment"] = {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "keras_backend": keras.backend.backend(),
        "cpu_model": cpu_model,
        "cpu_flags": cpu_flags,
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable_cpus(),
        "tf_intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "tf_inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
        "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "jit_compile": bool(args.jit_compile),
        "steps_per_execution": args.steps_per_execution,
        "precision": args.precision,
    }
    return result


# ----------------------------------------------------------- orchestrator


def _worker_argv(args, name):
    argv = [sys.executable, str(Path(__file__).resolve()), "--worker", name]
    if args.quick:
        argv.append("--quick")
    if args.jit_compile:
        argv.append("--jit_compile")
    for option in (
        "precision",
        "steps_per_execution",
        "warmup",
        "steps",
        "repeats",
        "repeat_seconds",
        "pipeline_batches",
        "inference_batches",
        "matmul_size",
        "intra_op_threads",
        "inter_op_threads",
    ):
        value = getattr(args, option)
        if value is not None:
            argv += [f"--{option}", str(value)]
    return argv


def _run_json(argv, what, mark=None):
    """Runs `argv`; returns `(json result, None)` or `(None, error)`."""
    env = dict(os.environ)  # the worker imports the same gmvae_keras as this process
    tail = []
    with tempfile.TemporaryFile("w+") as stdout:
        proc = subprocess.Popen(argv, stdout=stdout, stderr=subprocess.PIPE, text=True, env=env, cwd=str(REPO))
        for line in proc.stderr:  # pass the worker's progress lines on, keep the rest for errors
            if line.startswith("[benchmark]"):
                print(line, end="", file=sys.stderr, flush=True)
            elif line.strip():
                tail = (tail + [line.strip()])[-5:]
        returncode = proc.wait()
        stdout.seek(0)
        lines = [line for line in stdout.read().splitlines() if line.strip()]
    if mark:
        lines = [line[len(mark) :] for line in lines if line.startswith(mark)]
    if returncode == 0 and lines:
        try:
            return json.loads(lines[-1]), None
        except json.JSONDecodeError:
            pass
    return None, f"{what} failed with status {returncode}: {' | '.join(tail)}"


def _torch_status(args):
    if args.no_torch:
        return "skipped (--no-torch)"
    if args.precision == "mixed_float16":
        return (
            "--precision=mixed_float16: torch's float16 autocast on a CPU is no comparable baseline "
            "(mixed_float16 is meant for GPUs; on a CPU it is a smoke test of the loss scaling)"
        )
    if importlib.util.find_spec("torch") is None:
        return "torch is not installed (pip install torch==2.13.0 to compare)"
    return None


def precision_notes(precision, cpu_flags, jit_compile=False):
    """The notes the JSON carries about `--precision` on a CPU with `cpu_flags` (`cpu_info()[1]`)."""
    if precision == "mixed_bfloat16" and not bfloat16_hardware(cpu_flags):
        how = "by XLA (--jit_compile)" if jit_compile else "slowly (--jit_compile has XLA emulate it faster)"
        return [
            f"this CPU has no bfloat16 instructions (amx_bf16, avx512_bf16): bfloat16 is emulated, {how}, so the "
            "--precision=mixed_bfloat16 figures are not comparable with those of a CPU that has them"
        ]
    return []


def _cpu_times(stat="/proc/stat"):
    with open(stat) as f:
        fields = f.readline().split()
    # user nice system idle iowait irq softirq steal; guest time is already counted in user.
    return [int(v) for v in fields[1:9]]


def busy_share(first, second):
    """The share of all cores' time that was not idle between two `/proc/stat` samples."""
    delta = [b - a for a, b in zip(first, second, strict=True)]
    total = sum(delta)
    return (total - delta[3] - delta[4]) / total if total else 0.0


def usable_cpus():
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def busy_cores(seconds=1.0, stat="/proc/stat"):
    """How many cores were busy over the next `seconds`; None where /proc/stat is missing.

    The load average decays over minutes: it still counts a training that ended or was paused
    just before, so it cannot tell whether other work shares the CPU now.
    """
    try:
        first = _cpu_times(stat)
        time.sleep(seconds)
        second = _cpu_times(stat)
    except OSError:
        return None
    return busy_share(first, second) * os.cpu_count()


def _rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return None


def write_decoding_set(folder, name, quick):
    """Writes the image files of `DECODING_SETS[name]` (a labeled/ and an unlabeled/ part) into `folder`."""
    import numpy as np
    from PIL import Image

    count, image_format, ((min_w, min_h), (max_w, max_h)), _, _ = DECODING_SETS[name]
    count = min(count, 400) if quick else count
    rng = np.random.default_rng(0)
    for i in range(count):
        width, height = int(rng.integers(min_w, max_w + 1)), int(rng.integers(min_h, max_h + 1))
        if image_format == "png":
            # Mostly black with bright strokes, as handwritten digits: PNGs of MNIST's size on disk.
            pixels = np.where(rng.random((height, width)) < 0.8, 0, rng.integers(0, 256, (height, width))).astype(
                "uint8"
            )
        else:
            # Smooth colour gradients with mild noise: JPEGs of a photo's size on disk.
            y, x = np.mgrid[0:height, 0:width]
            base = np.stack([x * 255 // width, y * 255 // height, (x + y) * 255 // (width + height)], axis=-1)
            pixels = np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype("uint8")
        part = folder / ("labeled" / Path(f"c{i % 2}") if i < 20 else Path("unlabeled"))
        part.mkdir(parents=True, exist_ok=True)
        path = part / f"{i:05d}{'.png' if image_format == 'png' else '.jpg'}"
        Image.fromarray(pixels).save(path, **({"quality": 90} if image_format == "jpeg" else {}))
    return count


def measure_decoding(folder, image_size, channels):
    """`data.from_folder` of `folder` in this process: images/s and the memory it added."""
    # Imported, and TensorFlow's runtime started, before the baseline: the memory counted is the reading's.
    import tensorflow as tf

    from gmvae_keras import data as data_lib

    tf.constant(0)
    before = _rss_mb()
    start = time.perf_counter()
    data = data_lib.from_folder(folder, image_size=image_size, channels=channels, cache_dir=False)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    images = len(data.train_images) + len(data.val_images) + len(data.test_images)
    decoded = (data.train_images.nbytes + data.val_images.nbytes + data.test_images.nbytes) / 2**20
    return {
        "images": images,
        "seconds": round(seconds, 2),
        "images_per_second": round(images / seconds, 1),
        "decoded_mb": round(decoded, 1),
        "peak_memory_mb": round(peak - before, 1),
        "memory_over_decoded": round((peak - before) / decoded, 2),
    }


def run_decoding(args):
    """The `--decoding` JSON."""
    busy_before = busy_cores()
    output = {
        "tool": "tools/benchmark.py --decoding",
        "quick": args.quick,
        "cpu": cpu_info()[0],
        "cpus": usable_cpus(),
        "busy_cores_before": busy_before,
        "sets": {},
        "notes": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name, (_, image_format, _, image_size, channels) in DECODING_SETS.items():
            folder = Path(tmp) / name
            _log(f"{name}: writing the {image_format} files")
            count = write_decoding_set(folder, name, args.quick)
            _log(f"{name}: reading {count} files in a subprocess")
            argv = [sys.executable, str(Path(__file__).resolve()), "--decoding_worker", str(folder), str(image_size)]
            result, error = _run_json(argv + [str(channels)], f"{name} decoding worker", RESULT_MARK)
            output["sets"][name] = result or {"error": error}
            output["sets"][name].update({"format": image_format, "image_size": image_size, "channels": channels})
    if busy_before is not None and busy_before > 0.5:
        output["notes"].append(f"{busy_before:.2f} cores were busy before the benchmark: the rates understate the code")
    print(json.dumps(output, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(output, indent=2) + "\n")
    return 0 if all("error" not in s for s in output["sets"].values()) else 1


def main(argv=None):
    args = parse_args(argv)
    if args.decoding_worker:
        folder, image_size, channels = args.decoding_worker
        print(RESULT_MARK + json.dumps(measure_decoding(folder, int(image_size), int(channels))), flush=True)
        return 0
    if args.decoding:
        return run_decoding(args)
    if args.worker:
        result = run_setting(args.worker, args)
        print(RESULT_MARK + json.dumps(result), flush=True)
        return 0

    started = time.time()
    load_start = os.getloadavg()
    busy_before = busy_cores()
    torch_skip = _torch_status(args)
    notes, failed = [], False
    if torch_skip:
        notes.append(f"torch fields are null: {torch_skip}")
    cpu_flags = cpu_info()[1]
    notes += precision_notes(args.precision, cpu_flags, args.jit_compile)
    output = {
        "tool": "tools/benchmark.py",
        "quick": args.quick,
        "precision": args.precision,
        "bfloat16_hardware": bfloat16_hardware(cpu_flags),
        "flops_convention": FLOPS_CONVENTION,
        "timing_method": TIMING_METHOD,
        "environment": {},
        "settings": {},
        "notes": notes,
    }
    for name in args.settings:
        _log(f"{name}: measuring in a subprocess")
        result, error = _run_json(_worker_argv(args, name), f"{name} worker", RESULT_MARK)
        if result is None:
            failed = True
            notes.append(error)
            result = {"error": error}
        output["environment"] = output["environment"] or result.pop("environment", {})
        result.pop("environment", None)
        torch_result = None
        if not torch_skip:
            _log(f"{name}: PyTorch port in a subprocess")
            torch_argv = [
                sys.executable,
                str(TOOLS / "torch_port.py"),
                "--bench",
                json.dumps(SETTINGS[name]),
                "--warmup",
                str(args.warmup),
                "--repeats",
                str(args.repeats),
                "--repeat_seconds",
                str(args.repeat_seconds),
                "--threads",
                str(args.torch_threads),
            ]
            if args.steps is not None:
                torch_argv += ["--steps", str(args.steps)]
            if args.precision == "mixed_bfloat16":
                torch_argv.append("--autocast_bfloat16")
            torch_result, error = _run_json(torch_argv, f"{name} torch port")
            if torch_result is None:
                notes.append(f"{name}: torch fields are null: {error}")
        torch_rate = torch_result["torch_train_images_per_second"] if torch_result else None
        ours = result.get("train_images_per_second")
        flops = result.get("flops_per_train_image")
        result["torch_train_images_per_second"] = torch_rate
        result["torch_achieved_gflops"] = flops * torch_rate / 1e9 if torch_rate and flops else None
        result["speedup_vs_torch"] = ours / torch_rate if torch_rate and ours else None
        if torch_result:
            result["torch_train_repeats_images_per_second"] = torch_result["torch_train_repeats_images_per_second"]
            result["torch_train_steps_per_repeat"] = torch_result["torch_train_steps_per_repeat"]
            result["torch_train_cpu_utilization"] = torch_result["torch_train_cpu_utilization"]
            output["environment"]["torch"] = torch_result["torch_version"]
            output["environment"]["torch_threads"] = torch_result["torch_threads"]
            output["environment"]["torch_autocast"] = torch_result.get("torch_autocast")
        output["settings"][name] = result
    output["environment"].setdefault("torch", None)
    output["environment"].setdefault("torch_threads", None if torch_skip else args.torch_threads)
    output["environment"].setdefault("torch_autocast", None)
    load_end = os.getloadavg()
    output["load_average_1min"] = {"start": load_start[0], "end": load_end[0]}
    output["busy_cores_before"] = busy_before
    if busy_before is None:
        busy, seen = load_start[0], f"the 1-minute load average was {load_start[0]:.2f} on {usable_cpus()} cores"
    else:
        busy, seen = busy_before, f"{busy_before:.2f} of {os.cpu_count()} cores were busy"
    if busy > 0.5:
        notes.append(
            f"{seen} before the benchmark started: other work shared the CPU, so these numbers understate "
            "this code's speed"
        )
    output["total_seconds"] = time.time() - started
    from gmvae_keras.benchmarks import print_report  # noqa: PLC0415

    print_report(output, args.out)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
