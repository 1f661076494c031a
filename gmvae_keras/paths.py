"""Checks of the paths given on a command line, made before anything is written.

Each entry point checks its path arguments with these, so that a file where a
folder is expected (or the reverse), a path under a file, a missing input or an
unwritable folder ends in one line naming the flag, instead of a traceback from
deep inside a run, and nothing is created or replaced first. `os.access`
decides what is writable: it also answers for root, whom permission bits do
not stop.
"""

import functools
import os
from pathlib import Path


class PathError(ValueError):
    """A path argument that cannot be used; the message is one line."""


def _unreachable_is_a_problem(check):
    """A folder on the way that cannot be searched is reported, not raised."""

    @functools.wraps(check)
    def checked(path, *args, **kwargs):
        try:
            return check(Path(path), *args, **kwargs)
        except PermissionError:
            return "cannot be reached: permission denied"

    return checked


def _not_a_folder(path):
    return "is a file, not a folder" if path.is_file() else "is not a folder"


def _creation_problem(path):
    """What stops `path`, which does not exist, from being created; None if nothing."""
    if os.path.lexists(path):  # a link to nothing
        return "is a broken link"
    parent = next((p for p in path.absolute().parents if p.exists()), None)
    if parent is None:
        return None
    if not parent.is_dir():
        return f"cannot be created: {parent} {_not_a_folder(parent)}"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot be created: {parent} is not writable"
    return None


@_unreachable_is_a_problem
def output_dir_problem(path):
    """Why no files can be written into folder `path` (created if missing), or None."""
    if not path.exists():
        return _creation_problem(path)
    if not path.is_dir():
        return _not_a_folder(path)
    if not os.access(path, os.W_OK | os.X_OK):
        return "is not writable"
    return None


@_unreachable_is_a_problem
def output_file_problem(path):
    """Why file `path` cannot be written (or created), or None."""
    if not path.exists():
        return _creation_problem(path)
    if path.is_dir():
        return "is a folder, not a file"
    if not os.access(path, os.W_OK):
        return "is not writable"
    return None


@_unreachable_is_a_problem
def input_dir_problem(path, writable=False):
    """Why folder `path` cannot be read (or, with `writable`, added to), or None."""
    if not path.exists():
        return "does not exist"
    if not path.is_dir():
        return _not_a_folder(path)
    if not os.access(path, os.R_OK | os.X_OK):
        return "is not readable"
    if writable and not os.access(path, os.W_OK | os.X_OK):
        return "is not writable"
    return None


def _checked(problem, path, flag):
    if problem is not None:
        raise PathError(f"{flag}={path} {problem}")
    return Path(path)


def check_output_dir(path, flag):
    """`Path(path)`, or PathError: a file, under a file, or a folder one cannot write in."""
    return _checked(output_dir_problem(path), path, flag)


def check_output_file(path, flag):
    """`Path(path)`, or PathError: a folder, under a file, or not writable."""
    return _checked(output_file_problem(path), path, flag)


def check_input_dir(path, flag, writable=False):
    """`Path(path)`, or PathError: missing, not a folder, unreadable (or, with `writable`, read-only)."""
    return _checked(input_dir_problem(path, writable), path, flag)
