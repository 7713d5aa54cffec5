"""How a preset's learning rates carry from the width they were measured at to a model's width (no torch import).

A preset (or a presets file, or ``muon-ablate --write_preset``) may state its lrs at a width, ``lr_width``; a run
then trains at

    lr(width) = lr(lr_width) * (width / lr_width) ** WIDTH_EXPONENTS[architecture][side]

for each side: ``muon`` (Muon's lr for hidden matrices, under ``adjust_lr``'s scale) and ``adamw`` (the AdamW
side under Muon, or every parameter under AdamW). ``lr_width`` None (every built-in preset today) means the lrs
apply as written at every width.

The exponents are what the lr-transfer study (``bench/lr_transfer.py``, results in ``docs/benchmarks.md``) measures
over proxies at widths 192-1,024. Until it has, they hold the muP-style hypothesis it tests (``MEASURED`` False):
Muon's spectral-norm-scaled update is width-free under ``adjust_lr=original``, and AdamW's lr falls as 1/width.
Depth and horizon are not carried: a proxy sweep at fewer layers or steps says nothing about them.

    >>> carry(0.02, 512, 1024, "zamba2", "muon"), carry(2e-3, 512, 1024, "zamba2", "adamw")
    (0.02, 0.001)
"""

from __future__ import annotations

#: side -> exponent of width, per architecture (``MODEL_CONFIGS[size]["architecture"]``); "default" for the rest
WIDTH_EXPONENTS: dict[str, dict[str, float]] = {
    "default": {"muon": 0.0, "adamw": -1.0},
}
#: whether WIDTH_EXPONENTS come from the study's fit (True) or are the hypothesis it tests (False)
MEASURED = False
SIDES = ("muon", "adamw")


def exponent(architecture: str | None, side: str) -> float:
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    return WIDTH_EXPONENTS.get(architecture or "default", WIDTH_EXPONENTS["default"])[side]


def carry(lr: float, from_width: int, to_width: int, architecture: str | None, side: str) -> float:
    """``lr`` stated at ``from_width``, carried to ``to_width`` by the rule (rounded to 4 significant digits)."""
    return float(f"{lr * (to_width / from_width) ** exponent(architecture, side):.4g}")


def describe(side: str, lr: float, carried: float, from_width: int, to_width: int, architecture: str | None) -> str:
    """One phrase saying how ``carried`` came from ``lr``.

    >>> describe("adamw", 2e-3, 1e-3, 512, 1024, "mamba2")
    '0.002 at width 512 x (1024/512)^-1 = 0.001'
    >>> describe("muon", 0.02, 0.02, 512, 1024, "mamba2")
    '0.02 at width 512, width-free'
    """
    a = exponent(architecture, side)
    if a == 0 or from_width == to_width:
        return f"{lr:g} at width {from_width}, " + ("width-free" if a == 0 else "same width")
    return f"{lr:g} at width {from_width} x ({to_width}/{from_width})^{a:g} = {carried:g}"


def resolve(*, optimizer: str, learning_rate: float, adamw_lr: float | None, lr_width: int | None, width: int | None,
            architecture: str | None, keep: frozenset = frozenset()) -> dict | None:
    """The lrs a run at ``width`` trains with, or None when nothing is carried (no ``lr_width``, or no width).

    ``keep`` names the values given on the command line (``learning_rate``, ``adamw_lr``): used as written.
    Returns {"width", "lr_width", "learning_rate", "adamw_lr", "measured", "reasons": {key: phrase}}.

    >>> r = resolve(optimizer="muon", learning_rate=0.02, adamw_lr=2e-3, lr_width=512, width=640,
    ...             architecture="zamba2", keep=frozenset({"learning_rate"}))
    >>> r["learning_rate"], r["adamw_lr"], r["reasons"]["learning_rate"]
    (0.02, 0.0016, 'as given')
    """
    if lr_width is None or width is None:
        return None
    sides = {"learning_rate": "muon" if optimizer == "muon" else "adamw", "adamw_lr": "adamw"}
    values = {"learning_rate": learning_rate, "adamw_lr": adamw_lr if optimizer == "muon" else None}
    out = {"width": int(width), "lr_width": int(lr_width), "measured": MEASURED, "reasons": {}}
    for key, value in values.items():
        if value is None:
            out[key] = None
        elif key in keep:
            out[key], out["reasons"][key] = value, "as given"
        else:
            out[key] = carry(value, lr_width, width, architecture, sides[key])
            out["reasons"][key] = describe(sides[key], value, out[key], lr_width, width, architecture)
    return out
