"""The recipes: flagfiles of the paper's settings and of the CPU budget, shipped in the package.

`--dataset=X` loads `X.cfg` (`X_clustering.cfg` with `--mode=clustering`);
`--settings=cpu` adds `X_cpu.cfg` on top, then `X_cpu_N.cfg` for
`--num_labeled=N` where one exists (settings tuned for N labels only).
`--recipe=Y` loads Y's flagfiles instead of X's (`--dataset=folder
--recipe=fashion_mnist --settings=cpu`: a folder trained with the Fashion-MNIST
CPU recipe); a folder's own recipe, `folder.cfg`, is a CPU budget already,
whatever `--settings` says. The
recipe goes first, so every flag given by the user, on the command line or
in a `--flagfile` of their own, overrides it. The files live in
`gmvae_keras/flags/` and are read through `importlib.resources`, so an
installed package finds them.
"""

import dataclasses
import importlib.resources
import pathlib

from absl import flags as absl_flags

from gmvae_keras.config import Config, ConfigError

SETTINGS = ("paper", "cpu")


def path(name):
    """The shipped flagfile `<name>.cfg`, or None."""
    resource = importlib.resources.files("gmvae_keras") / "flags" / f"{name}.cfg"
    return pathlib.Path(str(resource)) if resource.is_file() else None


def recipe(dataset, mode="semi_supervised", settings="paper", num_labeled=None):
    """The flagfiles of a recipe, in the order they apply ([] for a dataset without one).

    Raises:
        ConfigError: `settings="cpu"` for a dataset (or mode) without CPU settings.
    """
    name = dataset + ("_clustering" if mode == "clustering" else "")
    base = path(name)
    if base is None:
        return []
    files = [base]
    if settings == "cpu" and dataset != "folder":
        cpu = path(f"{name}_cpu")
        if cpu is None:
            raise ConfigError(
                f"--settings=cpu: there are no CPU settings for {name} (gmvae_keras/flags/{name}_cpu.cfg)"
            )
        files.append(cpu)
        per_label_count = path(f"{name}_cpu_{num_labeled}") if num_labeled is not None else None
        if per_label_count is not None:
            files.append(per_label_count)
    return files


def read(flagfile):
    """`{name: value string}` of the flags a flagfile sets, parsed by absl."""
    args = absl_flags.FlagValues().read_flags_from_files([f"--flagfile={flagfile}"], force_gnu=False)
    return dict(arg[2:].split("=", 1) for arg in args)


def _last_value(args, name):
    value = None
    for i, arg in enumerate(args):
        if arg.startswith(f"--{name}="):
            value = arg.split("=", 1)[1]
        elif arg == f"--{name}" and i + 1 < len(args):
            value = args[i + 1]
    return value


def with_recipe(argv):
    """`argv` with the flagfiles of its recipe inserted first, so its own flags win.

    `--dataset`, `--mode`, `--settings` and `--num_labeled` are read where
    absl would read them: on the command line or in the user's flagfiles,
    the last one winning.

    Raises:
        ConfigError: `--settings=cpu` without CPU settings.
        absl.flags.Error: a user's flagfile that cannot be read.
    """
    args = absl_flags.FlagValues().read_flags_from_files(list(argv[1:]), force_gnu=False)
    dataset = _last_value(args, "dataset")
    if not dataset:
        return list(argv)
    num_labeled = _last_value(args, "num_labeled")
    if dataset == "folder" and num_labeled is not None:
        raise ConfigError("--num_labeled: a folder's labeled/ decides how many images are labeled; drop the flag")
    files = recipe(
        _last_value(args, "recipe") or dataset,
        mode=_last_value(args, "mode") or "semi_supervised",
        settings=_last_value(args, "settings") or "paper",
        num_labeled=int(num_labeled) if num_labeled is not None and num_labeled.isdigit() else None,
    )
    return list(argv[:1]) + [f"--flagfile={flagfile}" for flagfile in files] + list(argv[1:])


def define_flags(flag_values):
    """Defines a flag per `Config` field, plus `--settings` and `--model_dir`, in `flag_values`."""
    for field in dataclasses.fields(Config):
        help_text, choices = field.metadata["help"], field.metadata["choices"]
        if field.type is bool or isinstance(field.default, bool):
            absl_flags.DEFINE_boolean(field.name, field.default, help_text, flag_values=flag_values)
        elif choices and all(isinstance(c, str) for c in choices):
            absl_flags.DEFINE_enum(field.name, field.default, choices, help_text, flag_values=flag_values)
        elif isinstance(field.default, int):
            absl_flags.DEFINE_integer(field.name, field.default, help_text, flag_values=flag_values)
        elif isinstance(field.default, float):
            absl_flags.DEFINE_float(field.name, field.default, help_text, flag_values=flag_values)
        else:
            absl_flags.DEFINE_string(field.name, field.default, help_text, flag_values=flag_values)
    absl_flags.DEFINE_enum(
        "settings",
        "paper",
        SETTINGS,
        "paper: the dataset's flagfile alone; cpu: <dataset>_cpu.cfg on top of it (the CPU-budget settings), "
        "then <dataset>_cpu_<num_labeled>.cfg where it exists.",
        flag_values=flag_values,
    )
    absl_flags.DEFINE_string(
        "recipe",
        None,
        "Load the flagfiles of this dataset's recipe instead of --dataset's (e.g. --dataset=folder "
        "--recipe=fashion_mnist --settings=cpu); the dataset stays --dataset.",
        flag_values=flag_values,
    )
    absl_flags.DEFINE_string(
        "model_dir",
        None,
        "Run directory (default runs/<dataset>-<timestamp>); an existing run there is resumed.",
        flag_values=flag_values,
    )


def config_from_flags(flag_values):
    """The `Config` of parsed flags."""
    return Config(**{field.name: flag_values[field.name].value for field in dataclasses.fields(Config)})


def config_from_args(args):
    """The `Config` that `python -m gmvae_keras.main ARGS` trains with, its recipe included.

    Raises:
        ConfigError: `--settings=cpu` without CPU settings.
        absl.flags.Error: an unknown flag, a bad value or a stray argument.
    """
    flag_values = absl_flags.FlagValues()
    define_flags(flag_values)
    leftover = flag_values(with_recipe(["gmvae_keras.main"] + list(args)))
    if len(leftover) > 1:
        raise absl_flags.Error(f"unexpected arguments: {' '.join(leftover[1:])}")
    return config_from_flags(flag_values)
