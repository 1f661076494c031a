"""Check that two commits compute the same: one short deterministic run per recipe on each.

    python tools/compare_commits.py BEFORE AFTER --datasets_dir=../shared/datasets

Each commit is checked out into its own worktree (under `--workdir`), and each
recipe (the MNIST paper settings, the MNIST CPU budget, the Fashion-MNIST CPU
budget with 100 and with 1000 labels, the CPU budgets of both clusterings, and
SVHN's paper settings) trains there with `--deterministic
--epochs=1 --steps_per_epoch=50 --seed=0`, importing that worktree's package.
The per-epoch losses (from the TensorBoard logs) and the validation scores
(from `metrics.json`) of the two commits are compared with a relative
tolerance (default 1e-5). A commit's finished runs under `--workdir` are
reused, so comparing it again trains only the other commit. SVHN, whose
files are not on every machine, reads `--datasets_dir`/svhn when it is there
and otherwise synthetic `.mat` files of the same layout (seeded random pixels,
written once into `--workdir`): the same input for both commits, which is all
a comparison needs. Prints one JSON document; exits 1 when a value differs, 2
on bad input.
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from gmvae_keras import paths

# name -> (dataset, extra flags)
RECIPES = {
    "mnist-paper": ("mnist", []),
    "mnist-cpu": ("mnist", ["--settings=cpu"]),
    "fashion_mnist-cpu-100": ("fashion_mnist", ["--settings=cpu", "--num_labeled=100"]),
    "fashion_mnist-cpu-1000": ("fashion_mnist", ["--settings=cpu", "--num_labeled=1000"]),
    "mnist-clustering-cpu": ("mnist", ["--mode=clustering", "--settings=cpu"]),
    "fashion_mnist-clustering-cpu": ("fashion_mnist", ["--mode=clustering", "--settings=cpu"]),
    "svhn-paper": ("svhn", []),
}
# Synthetic SVHN when the real files are absent: enough for 1,000 labeled images after the 80/20 split.
SYNTHETIC_SVHN = {"train": 3000, "test": 500}
RUN_FLAGS = [
    "--deterministic",
    "--epochs=1",
    "--steps_per_epoch=50",
    "--seed=0",
    "--verbose=2",
    "--image_summary_every=0",
]
VALIDATION_KEYS = ("val_error_last", "val_cluster_accuracy_last", "val_nmi_last")


def git(*args, cwd=None):
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def resolve(repo, commit):
    return git("rev-parse", "--verify", f"{commit}^{{commit}}", cwd=repo)


def worktree(repo, sha, workdir):
    path = workdir / sha[:12]
    if not path.exists():
        git("worktree", "add", "--detach", str(path), sha, cwd=repo)
    return path


def epoch_scalars(log_dir):
    """`{tag: value}` of the last step of every scalar in a TensorBoard folder."""
    from gmvae_keras._quiet import quiet_tensorflow

    quiet_tensorflow()
    import tensorflow as tf

    values = {}
    for event_file in sorted(Path(log_dir).glob("events.out.tfevents.*")):
        for record in tf.data.TFRecordDataset(str(event_file)):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                if value.HasField("tensor"):
                    values[value.tag] = float(tf.make_ndarray(value.tensor))
                elif value.HasField("simple_value"):
                    values[value.tag] = float(value.simple_value)
    return values


def synthetic_svhn(folder):
    """Writes seeded random `train_32x32.mat` and `test_32x32.mat` (SVHN's layout) into `folder` once."""
    import numpy as np
    import scipy.io

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for part, n in SYNTHETIC_SVHN.items():
        if (folder / f"{part}_32x32.mat").exists():
            continue
        images = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)
        labels = (np.arange(n) % 10 + 1).astype(np.uint8).reshape(n, 1)  # 10 is the digit 0
        scipy.io.savemat(str(folder / f".{part}_32x32.mat"), {"X": images, "y": labels})
        os.replace(folder / f".{part}_32x32.mat", folder / f"{part}_32x32.mat")
    return folder


def data_dir(dataset, datasets_dir, workdir):
    """The recipe's `--data_dir`: `datasets_dir/<dataset>`, or synthetic SVHN files when they are absent."""
    if dataset == "svhn" and not (datasets_dir / "svhn").is_dir():
        return synthetic_svhn(workdir / "synthetic-svhn")
    return datasets_dir / dataset


def run_recipe(tree, name, data_dir, runs_dir):
    dataset, extra = RECIPES[name]
    model_dir = runs_dir / name
    if not (model_dir / "metrics.json").exists():
        command = [
            sys.executable,
            "-m",
            "gmvae_keras.main",
            f"--dataset={dataset}",
            *extra,
            *RUN_FLAGS,
            f"--data_dir={data_dir}",
            f"--model_dir={model_dir}",
            "--overwrite",
        ]
        env = dict(os.environ, PYTHONPATH=str(tree), CUDA_VISIBLE_DEVICES="")
        print(f"[compare] {tree.name} {name}: {' '.join(command[1:])}", file=sys.stderr, flush=True)
        result = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(f"error: {name} failed in {tree}: {result.stderr.strip().splitlines()[-1:]}")
    metrics = json.loads((model_dir / "metrics.json").read_text())
    values = {f"train/{tag}": value for tag, value in epoch_scalars(model_dir / "logs" / "train").items()}
    values = {tag: value for tag, value in values.items() if "loss" in tag or "accuracy" in tag}
    # A clustering reports no classification error.
    values.update({key: metrics[key] for key in VALIDATION_KEYS if key in metrics})
    return values


def compare(before, after, tolerance):
    rows = {}
    for key in sorted(set(before) | set(after)):
        a, b = before.get(key), after.get(key)
        same = a is not None and b is not None and abs(a - b) <= tolerance * max(1.0, abs(a))
        rows[key] = {"before": a, "after": b, "same": same}
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", help="the earlier commit")
    parser.add_argument("after", help="the later commit")
    parser.add_argument(
        "--datasets_dir", required=True, help="folder with mnist/ and fashion_mnist/ IDX files (and svhn/, optional)"
    )
    parser.add_argument("--workdir", default="runs/compare", help="where the worktrees and runs go")
    parser.add_argument("--recipes", default=",".join(RECIPES), help="comma-separated subset of " + ", ".join(RECIPES))
    parser.add_argument("--tolerance", type=float, default=1e-5, help="relative tolerance")
    args = parser.parse_args(argv)
    recipes = [name.strip() for name in args.recipes.split(",") if name.strip()]
    unknown = [name for name in recipes if name not in RECIPES]
    if unknown or not recipes:
        parser.exit(2, f"error: unknown recipes {unknown}; choose from {', '.join(RECIPES)}\n")
    try:
        datasets_dir = paths.check_input_dir(args.datasets_dir, "--datasets_dir").resolve()
        paths.check_output_dir(args.workdir, "--workdir")
    except paths.PathError as e:
        parser.exit(2, f"error: {e}\n")
    for dataset in {RECIPES[name][0] for name in recipes} - {"svhn"}:
        if not (datasets_dir / dataset).is_dir():
            parser.exit(2, f"error: {datasets_dir / dataset} is not a folder\n")
    repo = Path(__file__).resolve().parents[1]
    try:
        shas = [resolve(repo, commit) for commit in (args.before, args.after)]
    except subprocess.CalledProcessError as e:
        parser.exit(2, f"error: {' '.join(e.cmd)}: {e.stderr.strip()}\n")
    # One commit has one runs folder: its run would be compared with itself.
    if shas[0] == shas[1]:
        parser.exit(2, f"error: {args.before} and {args.after} are the same commit {shas[0][:12]}\n")
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        trees = [worktree(repo, sha, workdir) for sha in shas]
    except subprocess.CalledProcessError as e:
        parser.exit(2, f"error: {' '.join(e.cmd)}: {e.stderr.strip()}\n")
    report = {"before": shas[0], "after": shas[1], "run_flags": RUN_FLAGS, "tolerance": args.tolerance}
    same = True
    for name in recipes:
        folder = data_dir(RECIPES[name][0], datasets_dir, workdir)
        values = [run_recipe(tree, name, folder, workdir / f"{tree.name}-runs") for tree in trees]
        rows = compare(*values, args.tolerance)
        report[name] = rows
        same = same and all(row["same"] for row in rows.values())
    report["same"] = same
    print(json.dumps(report, indent=2))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
