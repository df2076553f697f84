"""One-line errors, and the checks that produce them for every config dataclass.

Everything a user can get wrong (a flag, a field of a JSON file, a damaged run file, a folder that
belongs to something else) is reported by raising a subclass of ``UserError`` whose message names
the field, flag or file and says what was expected. ``minideepseek``'s command line prints such an
error as one line (``cli.main``); a traceback there means a bug.

Each config dataclass (``ModelConfig``, ``TrainConfig``, ``GRPOConfig``, ``R1Config``) checks its
fields in one ``validate`` method with a ``Fields`` checker, so every check is written once:

    check = Fields(self, TrainError)
    check.integer("steps", minimum=1)      # an int, not a bool, not 2.0, not "2"
    check.number("lr", above=0)            # a finite int or float: NaN and inf are refused
    check.boolean("compile")               # True or False, not "false"
    check.choice("device", ("auto", "cpu", "cuda"))

JSON makes the strictness matter: ``bool("false")`` is True, and ``NaN > 0`` is False, so a check
written as ``if value <= 0`` lets NaN through.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any


class UserError(ValueError):
    """Bad input, not a bug: the message (one line) names what is wrong and what was expected."""


def is_integer(value: Any) -> bool:
    """An int that is not a bool (JSON ``true`` must not count as 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite int or float that is not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class Fields:
    """Checks the fields of one object, raising ``error`` with "Owner.field must be ..., got ..."."""

    def __init__(self, owner: Any, error: type[Exception] = UserError):
        self.owner, self.error = owner, error
        self.prefix = type(owner).__name__

    def fail(self, name: str, expected: str, value: Any) -> None:
        raise self.error(f"{self.prefix}.{name} must be {expected}, got {value!r}")

    def integer(self, name: str, minimum: int | None = None, maximum: int | None = None,
                optional: bool = False) -> None:
        value = getattr(self.owner, name)
        if value is None and optional:
            return
        expected = {None: "an integer", 0: "a non-negative integer", 1: "a positive integer"}.get(
            minimum, f"an integer >= {minimum}")
        if maximum is not None:
            expected = f"an integer between {minimum} and {maximum}"
        if not is_integer(value) or (minimum is not None and value < minimum) or \
                (maximum is not None and value > maximum):
            self.fail(name, expected, value)

    def number(self, name: str, minimum: float | None = None, maximum: float | None = None,
               above: float | None = None, below: float | None = None, optional: bool = False) -> None:
        """A finite number; ``minimum``/``maximum`` are inclusive bounds, ``above``/``below`` strict ones."""
        value = getattr(self.owner, name)
        if value is None and optional:
            return
        bounds = [f">= {minimum}" if minimum is not None else "", f"> {above}" if above is not None else "",
                  f"<= {maximum}" if maximum is not None else "", f"< {below}" if below is not None else ""]
        expected = " and ".join(["a finite number", *filter(None, bounds)]).replace(" and ", " ", 1)
        if not is_number(value) or (minimum is not None and value < minimum) or \
                (above is not None and value <= above) or (maximum is not None and value > maximum) or \
                (below is not None and value >= below):
            self.fail(name, expected, value)

    def boolean(self, name: str) -> None:
        value = getattr(self.owner, name)
        if not isinstance(value, bool):
            self.fail(name, "true or false (a JSON boolean, not a string or a number)", value)

    def choice(self, name: str, options: Iterable[Any]) -> None:
        value, options = getattr(self.owner, name), list(options)
        if isinstance(value, bool) or value not in options:  # True == 1 must not pass as 1
            self.fail(name, f"one of {options}", value)

    def text(self, name: str, optional: bool = False) -> None:
        value = getattr(self.owner, name)
        if not (isinstance(value, str) or (optional and value is None)):
            self.fail(name, "a string" + (" or null" if optional else ""), value)
