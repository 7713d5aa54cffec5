"""The factors a sweep may vary, how their values are read, and grid expansion.

A factor is one ``mamba-train`` setting (``FACTORS``; ``ALIASES`` for the flag names users type). A value is read
from what the user typed (``parse_value``: fractions and powers are exact, bounds are checked) and kept as typed
for names and labels. A grid maps factors to value lists; ``expand_grid`` gives every combination.

    >>> parse_number("1/32"), parse_number("2^-5"), parse_number("2e-2")
    (0.03125, 0.03125, 0.02)
    >>> [v["lr"].text for v in expand_grid({"lr": ["1/64", "1/32"]})]
    ['1/64', '1/32']

The factors are derived from the settings schema (``configs.settings``): every field of ``MuonArguments`` is a factor
with its rule's bounds or choices, so a new Muon setting is a factor with no edit here. Nothing here imports
transformers (reading the choice lists imports ``optimizers``, so torch).
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass
from fractions import Fraction

from configs.settings import LEGACY_KEYS, MUON_FIELDS, TRAINING_KEYS

from ..errors import UserError

_TRUE, _FALSE = ("true", "on", "yes", "1"), ("false", "off", "no", "0")
_OFF = ("off", "none", "null")


@dataclass(frozen=True)
class Factor:
    """One thing a sweep can vary: the ``mamba-train`` flag it sets, how its values are read, its label."""

    name: str
    flag: str  # mamba-train flag (without dashes)
    kind: str  # "number" | "int" | "bool" | "choice" | "number_or_off"
    label: str  # axis / column label
    help: str
    choices: tuple[str, ...] = ()
    lo: float | None = None  # inclusive lower bound
    hi: float | None = None  # exclusive upper bound
    positive: bool = False


def factor_of(name: str, flag: str, rule, label: str, help: str) -> Factor:
    """The factor ``name`` that sets ``--flag``, its kind, choices and bounds read from the setting's ``rule``."""
    if rule is None:  # a flag without a preset rule (--seed): a whole number >= 0
        return Factor(name, flag, "int", label, help, lo=0)
    if rule.choices:
        kind = "bool" if rule.type is bool else "choice"
        return Factor(name, flag, kind, label, help, choices=() if kind == "bool" else tuple(map(str, rule.choices)))
    kind = "int" if rule.type is int else "number_or_off" if rule.nullable else "number"
    positive = rule.lo == 0 and rule.lo_open
    return Factor(name, flag, kind, label, help, lo=None if positive else rule.lo,
                  hi=rule.hi if rule.hi_open else None, positive=positive)


def _muon_factor(fld) -> Factor:
    meta = fld.metadata
    return factor_of(meta["sweep"] or fld.name, fld.name, meta["rule"], meta["label"] or fld.name, meta["help"])


def _other(name: str, flag: str, key: str | None, label: str, help: str) -> Factor:
    return factor_of(name, flag, TRAINING_KEYS[key] if key else None, label, help)


#: Every Muon setting (``configs.settings.MuonArguments``: a field there is a factor here), and a few others.
FACTORS: dict[str, Factor] = {f.name: f for f in (
    _other("lr", "learning_rate", "learning_rate", "LR", "Muon lr of the hidden matrices (AdamW: the lr of all "
                                                         "params)"),
    *map(_muon_factor, MUON_FIELDS),
    _other("optimizer", "optimizer", "optimizer", "Optimizer", "optimizer type"),
    _other("weight_decay", "weight_decay", "weight_decay", "Weight decay", "decoupled weight decay"),
    _other("warmup_steps", "warmup_steps", "warmup_steps", "Warmup steps", "lr warmup steps"),
    _other("seed", "seed", None, "Seed", "model init and data order seed"),
)}

#: Other names users type for a factor: the mamba-train flag names (and their older names).
ALIASES = {"learning_rate": "lr", **{f.flag: f.name for f in FACTORS.values() if f.flag != f.name},
           **{old: next(f.name for f in FACTORS.values() if f.flag == new) for old, new in LEGACY_KEYS.items()}}
# The owners' lists, as the factors read them (a backend registered there is a valid value here)
BACKEND_NAMES = FACTORS["backend"].choices
ADJUST_LR_CHOICES = FACTORS["adjust_lr"].choices
OPTIMIZER_CHOICES = FACTORS["optimizer"].choices


def valid_factors() -> str:
    return ", ".join(FACTORS)


def factor(name: str, where: str = "") -> Factor:
    """The factor called ``name`` (or one of its aliases); an unknown name lists the valid ones."""
    key = ALIASES.get(str(name).lstrip("-"), str(name).lstrip("-"))
    if key not in FACTORS:
        raise UserError(f"unknown factor '{name}'{where}; valid factors: {valid_factors()}")
    return FACTORS[key]


_POWER = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(?:\^|\*\*)\s*(-?\d+)\s*$")


def parse_number(text) -> float:
    """A float from ``0.02``, ``2e-2``, ``1/32`` or ``2^-5`` (also ``2**-5``), exact through ``Fraction``."""
    return float(parse_fraction(text))


def parse_fraction(text) -> Fraction:
    if isinstance(text, bool):
        raise UserError(f"'{text}' is not a number")
    if isinstance(text, (int, float)):
        if not math.isfinite(text):
            raise UserError(f"'{text}' is not a finite number")
        return Fraction(text).limit_denominator(10**12) if isinstance(text, float) else Fraction(text)
    s = str(text).strip()
    power = _POWER.match(s)
    try:
        if power:
            return Fraction(power.group(1)) ** int(power.group(2))
        return Fraction(s)
    except (ValueError, ZeroDivisionError):
        raise UserError(f"cannot read '{text}' as a number; write 0.02, 2e-2, 1/32 or 2^-5") from None


@dataclass(frozen=True)
class Value:
    """A factor value as typed (``text``, used in names and labels) and as passed to mamba-train (``value``)."""

    text: str
    value: object  # float | int | bool | str | None (None = flag left out)

    def flag_text(self) -> str:
        if isinstance(self.value, bool):
            return "true" if self.value else "false"
        return repr(self.value) if isinstance(self.value, float) else str(self.value)

    def sort_key(self):
        return (0, self.value, "") if isinstance(self.value, (int, float)) and not isinstance(self.value, bool) \
            else (1, 0, str(self.value))


def raw_text(raw) -> str:
    """A raw value (YAML scalar or typed text) as text: booleans as true/false, others stripped."""
    if isinstance(raw, bool):
        return "true" if raw else "false"
    return str(raw).strip()


def parse_value(f: Factor, raw) -> Value:
    """Read one value of factor ``f``; bad values raise a one-line UserError naming the factor."""
    text = raw_text(raw)
    where = f"factor {f.name}"
    if f.kind == "bool":
        low = text.lower()
        if low not in _TRUE + _FALSE:
            raise UserError(f"{where}: '{text}' is not on/off; write true/false, on/off or yes/no")
        return Value(text, low in _TRUE)
    if f.kind == "choice":
        if text not in f.choices:
            if f.name == "backend" and re.search(r"[\d(\[]", text):
                raise UserError(f"{where}: '{text}': mamba-train's --backend takes a backend name, not NS "
                                "coefficients; "
                                f"valid: {', '.join(f.choices)} (conservative/aggressive are the custom sets)")
            raise UserError(f"{where}: unknown value '{text}'; valid: {', '.join(f.choices)}")
        return Value(text, text)
    if f.kind == "number_or_off" and (raw is False or raw is None or text.lower() in _OFF + ("false",)):
        return Value(text, None)
    number = parse_fraction(raw)
    if f.kind == "int":
        if number.denominator != 1:
            raise UserError(f"{where}: '{text}' is not a whole number")
        value: object = int(number)
    else:
        value = float(number)
    if f.positive and number <= 0:
        raise UserError(f"{where}: '{text}' must be positive")
    if f.lo is not None and number < f.lo or f.hi is not None and number >= f.hi:
        bounds = f"[{f.lo:g}, {f.hi:g})" if f.hi is not None else f">= {f.lo:g}"
        raise UserError(f"{where}: '{text}' is out of range {bounds}")
    return Value(text, value)


def split_list(raw) -> list:
    """``"1/64,1/32"`` or a YAML list -> the items (an empty list stays empty)."""
    if isinstance(raw, (list, tuple)):
        return list(raw)
    return [item for item in (part.strip() for part in str(raw).split(",")) if item]


def parse_grid(grid: dict) -> dict[str, list[Value]]:
    """``{factor: [raw values]}`` -> ``{factor name: [Value]}``; unknown factors, empty lists and repeats fail."""
    if not isinstance(grid, dict):
        raise UserError(f"grid must map factor names to value lists, got {type(grid).__name__}; "
                        f"valid factors: {valid_factors()}")
    out: dict[str, list[Value]] = {}
    for name, raw in grid.items():
        f = factor(name, " in the grid")
        if f.name in out:
            raise UserError(f"factor {f.name} appears twice in the grid (as '{name}' too)")
        values = [parse_value(f, item) for item in split_list(raw)]
        if not values:
            raise UserError(f"empty grid for factor {f.name}: give at least one value, e.g. --{f.name} 1/64,1/32; "
                            f"valid factors: {valid_factors()}")
        seen: dict = {}
        for v in values:
            if v.value in seen and type(v.value) is type(seen[v.value].value):
                raise UserError(f"factor {f.name}: '{v.text}' repeats '{seen[v.value].text}'")
            seen[v.value] = v
        out[f.name] = values
    return out


def expand_grid(grid: dict) -> list[dict[str, Value]]:
    """Every combination of the grid's values, first factor slowest (as the values were listed)."""
    parsed = grid if all(isinstance(v, list) and all(isinstance(x, Value) for x in v) for v in grid.values()) \
        else parse_grid(grid)
    names = list(parsed)
    return [dict(zip(names, combo)) for combo in itertools.product(*(parsed[n] for n in names))]


def slugify(text: str) -> str:
    """A folder name: letters, digits, ``.``, ``_`` and ``-`` only.

    >>> slugify("LR 1/32, Momentum 7/8")
    'lr_1-32_momentum_7-8'
    """
    s = re.sub(r"[^a-z0-9._-]+", "_", str(text).lower().replace("/", "-")).strip("_.-")
    return re.sub(r"_+", "_", s) or "variant"


def grid_slug(point: dict[str, Value]) -> str:
    return "__".join(f"{name}_{slugify(v.text)}" for name, v in point.items())


def grid_name(point: dict[str, Value]) -> str:
    return ", ".join(f"{FACTORS[name].label} {v.text}" for name, v in point.items())
