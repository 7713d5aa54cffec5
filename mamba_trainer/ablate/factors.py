"""The factors a sweep may vary, how their values are read, and grid expansion.

A factor is one ``mamba-train`` setting (``FACTORS``; ``ALIASES`` for the flag names users type). A value is read
from what the user typed (``parse_value``: fractions and powers are exact, bounds are checked) and kept as typed
for names and labels. A grid maps factors to value lists; ``expand_grid`` gives every combination.

    >>> parse_number("1/32"), parse_number("2^-5"), parse_number("2e-2")
    (0.03125, 0.03125, 0.02)
    >>> [v["lr"].text for v in expand_grid({"lr": ["1/64", "1/32"]})]
    ['1/64', '1/32']

Nothing here imports transformers (the choice lists come from ``optimizers``, which imports torch).
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass
from fractions import Fraction

from optimizers import BACKENDS
from optimizers.factory import OPTIMIZER_TYPES
from optimizers.functional import ADJUST_LR

from ..errors import UserError

# The owners' lists (imported, not copied: a backend registered there is a valid value here)
BACKEND_NAMES = tuple(BACKENDS)
ADJUST_LR_CHOICES = ADJUST_LR
OPTIMIZER_CHOICES = OPTIMIZER_TYPES
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


FACTORS: dict[str, Factor] = {f.name: f for f in (
    Factor("lr", "learning_rate", "number", "LR", "Muon lr of the hidden matrices (AdamW: the lr of all params)",
           positive=True),
    Factor("adamw_lr", "adamw_lr", "number", "AdamW-side LR", "lr of embeddings, norms, biases, SSM scalars under Muon",
           positive=True),
    Factor("momentum", "momentum", "number", "Momentum", "Muon momentum after the ramp", lo=0, hi=1),
    Factor("momentum_start", "momentum_warmup_start", "number", "Momentum start", "momentum at step 0 of the ramp",
           lo=0, hi=1),
    Factor("momentum_ramp", "momentum_warmup_steps", "int", "Ramp steps", "length of the momentum ramp (0 = constant)",
           lo=0),
    Factor("nesterov", "nesterov", "bool", "Nesterov", "Nesterov momentum on/off"),
    Factor("backend", "backend", "choice", "Backend", "orthogonalization backend", choices=BACKEND_NAMES),
    Factor("ns_steps", "ns_steps", "int", "NS steps", "iterations of the backend", lo=1),
    Factor("beta2", "muon_beta2", "number_or_off", "NorMuon β2", "NorMuon second-moment decay (off = plain Muon)",
           lo=0, hi=1),
    Factor("adjust_lr", "adjust_lr", "choice", "Update scale", "Muon update scale mode", choices=ADJUST_LR_CHOICES),
    Factor("optimizer", "optimizer", "choice", "Optimizer", "optimizer type", choices=OPTIMIZER_CHOICES),
    Factor("weight_decay", "weight_decay", "number", "Weight decay", "decoupled weight decay", lo=0),
    Factor("warmup_steps", "warmup_steps", "int", "Warmup steps", "lr warmup steps", lo=0),
    Factor("seed", "seed", "int", "Seed", "model init and data order seed", lo=0),
)}

#: Other names users type for a factor (the mamba-train flag names).
ALIASES = {"learning_rate": "lr", "muon_beta2": "beta2", "momentum_warmup_start": "momentum_start",
           "momentum_warmup_steps": "momentum_ramp"}

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
