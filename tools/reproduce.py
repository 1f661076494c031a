"""Reproduce a row of the paper's Table 1 (2 with --ablation, 3 with --mode=clustering), one run per seed.

    python tools/reproduce.py --dataset=mnist --num_labeled=100 --seeds=5
    python tools/reproduce.py --dataset=mnist --seeds=10-14 --settings=cpu \
        --data_dir=../shared/datasets/mnist

    python tools/reproduce.py --dataset=mnist --mode=clustering --seeds=10-12

`--seeds=N` runs seeds 0 .. N-1 (N <= 10; more are written 0-N); `--seeds=10-14` or
`--seeds=10,11,12` the seeds listed.

Each seed trains with `python -m gmvae_keras.main` into its own run directory
under `--runs_dir`; seeds whose `metrics.json` exists are not rerun, and an
interrupted seed resumes from its last checkpoint, so rerunning the command
continues a sweep. A finished seed is read only if its `config.json` matches the
flags the command would train it with now (a changed recipe or other
extra flags need another `--runs_dir`). At the end the tool prints a Markdown
table in the paper's layout and writes it to `--out`: mean ± std and the worst
seed of the test error of the best-validation model and of the last-epoch model
(which needs no labeled validation set), the paper's number beside them,
epochs, train time, train images/s and the CPU the runs finished on; then each
seed's numbers, with the test error of both prediction rules (classifier and
k-NN). With `--mode=clustering` it prints Table 3's layout instead: mean ±
std and the best seed of the test ACC and NMI, of the model chosen by the
validation loss (no labels) and of the last-epoch model.

With the defaults it follows the paper's protocol (200 epochs, the flagfile `<dataset>.cfg`).
`--settings=cpu` adds the CPU-budget recipe on top (`gmvae_keras.flagfiles`).
Extra flags after `--` go to every run.
"""

import argparse
import os
import signal
import statistics
import subprocess
import sys
from pathlib import Path

from gmvae_keras import flagfiles, paths
from gmvae_keras.config import ConfigError, RunError, read_config, read_json

# Test error (%) of the paper, mean (± std) over 5 seeds.
PAPER = {
    ("mnist", 100, False): "1.94 (± 0.49)",
    ("fashion_mnist", 100, False): "26.88 (± 0.86)",
    ("fashion_mnist", 1000, False): "15.85 (± 0.69)",
    ("svhn", 1000, False): "14.78 (± 0.40)",
    ("mnist", 100, True): "10.16",
    ("fashion_mnist", 100, True): "29.98",
    ("svhn", 1000, True): "58.77",
}

# Table 3 of the paper (unsupervised clustering, 5 seeds): ACC and NMI (%), mean and best run.
PAPER_CLUSTERING = {
    "mnist": {"acc": 92.46, "nmi": 88.16, "best_acc": 97.36, "best_nmi": 93.44},
    "fashion_mnist": {"acc": 55.97, "nmi": 54.55, "best_acc": 59.05, "best_nmi": 57.56},
}


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, choices=["mnist", "fashion_mnist", "svhn"])
    parser.add_argument("--num_labeled", type=int, default=None, help="default: the dataset's flagfile")
    parser.add_argument("--seeds", default="5", help="N <= 10 (seeds 0 .. N-1), A-B (A .. B) or A,B,C")
    parser.add_argument("--epochs", type=int, default=None, help="default: the flagfile's (200 in the paper)")
    parser.add_argument("--ablation", action="store_true", help="w_M = 0: the paper's Table 2")
    parser.add_argument(
        "--mode", choices=["semi_supervised", "clustering"], default="semi_supervised", help="clustering: Table 3"
    )
    parser.add_argument("--settings", choices=["paper", "cpu"], default="paper")
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--runs_dir", default="runs/reproduce")
    parser.add_argument("--out", default=None, help="Markdown file (default: RUNS_DIR/<sweep>/results.md)")
    parser.add_argument("extra", nargs="*", help="flags passed to every run, after --")
    args = parser.parse_args(argv)
    try:
        args.seeds = parse_seeds(args.seeds)
    except ValueError as e:
        parser.error(str(e))
    if args.epochs is not None and args.epochs < 1:
        parser.error(f"--epochs must be >= 1, got {args.epochs}")
    if args.mode == "clustering" and args.ablation:
        parser.error("--ablation is for --mode=semi_supervised (clustering has no L_M)")
    if args.mode == "clustering" and flagfiles.path(f"{args.dataset}_clustering") is None:
        parser.error(f"--mode=clustering: there are no clustering settings for {args.dataset}")
    try:
        flagfiles.recipe(args.dataset, mode=args.mode, settings=args.settings)
    except ConfigError as e:
        parser.error(str(e))
    return args


def parse_seeds(text):
    """The seeds of `--seeds`: "N" is 0 .. N-1, "A-B" is A .. B, "A,B,C" the seeds listed."""
    problem = f"--seeds must be N >= 1, A-B with A <= B, or a comma-separated list of seeds >= 0; got {text!r}"
    try:
        if "," in text:
            seeds = [int(part) for part in text.split(",")]
        elif "-" in text.strip().lstrip("-"):
            first, last = (int(part) for part in text.split("-"))
            seeds = list(range(first, last + 1))
        else:
            seeds = list(range(int(text)))
    except ValueError:
        raise ValueError(problem) from None
    if "," not in text and "-" not in text and len(seeds) > 10:
        # `--seeds=12` reads like "seed 12", one of the reporting seeds 10-19; make the writer say which they mean.
        raise ValueError(
            f"--seeds={text} would run seeds 0-{len(seeds) - 1}: write that, "
            f"or --seeds={text}-{text} for seed {text} alone"
        )
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise ValueError(problem)
    return seeds


def default_num_labeled(dataset, mode="semi_supervised"):
    name = dataset + ("_clustering" if mode == "clustering" else "")
    return int(flagfiles.read(flagfiles.path(name))["num_labeled"])


def sweep_name(args):
    if args.mode == "clustering":
        name = f"{args.dataset}-clustering-{args.settings}"
    else:
        name = f"{args.dataset}-{args.num_labeled}-{args.settings}"
    if args.ablation:
        name += "-ablation"
    if args.epochs is not None:
        name += f"-e{args.epochs}"
    return name


def run_command(args, seed, model_dir):
    return [sys.executable, "-m", "gmvae_keras.main"] + run_flags(args, seed, model_dir)


def run_flags(args, seed, model_dir):
    command = [f"--dataset={args.dataset}"]
    if args.mode == "clustering":
        command.append("--mode=clustering")
    if args.settings == "cpu":
        command.append("--settings=cpu")
    command += [f"--num_labeled={args.num_labeled}", f"--seed={seed}", f"--model_dir={model_dir}", "--verbose=2"]
    if args.epochs is not None:
        command.append(f"--epochs={args.epochs}")
    if args.ablation:
        command.append("--metric_weight=0")
    if args.data_dir:
        command.append(f"--data_dir={args.data_dir}")
    return command + list(args.extra)


def stale_flags(run_flags, model_dir):
    """The flags in which a finished run differs from `run_flags` ([] when it matches)."""
    previous = read_config(model_dir)
    if previous is None:
        raise RunError(f"{model_dir / 'metrics.json'} has no config.json beside it")
    return flagfiles.config_from_args(run_flags).describe_differences(previous)


def _spread(values, extreme):
    """`mean (± std; EXTREME max)`: the max is the worst error or the best ACC/NMI; one seed has no spread."""
    if len(values) == 1:
        return f"{values[0]:.2f} (one seed)"
    return f"{statistics.fmean(values):.2f} (± {statistics.stdev(values):.2f}; {extreme} {max(values):.2f})"


def _run_facts(results):
    """Epochs, mean train hours, mean train images/s and CPUs of a sweep's runs."""
    epochs = ", ".join(map(str, sorted({m["epochs"] for m in results})))
    hours = sum(m["train_seconds"] for m in results) / len(results) / 3600
    rate = statistics.fmean(m["train_images_per_second"] for m in results)
    cpus = "; ".join(sorted({m.get("cpu_model") or "not recorded" for m in results}))
    return epochs, hours, rate, cpus


def clustering_table(args, results):
    """Table 3's layout: ACC and NMI (%), mean ± std and best seed, beside the paper's."""
    epochs, hours, rate, cpus = _run_facts(results)
    paper = PAPER_CLUSTERING.get(args.dataset)
    shown = "n/a"
    if paper:
        shown = f"ACC {paper['acc']:.2f} (best {paper['best_acc']:.2f}), "
        shown += f"NMI {paper['nmi']:.2f} (best {paper['best_nmi']:.2f})"
    seeds = ", ".join(str(m["seed"]) for m in results)
    lines = [
        "| Dataset | Settings | Paper (5 seeds, 200 epochs) | Model | Ours ACC (%) | Ours NMI (%) | Seeds | Epochs "
        "| Train time per run (h) | Train images/s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for which, label in (("best", "lowest validation loss"), ("last", "last epoch")):
        acc = _spread([m[f"test_cluster_accuracy_{which}"] for m in results], "best")
        nmi = _spread([m[f"test_nmi_{which}"] for m in results], "best")
        lines.append(
            f"| {args.dataset} | {args.settings} | {shown} | {label} | {acc} | {nmi} | {seeds} "
            f"| {epochs} | {hours:.2f} | {rate:.0f} |"
        )
    lines += [
        "",
        f"CPU: {cpus}. Runs that shared the cores train slower: compare images/s on one host only.",
        "",
        "| Seed | Chosen epoch | Test ACC, chosen model (%) | Test NMI (%) | Last model ACC (%) | Last model NMI (%) |",
        "|---|---|---|---|---|---|",
    ]
    for m in results:
        lines.append(
            f"| {m['seed']} | {m['best_epoch']} | {m['test_cluster_accuracy_best']:.2f} | {m['test_nmi_best']:.2f} "
            f"| {m['test_cluster_accuracy_last']:.2f} | {m['test_nmi_last']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def table(args, results):
    epochs, hours, rate, cpus = _run_facts(results)
    label = "w_M = 0 (ablation)" if args.ablation else "full model"
    paper = PAPER.get((args.dataset, args.num_labeled, args.ablation), "n/a")
    lines = [
        "| Dataset | Labels | Model | Settings | Paper test error (%) | Ours, best-validation model (%) "
        "| Ours, last-epoch model (%) | Seeds | Epochs | Train time per run (h) | Train images/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        f"| {args.dataset} | {args.num_labeled} | {label} | {args.settings} | {paper} "
        f"| {_spread([m['test_error_best'] for m in results], 'worst')} "
        f"| {_spread([m['test_error_last'] for m in results], 'worst')} "
        f"| {', '.join(str(m['seed']) for m in results)} | {epochs} | {hours:.2f} | {rate:.0f} |",
        "",
        f"CPU: {cpus}. Runs that shared the cores train slower: compare images/s on one host only.",
        "",
        "| Seed | Best epoch | Test error, best model (%) | Last model (%) | Best model, classifier (%) "
        "| Best model, k-NN (%) | Train images/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in results:
        rules = [m.get(f"test_error_{rule}_best") for rule in ("classifier", "knn")]
        shown = ["n/a" if value is None else f"{value:.2f}" for value in rules]
        lines.append(
            f"| {m['seed']} | {m['best_epoch']} | {m['test_error_best']:.2f} | {m['test_error_last']:.2f} "
            f"| {shown[0]} | {shown[1]} | {m['train_images_per_second']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def run_seed(command):
    """Runs one seed's training and returns its exit status (128 + N after signal N).

    A SIGTERM or SIGHUP sent to this tool (`kill <pid>`) is passed on to the
    training, which would otherwise go on alone; so is a SIGINT that reaches only
    the tool (Ctrl-C reaches both). Rerunning the command resumes the seed from
    its last finished epoch.
    """
    received = []
    child = []

    def forward(signum, frame):
        received.append(signum)
        if child:
            child[0].send_signal(signum)

    numbers = [signal.SIGTERM] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])
    # Installed before the child starts, so a signal in between is not lost.
    previous = {number: signal.signal(number, forward) for number in numbers}
    try:
        child.append(subprocess.Popen(command, env=dict(os.environ)))
        if received:
            child[0].send_signal(received[0])
        try:
            code = child[0].wait()
        except KeyboardInterrupt:
            try:
                child[0].wait(timeout=30)  # after a Ctrl-C it stops by itself
            except subprocess.TimeoutExpired:
                child[0].send_signal(signal.SIGINT)
                child[0].wait()
            return 128 + signal.SIGINT
    finally:
        for number, handler in previous.items():
            signal.signal(number, signal.SIG_DFL if handler is None else handler)
    if received:  # asked to stop: do not go on to the next seed even if the training exited 0
        return 128 + received[0]
    return 128 - code if code < 0 else code  # killed by a signal: report it as a shell would


def main(argv=None):
    args = parse_args(argv)
    try:  # before the first seed: a sweep runs for hours before --out is written
        paths.check_output_dir(args.runs_dir, "--runs_dir")
        if args.out:
            paths.check_output_file(args.out, "--out")
        if args.data_dir:
            paths.check_input_dir(args.data_dir, "--data_dir")
    except paths.PathError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.num_labeled is None:
        args.num_labeled = default_num_labeled(args.dataset, args.mode)
    if args.data_dir:
        args.data_dir = str(Path(args.data_dir).resolve())
    sweep = Path(args.runs_dir).resolve() / sweep_name(args)
    # `--seeds=11` means seeds 0 .. 10, not seed 11: say which seeds run before the first one starts.
    print(f"[reproduce] {sweep.name}: seeds {', '.join(map(str, args.seeds))} into {sweep}", flush=True)
    results = []
    for seed in args.seeds:
        model_dir = sweep / f"seed-{seed}"
        metrics_path = model_dir / "metrics.json"
        if metrics_path.exists():
            from absl import flags

            try:
                stale = stale_flags(run_flags(args, seed, model_dir), model_dir)
            except (flags.Error, ValueError) as e:  # bad extra flags, an unreadable config.json (RunError)
                print(f"error: cannot compare {model_dir} with this command: {str(e).splitlines()[0]}", file=sys.stderr)
                return 2
            if stale:
                print(
                    f"error: {model_dir} was trained with other flags ({'; '.join(stale)}); "
                    "use another --runs_dir for these settings",
                    file=sys.stderr,
                )
                return 2
            print(f"[reproduce] seed {seed}: finished earlier, reading {metrics_path}", flush=True)
        else:
            command = run_command(args, seed, model_dir)
            print(f"[reproduce] seed {seed}: {' '.join(command)}", flush=True)
            code = run_seed(command)
            if code != 0:
                print(f"[reproduce] seed {seed} stopped with status {code}; rerun to resume", file=sys.stderr)
                return code
        try:
            metrics = read_json(metrics_path)
        except RunError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        if metrics is None:
            print(f"error: seed {seed} ended without writing {metrics_path}", file=sys.stderr)
            return 2
        results.append(metrics)
    text = clustering_table(args, results) if args.mode == "clustering" else table(args, results)
    out = Path(args.out) if args.out else sweep / "results.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
