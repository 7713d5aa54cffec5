"""How a preset's learning rates carry from the width they were measured at to a model's width (no torch import).

A preset (or a presets file, or ``muon-ablate --write_preset``) may state its lrs at a width, ``lr_width``; a run
then trains at

    lr(width) = lr(lr_width) * (width / lr_width) ** WIDTH_EXPONENTS[architecture][side]

for each side: ``muon`` (Muon's lr for hidden matrices, under ``adjust_lr``'s scale) and ``adamw`` (the AdamW
side under Muon, or every parameter under AdamW). ``lr_width`` None (the smoke presets; a presets file's preset
that sets none) means the lrs apply as written at every width.

The exponents are what the lr-transfer study measured (``bench/lr_transfer.py``; ``bench/results/lr_transfer/
rule.json`` holds its fit, ``docs/benchmarks.md`` the tables): each optimizer's best lr on 3-layer proxies of the
named sizes at widths ``FIT_WIDTHS``, 300 steps of 4 x 256 tokens, fitted as ``c x width^alpha``. The AdamW
side falls faster than muP's 1/width; Muon's lr falls too, more slowly. Architectures the study has not measured
(and any pair not in ``MEASURED``) hold the muP-style hypothesis: Muon width-free, AdamW as 1/width. Depth, horizon
and batch are not carried: a proxy sweep at fewer layers or steps does not say how far they move the lr (the study's
longest horizon bounds the Muon presets from above only: configs/training_presets.py).

    >>> carry(0.02, 512, 1024, "mamba2", "muon"), carry(2e-3, 512, 1024, "mamba2", "adamw")
    (0.01181, 0.0007526)
"""

from __future__ import annotations

#: side -> exponent of width, per architecture (``MODEL_CONFIGS[size]["architecture"]``); "default" for the rest
WIDTH_EXPONENTS: dict[str, dict[str, float]] = {
    # hybrid proxies: Muon 1.3e-2 at 192 -> 7.0e-3 at 512 -> 7.4e-3 at 1,024 (0.005-0.01 within 0.003 nats there);
    # AdamW 6.9e-3 -> 2.0e-3 -> 2.1e-4
    "zamba2": {"muon": -0.36, "adamw": -2.03},
    # Muon 8.2e-2 -> 5.5e-2 -> 2.2e-2 at 1,024 (flat there: 0.02-0.08 within 0.013 nats); AdamW 6.7e-3 -> 1.4e-3 -> 6.4e-4
    "mamba2": {"muon": -0.76, "adamw": -1.41},
    "default": {"muon": 0.0, "adamw": -1.0},  # the hypothesis (muP for AdamW; Muon's spectral-norm update)
}
#: the proxy widths each measured exponent was fitted through: 192 and 512 (the study's first fit, rule.json "fit"),
#: or 192, 512 and 1,024 once 1,024's sweep has a minimum inside its grid (the refit, rule.json "fit_all")
FIT_WIDTHS: dict[tuple[str, str], tuple[int, ...]] = {
    ("zamba2", "muon"): (192, 512, 1024), ("zamba2", "adamw"): (192, 512, 1024),
    ("mamba2", "muon"): (192, 512, 1024), ("mamba2", "adamw"): (192, 512, 1024),
}
#: the proxy widths the rule (as fitted through FIT_WIDTHS) was checked at without seeing them: within 2x of the
#: measured best lr there (rule.json "checks_all"; a test keeps this equal to it)
HELD_OUT_WIDTHS: dict[tuple[str, str], tuple[int, ...]] = {pair: (640,) for pair in FIT_WIDTHS}
#: the (architecture, side) pairs whose exponent the study fitted; the rest are the hypothesis
MEASURED: frozenset = frozenset(FIT_WIDTHS)
#: the study's name for each measured architecture (its rule.json keys are "<family>/<optimizer>")
STUDY_FAMILIES = {"zamba2": "hybrid", "mamba2": "mamba"}
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

    >>> describe("adamw", 2e-3, 7.526e-4, 512, 1024, "mamba2")
    '0.002 at width 512 x (1024/512)^-1.41 = 0.0007526'
    >>> describe("muon", 0.02, 0.02, 512, 1024, None)
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
    (0.02, 0.001271, 'as given')
    """
    if lr_width is None or width is None:
        return None
    sides = {"learning_rate": "muon" if optimizer == "muon" else "adamw", "adamw_lr": "adamw"}
    values = {"learning_rate": learning_rate, "adamw_lr": adamw_lr if optimizer == "muon" else None}
    used = {sides[k] for k, v in values.items() if v is not None and k not in keep}
    out = {"width": int(width), "lr_width": int(lr_width), "reasons": {},
           "measured": bool(used) and all((architecture, side) in MEASURED for side in used),
           "fit_widths": {side: list(FIT_WIDTHS[architecture, side]) for side in sorted(used)
                          if (architecture, side) in MEASURED}}
    for key, value in values.items():
        if value is None:
            out[key] = None
        elif key in keep:
            out[key], out["reasons"][key] = value, "as given"
        else:
            out[key] = carry(value, lr_width, width, architecture, sides[key])
            out["reasons"][key] = describe(sides[key], value, out[key], lr_width, width, architecture)
    return out
