"""The labeling loop on a built-in data set, its true labels as the oracle: do the suggestions beat random labels?

    python tools/simulate_labeling.py --dataset=fashion_mnist --settings=cpu --seeds=10-12 \
        --num_labeled=100 --count=100 --data_dir=../shared/datasets/fashion_mnist

For each seed, under `--runs_dir/<dataset>-<L>+<N>-<settings>/seed-S/`:

1. `first`: train with the seed's class-balanced draw of L labels;
2. `suggested-<signal>.csv`: `python -m gmvae_keras.suggest --count=N --signal=<signal>` on it, for each of
   `--signals`;
3. `suggested-<signal>`: train again from scratch with those N labels added (`--add_labeled`);
   `init_from-<signal>`: the same from `first`'s weights (`--init_from`) for half the epochs;
4. `balanced`: `first`'s L labels plus N more drawn class-balanced (N / classes of each class, as the data
   set's own labeled draw is made) from its unlabeled images (`balanced.csv`, seeded);
   `uniform`: `first`'s L labels plus N drawn uniformly from its unlabeled images (`uniform.csv`, seeded).
   Every second round keeps `first`'s L labels, so the comparison is of the N added ones alone.

Every run resumes (`gmvae_keras.main` with its run directory) and a finished one is read, so rerunning the
command continues the loop, and a later call with other `--signals` compares them against the same `first`,
`balanced` and `uniform` runs. `--strategies` picks the runs of step 3 and 4. At the end the tool prints a
Markdown table (strategy, seeds, mean ± std of the best validation error, which tuning seeds are judged by, and
of the test error of the best-validation model, train minutes), what each seed's suggestions were by the true
labels (how many `first` predicted wrongly, their classes, their signals), and one line of JSON with every number,
and writes the table to `<sweep>/results.md`. Extra flags after `--` go to every training run; the sweep keeps
them in `flags.json` and refuses other ones, since its finished runs would not have them.
"""

import argparse
import collections
import csv
import json
import math
import statistics
import sys
from pathlib import Path

import numpy as np
from reproduce import parse_seeds, run_seed

from gmvae_keras._quiet import quiet_tensorflow

quiet_tensorflow()  # before TensorFlow is first imported, by the flags' choices

STRATEGIES = ("suggested", "init_from", "balanced", "uniform")
# MNIST, Fashion-MNIST and SVHN alike.
_NUM_CLASSES = 10


def parse_args(argv):
    from gmvae_keras.labeling import SIGNALS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, choices=["mnist", "fashion_mnist", "svhn"])
    parser.add_argument("--num_labeled", type=int, default=100, help="L, the first round's labels")
    parser.add_argument("--count", type=int, default=100, help="N, the labels added in the second round")
    parser.add_argument("--seeds", default="10-12", help="as tools/reproduce.py: N, A-B or A,B,C")
    parser.add_argument("--settings", choices=["paper", "cpu"], default="cpu")
    parser.add_argument("--signals", default=SIGNALS[0], help="suggest's rankings to compare, of " + ", ".join(SIGNALS))
    parser.add_argument("--strategies", default=",".join(STRATEGIES), help="of " + ", ".join(STRATEGIES))
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--runs_dir", default="runs/labeling")
    parser.add_argument("extra", nargs="*", help="flags passed to every training run, after --")
    args = parser.parse_args(argv)
    try:
        args.seeds = parse_seeds(args.seeds)
    except ValueError as e:
        parser.error(str(e))
    for name, choices in (("strategies", STRATEGIES), ("signals", SIGNALS)):
        chosen = [s for s in getattr(args, name).split(",") if s]
        unknown = sorted(set(chosen) - set(choices))
        if unknown or not chosen:
            parser.error(f"--{name}: {', '.join(unknown) or 'none given'}; choose from {', '.join(choices)}")
        setattr(args, name, list(dict.fromkeys(chosen)))
    for name in ("num_labeled", "count"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    # The first draw, and the balanced one, take as many images of each class.
    for name in ("num_labeled", "count") if "balanced" in args.strategies else ("num_labeled",):
        if getattr(args, name) % _NUM_CLASSES:
            parser.error(f"--{name}={getattr(args, name)}: a class-balanced draw of the {_NUM_CLASSES} classes")
    if args.data_dir:
        args.data_dir = str(Path(args.data_dir).resolve())
    return args


def run_or_exit(command, what):
    """Runs one step of the loop (a training or `suggest`); on failure says how to go on and exits with its status."""
    print(f"[labeling] {' '.join(command)}", flush=True)
    code = run_seed(command)
    if code != 0:
        # Status 2 is bad input, which a rerun repeats; anything else (an interruption) resumes.
        hint = "see its message above" if code == 2 else "rerun to resume"
        print(f"[labeling] {what} stopped with status {code}; {hint}", file=sys.stderr)
        sys.exit(code)


def train(args, seed, model_dir, *flags):
    """Trains (or resumes, or reads) one run; returns its metrics, or exits with the run's status."""
    metrics_path = model_dir / "metrics.json"
    if not metrics_path.exists():
        command = [sys.executable, "-m", "gmvae_keras.main", f"--dataset={args.dataset}", f"--seed={seed}"]
        command += [f"--settings={args.settings}", f"--model_dir={model_dir}", "--verbose=2"]
        command += [f"--data_dir={args.data_dir}"] if args.data_dir else []
        command += [*args.extra, *flags]  # the loop's own flags last: `init_from`'s --epochs halves the first run's
        run_or_exit(command, model_dir)
    return json.loads(metrics_path.read_text())


def random_rows(data, labeled, count, seed, balanced):
    """`count` official train-set rows of `data` drawn with `seed` from the images outside `labeled` (train-split
    positions): uniformly, or `count / classes` of each class (`balanced`)."""
    unlabeled = np.setdiff1d(np.arange(len(data.train_labels)), labeled)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 48, int(balanced)]))
    if balanced:
        labels = data.train_labels[unlabeled]
        per_class = count // data.num_classes
        picks = [rng.choice(unlabeled[labels == c], size=per_class, replace=False) for c in range(data.num_classes)]
        positions = np.concatenate(picks)
    else:
        positions = rng.choice(unlabeled, size=count, replace=False)
    return np.sort(data.train_rows[positions])


def suggestions(args, folder, first):
    """`{signal: path}` of `first`'s suggestion CSV for each of `--signals`, made by `gmvae_keras.suggest`."""
    paths = {}
    for signal in args.signals:
        paths[signal] = folder / f"suggested-{signal}.csv"
        if not paths[signal].exists():
            command = [sys.executable, "-m", "gmvae_keras.suggest", f"--model_dir={first}", f"--count={args.count}"]
            command += [f"--signal={signal}", f"--out={paths[signal]}"]
            run_or_exit(command, f"suggest on {first}")
    return paths


def one_seed(args, seed, folder):
    """`{run: metrics}` of one seed's loop (runs named as their folders) and `{signal: what_was_picked}`."""
    first = folder / "first"
    labels = f"--num_labeled={args.num_labeled}"
    results = {"first": train(args, seed, first, labels)}
    suggested = suggestions(args, folder, first)
    half = f"--epochs={math.ceil(json.loads((first / 'config.json').read_text())['epochs'] / 2)}"
    from gmvae_keras.config import read_config
    from gmvae_keras.train import load_data

    data = load_data(read_config(first))
    picked = {signal: what_was_picked(data, path) for signal, path in suggested.items()}
    for signal, p in picked.items():
        print(f"[labeling] {suggested[signal].name}: {describe(p)}", flush=True)
    labeled = np.load(first / "labeled_indices.npy")
    runs = {}
    for name in ("balanced", "uniform"):
        path = folder / f"{name}.csv"
        if name in args.strategies and not path.exists():
            rows = random_rows(data, labeled, args.count, seed, balanced=name == "balanced")
            path.write_text("index\n" + "".join(f"{r}\n" for r in rows))
        runs[name] = (labels, f"--add_labeled={path}")
    for signal, path in suggested.items():
        runs[f"suggested-{signal}"] = (labels, f"--add_labeled={path}")
        runs[f"init_from-{signal}"] = (labels, f"--add_labeled={path}", f"--init_from={first}", half)
    for name in run_names(args):
        results[name] = train(args, seed, folder / name, *runs[name])
    return results, picked


def run_names(args):
    """The second rounds `--strategies` and `--signals` ask for, as their folders are named."""
    return [
        f"{strategy}-{signal}" if strategy in ("suggested", "init_from") else strategy
        for strategy in args.strategies
        for signal in (args.signals if strategy in ("suggested", "init_from") else [None])
    ]


def what_was_picked(data, path):
    """What a suggestion CSV holds, by the oracle's labels: `wrong_in_first` (rows whose `predicted` class, the
    first round's, is not the true one), `classes` (the true classes' counts) and `signals` (counts by signal)."""
    from gmvae_keras.data.splits import train_positions

    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    truth = data.train_labels[train_positions(data, [int(row["index"]) for row in rows], str(path))]
    wrong = sum(row["predicted"] != data.class_names[label] for row, label in zip(rows, truth, strict=True))
    signals = dict(sorted(collections.Counter(row["signal"] for row in rows).items()))
    classes = np.bincount(truth, minlength=data.num_classes).tolist()
    return {"wrong_in_first": wrong, "classes": classes, "signals": signals}


def describe(picked):
    """`what_was_picked` in a line."""
    signals = ", ".join(f"{k} {v}" for k, v in picked["signals"].items())
    return (
        f"{picked['wrong_in_first']} of {sum(picked['classes'])} wrongly predicted by `first`; true classes "
        f"{', '.join(map(str, picked['classes']))}; signals {signals}"
    )


def table(args, by_seed):
    lines = [
        "| strategy | labels | seeds | best validation error (%) | test error, best-validation model (%) "
        "| train minutes |",
        "|---|---|---|---|---|---|",
    ]

    def spread(strategy, key):
        values = [by_seed[s][strategy][key] for s in args.seeds]
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.fmean(values):.2f} ± {std:.2f} ({', '.join(f'{v:.2f}' for v in values)})"

    for name in ["first", *run_names(args)]:
        minutes = statistics.fmean(by_seed[s][name]["train_seconds"] / 60 for s in args.seeds)
        labels = args.num_labeled if name == "first" else args.num_labeled + args.count
        seeds = ", ".join(map(str, args.seeds))
        lines.append(
            f"| {name} | {labels} | {seeds} | {spread(name, 'val_error_best')} "
            f"| {spread(name, 'test_error_best')} | {minutes:.1f} |"
        )
    return "\n".join(lines) + "\n"


def same_flags(sweep, extra):
    """Whether `extra` (the flags after `--`) are those the sweep's runs had; the first call records them."""
    record = sweep / "flags.json"
    if not record.exists():
        sweep.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps(extra) + "\n")
        return True
    kept = json.loads(record.read_text())
    if kept != extra:
        print(
            f"error: {sweep} was trained with the flags {' '.join(kept) or '(none)'} after --, not "
            f"{' '.join(extra) or '(none)'}; give those, or another --runs_dir",
            file=sys.stderr,
        )
        return False
    return True


def main(argv=None):
    from gmvae_keras import paths

    args = parse_args(argv)
    try:  # before the first run: the loop trains for hours
        paths.check_output_dir(args.runs_dir, "--runs_dir")
        if args.data_dir:
            paths.check_input_dir(args.data_dir, "--data_dir")
    except paths.PathError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    sweep = Path(args.runs_dir).resolve() / f"{args.dataset}-{args.num_labeled}+{args.count}-{args.settings}"
    if not same_flags(sweep, args.extra):
        return 2
    print(f"[labeling] {sweep.name}: seeds {', '.join(map(str, args.seeds))} into {sweep}", flush=True)
    by_seed, picked = {}, {}
    for seed in args.seeds:
        folder = sweep / f"seed-{seed}"
        folder.mkdir(parents=True, exist_ok=True)
        by_seed[seed], picked[seed] = one_seed(args, seed, folder)
    text = table(args, by_seed) + "".join(
        f"\nSeed {seed}'s suggestions by `{signal}`: {describe(p)}.\n"
        for seed, by_signal in picked.items()
        for signal, p in by_signal.items()
    )
    (sweep / "results.md").write_text(text)
    print(text)
    summary = {
        str(seed): {
            k: {key: m[key] for key in ("val_error_best", "test_error_best", "train_seconds")} for k, m in r.items()
        }
        for seed, r in by_seed.items()
    }
    print(json.dumps({"sweep": sweep.name, "runs": summary, "suggested": {str(s): p for s, p in picked.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
