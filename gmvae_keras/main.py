"""Command line: `python -m gmvae_keras.main --dataset=mnist [--flag=value ...]`.

`--dataset=X` first loads the paper's settings for X, `--settings=cpu` the
CPU-budget settings on top (`gmvae_keras.flagfiles`); every flag given by the
user overrides them. `--helpfull` lists every flag.
"""

import datetime
import sys

from gmvae_keras._quiet import quiet_tensorflow

# TensorFlow's C++ start-up notices (no CUDA, oneDNN) hide the progress output; before any import of it.
quiet_tensorflow()

from absl import app, flags, logging  # noqa: E402

from gmvae_keras import flagfiles  # noqa: E402
from gmvae_keras.callbacks import NonFiniteLoss  # noqa: E402
from gmvae_keras.checkpoint import CheckpointWriteError, RunError  # noqa: E402
from gmvae_keras.config import ConfigError  # noqa: E402
from gmvae_keras.data import DataError  # noqa: E402
from gmvae_keras.paths import PathError  # noqa: E402
from gmvae_keras.train import train_and_evaluate  # noqa: E402

FLAGS = flags.FLAGS
flagfiles.define_flags(FLAGS)
# --helpshort lists the key flags of the main module; these are defined in flagfiles.
flags.adopt_module_key_flags(flagfiles)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.WARNING)
    model_dir = FLAGS.model_dir or f"runs/{FLAGS.dataset}-{datetime.datetime.now():%Y%m%d-%H%M%S}"
    try:
        train_and_evaluate(flagfiles.config_from_flags(FLAGS), model_dir)
    except (ConfigError, DataError, PathError, RunError, NonFiniteLoss, CheckpointWriteError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted; run the same command with --model_dir={model_dir} to resume", file=sys.stderr)
        return 130
    return 0


def _one_line_error(error):
    print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
    sys.exit(2)


def parse_flags(argv):
    """absl's flag parsing, a bad value (`--precision=fp8`) refused in one line like every other bad input."""
    try:
        return FLAGS(argv)
    except flags.Error as e:
        _one_line_error(e)


def run():
    try:
        argv = flagfiles.with_recipe(sys.argv)
    except (ConfigError, flags.Error) as e:
        _one_line_error(e)
    app.run(main, argv=argv, flags_parser=parse_flags)


if __name__ == "__main__":
    run()
