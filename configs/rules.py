"""The rules a setting's value must follow: a number in bounds, or one of a list of choices (no torch import).

A rule checks a value (``rule(value)`` returns it normalized or raises ValueError) and says what it allows
(``rule.error(value)``: ``must be <what>, got <value>``), so a bad value reads the same in a presets file, on the
command line and in Python. ``Choice`` holds its owner's list (a tuple, or a registry dict such as
``optimizers.BACKENDS``), or its ``"module:NAME"`` address, read when first needed: a value registered there is
valid here with no second edit, and ``configs`` needs no torch to import the rules.

    >>> Num(float, **UNIT)(0.5), Num(int, **POS)("1e3")
    (0.5, 1000)
    >>> Num(float, **UNIT).error(1.5)
    'must be a number in [0, 1), got 1.5'
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import importlib
import math


class Rule(ABC):
    """``flag``: the mamba-train flag when it has another name than the key; ``help``: the flag's help text (None
    keeps ``TrainingArguments``' own)."""

    nullable = False
    choices: tuple = ()

    def __init__(self, *, flag: str | None = None, help: str | None = None):
        self.flag, self.help = flag, help

    def error(self, value, text: str | None = None) -> str:
        """``must be <what>, got <value>``; ``text``: the value as the user typed it, shown instead of its repr."""
        return f"must be {self.describe()}, got {repr(value) if text is None else text}"

    @abstractmethod
    def describe(self) -> str:
        """What a valid value is, e.g. ``a number in [0, 1)``."""


#: Bounds for ``Num``: > 0, >= 0, and [0, 1)
POS, NONNEG, UNIT = dict(lo=0, lo_open=True), dict(lo=0), dict(lo=0, hi=1, hi_open=True)


class Num(Rule):
    """A float or int with optional bounds; accepts numeric strings (YAML reads ``1e-3`` as a string)."""

    def __init__(self, kind, lo=None, hi=None, *, lo_open=False, hi_open=False, nullable=False, also=(), **shown):
        super().__init__(**shown)
        self.type, self.nullable, self.also = kind, nullable, tuple(also)  # also: values valid outside the bounds
        self.lo, self.hi, self.lo_open, self.hi_open = lo, hi, lo_open, hi_open

    def describe(self) -> str:
        text = "a number" if self.type is float else "an integer"
        if self.lo is not None and self.hi is not None:
            text += f" in {'(' if self.lo_open else '['}{self.lo}, {self.hi}{')' if self.hi_open else ']'}"
        elif self.lo is not None:
            text += f" {'>' if self.lo_open else '>='} {self.lo}"
        text += "".join(f" or {v}" for v in self.also)
        return text + (" or None" if self.nullable else "")

    def __call__(self, value):
        if value is None and self.nullable:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError
        number = float(value)  # ValueError for a non-numeric string
        if not math.isfinite(number):
            raise ValueError
        if self.type is int:
            if not number.is_integer():
                raise ValueError
            number = int(number)
        if number in self.also:
            return number
        if self.lo is not None and (number < self.lo or (self.lo_open and number == self.lo)):
            raise ValueError
        if self.hi is not None and (number > self.hi or (self.hi_open and number == self.hi)):
            raise ValueError
        return number


class Choice(Rule):
    """One of the values of ``owner``: the tuple or registry dict of the module that implements them (or its
    ``"module:NAME"`` address), held, not copied, so a value added there is valid here, and listed by
    ``mamba-train --help``, with no second edit."""

    def __init__(self, owner, **shown):
        super().__init__(**shown)
        self._owner = owner

    @property
    def choices(self) -> tuple:
        if isinstance(self._owner, str):  # read on first use: the owner may import torch
            module, _, name = self._owner.partition(":")
            self._owner = getattr(importlib.import_module(module), name)
        return tuple(self._owner)

    @property
    def type(self):
        return type(self.choices[0])

    def describe(self) -> str:
        return "one of " + ", ".join(map(repr, self.choices))

    def __call__(self, value):
        if value not in self.choices or isinstance(value, bool) != isinstance(self.choices[0], bool):
            raise ValueError
        return value
