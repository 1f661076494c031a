"""Train-step throughput of two source trees, measured in alternation.

    python tools/ab_benchmark.py --a ../before --b . [--settings mnist svhn] [--rounds 6] [--out FILE]

On a machine whose speed drifts by more than the effect being measured (this
project's VM: docs/PERFORMANCE.md), two benchmark runs taken minutes apart
cannot rank two versions. This tool alternates them instead: each round
times tree A then tree B (B then A in every other round), each in a fresh
subprocess that imports `gmvae_keras` from that tree, builds the paper's
model for the setting (`gmvae_keras.benchmarks.SETTINGS` of this process,
passed to both workers, so that the two trees time the same model), warms up
and times `--steps` train steps on a synthetic batch. It prints one JSON object:
every sample, each tree's median images/s, and the median over rounds of the
paired ratio B/A (the drift between two neighbouring samples is small, so
the paired ratio is the figure to read).

`--a` and `--b` are directories holding a `gmvae_keras` package, for example
a `git worktree add ../before <commit>` checkout and this tree. The worker
times a tree with this tree's `tools/benchmark.py`, which imports that tree's
`gmvae_keras.benchmarks` and builds its `GMVAE` with today's arguments: a
commit older than 059ede7 cannot be measured (older A/B runs in
docs/PERFORMANCE.md used the tool of their time).
"""

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from gmvae_keras.benchmarks import SETTINGS, print_report

TOOLS = Path(__file__).resolve().parent
RESULT_MARK = "AB_RESULT "


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", help="the reference tree (a directory holding gmvae_keras/)")
    parser.add_argument("--b", help="the tree compared with it")
    parser.add_argument("--settings", nargs="+", default=["mnist"], help="of gmvae_keras.benchmarks.SETTINGS")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=None, help="timed steps per sample (default: mnist 15, svhn 3)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--out", default=None)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is None:
        unknown = [name for name in args.settings if name not in SETTINGS]
        if unknown:
            parser.error(f"--settings: unknown {', '.join(unknown)} (choose from {', '.join(sorted(SETTINGS))})")
        for name in ("a", "b"):
            tree = getattr(args, name)
            if tree is None:
                parser.error(f"--{name} is required")
            if not (Path(tree) / "gmvae_keras" / "__init__.py").is_file():
                parser.error(f"--{name}={tree} holds no gmvae_keras package")
    if args.rounds < 1:
        parser.error(f"--rounds must be >= 1, got {args.rounds}")
    if args.steps is not None and args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")
    return args


def _load_benchmark_tool():
    """`tools/benchmark.py` as a module, loaded from this file's folder.

    Loading it imports no `gmvae_keras` module: its `build_model` and
    `measure_train` import `gmvae_keras.model` when called, so they use the
    package of the tree under test.
    """
    spec = importlib.util.spec_from_file_location("gmvae_benchmark_tool", TOOLS / "benchmark.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def worker(setting, steps, warmup):
    """Runs inside the tree under test; prints one RESULT_MARK line.

    `setting` is the parent process's `gmvae_keras.benchmarks.SETTINGS` entry.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf  # noqa: PLC0415

    import gmvae_keras  # noqa: PLC0415

    benchmark = _load_benchmark_tool()
    setting = dict(setting, image_shape=tuple(setting["image_shape"]))
    timing = argparse.Namespace(steps_per_execution=1, warmup=warmup, steps=steps, repeats=1, repeat_seconds=None)
    measured = benchmark.measure_train(tf, benchmark.build_model(setting), setting, timing)
    result = {
        "images_per_second": measured["train_images_per_second"],
        "cpu_utilization": measured["train_cpu_utilization"],
        "package": str(Path(gmvae_keras.__file__).resolve().parent),
    }
    print(RESULT_MARK + json.dumps(result), flush=True)


def sample(tree, setting, steps, warmup):
    # The worker imports gmvae_keras from `tree`: its PYTHONPATH puts the tree first.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(tree), os.environ.get("PYTHONPATH")])))
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        json.dumps(setting),
        "--steps",
        str(steps),
        "--warmup",
        str(warmup),
    ]
    proc = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_MARK):
            result = json.loads(line[len(RESULT_MARK) :])
            if Path(result["package"]) != (Path(tree) / "gmvae_keras").resolve():
                raise SystemExit(f"error: the worker for {tree} imported {result['package']}")
            return result
    raise SystemExit(f"error: the worker for {tree} failed:\n{proc.stderr[-2000:]}")


def compare(args, setting):
    steps = args.steps or {"mnist": 15, "svhn": 3}[setting]
    trees = {"a": Path(args.a).resolve(), "b": Path(args.b).resolve()}
    samples = {"a": [], "b": []}
    ratios = []
    for round_index in range(args.rounds):
        order = ("a", "b") if round_index % 2 == 0 else ("b", "a")
        rates = {}
        for name in order:
            result = sample(trees[name], SETTINGS[setting], steps, args.warmup)
            samples[name].append(result)
            rates[name] = result["images_per_second"]
        ratios.append(rates["b"] / rates["a"])
        print(
            f"[ab] {setting} round {round_index + 1}/{args.rounds}: a {rates['a']:.1f}, b {rates['b']:.1f} img/s",
            file=sys.stderr,
            flush=True,
        )
    return {
        "steps_per_sample": steps,
        "a_images_per_second": [s["images_per_second"] for s in samples["a"]],
        "b_images_per_second": [s["images_per_second"] for s in samples["b"]],
        "a_median": statistics.median(s["images_per_second"] for s in samples["a"]),
        "b_median": statistics.median(s["images_per_second"] for s in samples["b"]),
        "paired_ratios_b_over_a": ratios,
        "median_paired_ratio_b_over_a": statistics.median(ratios),
        "rounds_b_faster": sum(r > 1 for r in ratios),
    }


def main(argv=None):
    args = parse_args(argv)
    if args.worker is not None:
        worker(json.loads(args.worker), args.steps or 1, args.warmup)
        return 0
    result = {
        "a": str(Path(args.a).resolve()),
        "b": str(Path(args.b).resolve()),
        "rounds": args.rounds,
        "load_average_1min_start": os.getloadavg()[0],
        "settings": {setting: compare(args, setting) for setting in args.settings},
        "load_average_1min_end": os.getloadavg()[0],
    }
    print_report(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
