"""`DataError` and the checks of integer arguments shared by the data modules."""

from __future__ import annotations

import numpy as np


class DataError(ValueError):
    """Bad data input: unknown data set, missing or corrupt file, bad split."""


def _one_line(text, limit=300):
    """Collapses `text` to one line of at most `limit` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_integer(name, value, minimum=None):
    """Returns `value` as an `int`, or raises `DataError` naming `name`.

    bool is refused although it is an `int`: `True` as a batch size or seed is
    a mistake, not 1. `minimum` of 0 reads "non-negative", 1 "positive".
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or (minimum is not None and value < minimum):
        if minimum is None:
            kind = "an integer"
        elif minimum == 0:
            kind = "a non-negative integer"
        elif minimum == 1:
            kind = "a positive integer"
        else:
            kind = f"an integer >= {minimum}"
        raise DataError(f"{name} must be {kind}, got {value!r}")
    return int(value)
