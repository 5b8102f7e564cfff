"""User-facing errors: bad input ends with a short message and exit status 2, no traceback."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class InputError(Exception):
    """Bad input from the user (file, value, config): the message names it and says what to do."""


def exit_on_input_error(fn: Callable[..., T]) -> Callable[..., T]:
    """Wrap an entry point so an `InputError` prints `error: ...` and exits with status 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except InputError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)

    return wrapper
