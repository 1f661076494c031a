"""Command line: `python -m gmvae_keras.main --dataset=mnist [--flag=value ...]`.

`--dataset=X` first loads the paper's settings from `flags/X.cfg`;
`--settings=cpu` adds `flags/X_cpu.cfg` on top (the CPU-budget settings of
docs/RESULTS.md), then `flags/X_cpu_N.cfg` when `--num_labeled=N` is given
and that file exists (settings tuned for N labels only). Flags on the command
line override every file.
`--helpfull` lists every flag.
"""

import dataclasses
import datetime
import os
import sys
from pathlib import Path

# TensorFlow's C++ start-up chatter (no CUDA, oneDNN notices) hides the progress output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import app, flags, logging

from gmvae_keras.callbacks import NonFiniteLoss
from gmvae_keras.checkpoint import CheckpointWriteError
from gmvae_keras.config import Config, ConfigError
from gmvae_keras.data import DataError
from gmvae_keras.train import RunError, train_and_evaluate

FLAGS = flags.FLAGS

flags.DEFINE_string("model_dir", None, "Run directory (default runs/<dataset>-<timestamp>); an existing run there is resumed.")
flags.DEFINE_enum(
    "settings",
    "paper",
    ["paper", "cpu"],
    "paper: flags/<dataset>.cfg alone; cpu: flags/<dataset>_cpu.cfg on top of it (the CPU-budget settings), "
    "then flags/<dataset>_cpu_<num_labeled>.cfg if it exists.",
)


def _define_config_flags():
    for field in dataclasses.fields(Config):
        help_text, choices = field.metadata["help"], field.metadata["choices"]
        if field.type is bool or isinstance(field.default, bool):
            flags.DEFINE_boolean(field.name, field.default, help_text)
        elif choices and all(isinstance(c, str) for c in choices):
            flags.DEFINE_enum(field.name, field.default, choices, help_text)
        elif isinstance(field.default, int):
            flags.DEFINE_integer(field.name, field.default, help_text)
        elif isinstance(field.default, float):
            flags.DEFINE_float(field.name, field.default, help_text)
        else:
            flags.DEFINE_string(field.name, field.default, help_text)


_define_config_flags()


def flagfile_dirs():
    """Folders searched for `<dataset>.cfg`: the source tree's, then the installed copy's."""
    return [Path(__file__).resolve().parent.parent / "flags", Path(sys.prefix) / "share" / "gmvae_keras" / "flags"]


def _flag_value(argv, name):
    value = None
    for i, arg in enumerate(argv):
        if arg.startswith(f"--{name}="):
            value = arg.split("=", 1)[1]
        elif arg == f"--{name}" and i + 1 < len(argv):
            value = argv[i + 1]
    return value


def _find_flagfile(name):
    for folder in flagfile_dirs():
        path = folder / f"{name}.cfg"
        if path.exists():
            return path
    return None


def with_dataset_flagfile(argv):
    """Inserts `--flagfile=flags/<dataset>.cfg` first, so later flags override it.

    With `--mode=clustering` the file is `flags/<dataset>_clustering.cfg`;
    with `--settings=cpu`, `flags/<dataset>_cpu.cfg` follows it, and then
    `flags/<dataset>_cpu_<N>.cfg` if `--num_labeled=N` is on the command line
    and that file exists (a budget tuned for one label count only).

    Raises:
        ConfigError: `--settings=cpu` for a dataset (or mode) without a CPU file.
    """
    dataset = _flag_value(argv[1:], "dataset")
    if not dataset:
        return argv
    name = dataset + ("_clustering" if _flag_value(argv[1:], "mode") == "clustering" else "")
    files = []
    base = _find_flagfile(name)
    if base is not None:
        files.append(base)
        if _flag_value(argv[1:], "settings") == "cpu":
            cpu = _find_flagfile(f"{name}_cpu")
            if cpu is None:
                raise ConfigError(f"--settings=cpu: there are no CPU settings for {name} (flags/{name}_cpu.cfg)")
            files.append(cpu)
            labels = _flag_value(argv[1:], "num_labeled")
            if labels is not None and labels.isdigit():
                per_labels = _find_flagfile(f"{name}_cpu_{int(labels)}")
                if per_labels is not None:
                    files.append(per_labels)
    return argv[:1] + [f"--flagfile={path}" for path in files] + argv[1:]


def config_from_flags():
    return Config(**{field.name: FLAGS[field.name].value for field in dataclasses.fields(Config)})


def config_from_args(args):
    """The `Config` that `python -m gmvae_keras.main ARGS` trains with, flagfiles included.

    For tools that work from the same command line; the global flags are
    left unparsed afterwards.

    Raises:
        ConfigError: `--settings=cpu` without a CPU file.
        absl.flags.Error: an unknown flag, a bad value or a stray argument.
    """
    argv = with_dataset_flagfile(["gmvae_keras.main"] + list(args))
    FLAGS.unparse_flags()
    try:
        leftover = FLAGS(argv)
        if len(leftover) > 1:
            raise flags.Error(f"unexpected arguments: {' '.join(leftover[1:])}")
        return config_from_flags()
    finally:
        FLAGS.unparse_flags()


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.WARNING)
    config = config_from_flags()
    model_dir = FLAGS.model_dir or f"runs/{config.dataset}-{datetime.datetime.now():%Y%m%d-%H%M%S}"
    try:
        train_and_evaluate(config, model_dir)
    except (ConfigError, DataError, RunError, NonFiniteLoss, CheckpointWriteError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted; run the same command with --model_dir={model_dir} to resume", file=sys.stderr)
        return 130
    return 0


def run():
    try:
        argv = with_dataset_flagfile(sys.argv)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    app.run(main, argv=argv)


if __name__ == "__main__":
    run()
