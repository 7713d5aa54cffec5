"""Sweep specifications as data: a ``SweepSpec`` (from flags, YAML or JSON) and the variants it expands to.

A sweep is a base run (``--training_preset`` + base flags + a budget) plus variants. A variant is a set of
overrides on the base, either a point of a grid (the product of per-factor value lists) or a named variant.
Each override becomes ``mamba-train`` flags placed after the base flags, so the variant's value wins. The
factors and their values are ``factors``'.

Nothing here imports torch or transformers; the CLI validates the flags with ``mamba-train``'s own parser.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from .factors import (ALIASES, FACTORS, Value, expand_grid, factor, grid_name, grid_slug, parse_grid, parse_value,
                      raw_text, slugify, split_list, valid_factors)

#: Named variants a spec or ``--variant NAME`` may use without spelling out their overrides.
#: ``{base_lr}`` / ``{base_adamw_lr}`` are the base run's resolved values.
BUILTIN_VARIANTS: dict[str, tuple[str, dict[str, str]]] = {
    "no_nesterov": ("No Nesterov", {"nesterov": "false"}),
    "constant_momentum": ("Constant momentum (no ramp)", {"momentum_ramp": "0"}),
    "newtonschulz10": ("NS10 (converged NS)", {"backend": "newtonschulz10"}),
    "polar_express": ("Polar Express", {"backend": "polar_express"}),
    "cayley": ("Cayley (DWH)", {"backend": "cayley"}),
    "conservative_ns": ("Conservative NS (2.8, -3.05, 1.25)", {"backend": "conservative"}),
    "aggressive_ns": ("Aggressive NS (3.8, -5.4, 2.2)", {"backend": "aggressive"}),
    "match_rms_adamw": ("Update scale match_rms_adamw", {"adjust_lr": "match_rms_adamw"}),
    # Diagnostic baselines (seed issue ABL-1/ABL-2): is Muon worth it at this scale?
    "adamw_at_muon_lr": ("AdamW (all params) @ Muon lr {base_lr}", {"optimizer": "adamw", "lr": "{base_lr}"}),
    "adamw_standard": ("AdamW (all params) @ lr {base_adamw_lr}", {"optimizer": "adamw", "lr": "{base_adamw_lr}"}),
}
BASELINES = ("adamw_at_muon_lr", "adamw_standard")

SPEC_KEYS = ("name", "preset", "base_flags", "max_steps", "time_budget", "divergence_factor", "grid", "variants",
             "baselines", "include_base", "base_variant", "heatmap", "only")


@dataclass
class Variant:
    """One run of the sweep: overrides on the base, as factor values and as raw mamba-train flags."""

    name: str
    slug: str
    kind: str  # "base" | "grid" | "named"
    factors: dict[str, Value] = field(default_factory=dict)
    raw_flags: dict[str, str] = field(default_factory=dict)  # other mamba-train flags a named variant sets
    is_base: bool = False

    def flags(self) -> list[str]:
        out: list[str] = []
        for name, v in self.factors.items():
            if v.value is not None:
                out += [f"--{FACTORS[name].flag}", v.flag_text()]
        for flag, text in self.raw_flags.items():
            out += [f"--{flag}", text]
        return out

    def to_json(self) -> dict:
        return {"name": self.name, "slug": self.slug, "kind": self.kind, "is_base": self.is_base,
                "factors": {k: v.text for k, v in self.factors.items()}, "raw_flags": dict(self.raw_flags)}


@dataclass
class SweepSpec:
    """Everything that defines a sweep; stored as ``sweep.json`` so ``--resume_sweep`` can rerun it."""

    name: str = "muon_ablation"
    preset: str = "muon_default"
    base_flags: list[str] = field(default_factory=list)
    max_steps: int | None = None
    time_budget: str | None = None
    divergence_factor: float | None = 4.0
    grid: dict[str, list[str]] = field(default_factory=dict)
    variants: list = field(default_factory=list)  # builtin names or {"name": ..., key: value, ...}
    baselines: bool = False
    include_base: bool = True
    base_variant: str | None = None
    heatmap: list[str] | None = None
    only: list[str] | None = None  # run only these variants (names or folders) and the base

    def to_json(self) -> dict:
        return {k: getattr(self, k) for k in SPEC_KEYS}

    def base_key(self) -> dict:
        """What must match for two sweeps' runs to be comparable (so a folder can be reused)."""
        return {k: getattr(self, k) for k in ("preset", "base_flags", "max_steps", "time_budget", "divergence_factor")}

    def base_argv(self) -> list[str]:
        """mamba-train flags every variant starts from."""
        argv = ["--training_preset", self.preset, *self.base_flags]
        if self.max_steps is not None:
            argv += ["--max_steps", str(self.max_steps)]
        if self.time_budget:
            argv += ["--time_budget", self.time_budget]
            if not any(a == "--schedule_by" or a.startswith("--schedule_by=") for a in self.base_flags):
                # a fixed-time comparison: every variant's LR schedule ends annealed at the budget, however
                # many steps it fits (a faster variant is not cut off mid-schedule at a higher lr)
                argv += ["--schedule_by", "time"]
        if self.divergence_factor:
            argv += ["--divergence_factor", repr(float(self.divergence_factor))]
        if not any(a == "--save_total_limit" or a.startswith("--save_total_limit=") for a in self.base_flags):
            argv += ["--save_total_limit", "1"]  # one checkpoint per variant is enough to resume; saves disk
        return argv


def spec_from_dict(data: dict, source: str = "spec") -> SweepSpec:
    """A SweepSpec from a parsed YAML/JSON mapping; unknown keys fail with the valid ones."""
    if not isinstance(data, dict):
        raise UserError(f"{source}: expected a mapping with keys {', '.join(SPEC_KEYS)}")
    unknown = [k for k in data if k not in SPEC_KEYS]
    if unknown:
        raise UserError(f"{source}: unknown key '{unknown[0]}'; valid keys: {', '.join(SPEC_KEYS)} "
                        f"(factors go under grid:, valid factors: {valid_factors()})")
    spec = SweepSpec()
    for key in SPEC_KEYS:
        if key in data and data[key] is not None:
            setattr(spec, key, data[key])
    base = spec.base_flags
    if isinstance(base, dict):  # {model_size: hybrid-tiny} -> ["--model_size", "hybrid-tiny"]
        spec.base_flags = [item for k, v in base.items() for item in (f"--{k}", raw_text(v))]
    elif isinstance(base, str):
        spec.base_flags = base.split()
    else:
        spec.base_flags = [str(x) for x in base]
    spec.grid = {k: [raw_text(x) for x in split_list(v)] for k, v in (spec.grid or {}).items()} \
        if isinstance(spec.grid, dict) else spec.grid
    if not isinstance(spec.variants, list):
        raise UserError(f"{source}: variants must be a list of names or mappings with a name")
    if spec.max_steps is not None:
        spec.max_steps = int(spec.max_steps)
    if isinstance(spec.heatmap, str):
        spec.heatmap = split_list(spec.heatmap)
    return spec


def load_spec_file(path: str | Path) -> SweepSpec:
    """A sweep from YAML (or JSON when the name ends in .json)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--spec {path}: no such file")
    text = path.read_text()
    try:
        if path.suffix == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:  # noqa: BLE001 - any parse error is the user's file, reported on one line
        raise UserError(f"--spec {path}: cannot parse it ({' '.join(str(exc).split())[:200]})") from None
    return spec_from_dict(data, f"--spec {path}")


def parse_variant_arg(text: str):
    """``--variant "NAME: k=v, k=v"`` -> ``{"name": NAME, k: v}``; ``--variant builtin_name`` stays a string."""
    if ":" not in text:
        return text.strip()
    name, _, body = text.partition(":")
    entry: dict = {"name": name.strip()}
    for item in split_list(body):
        key, eq, value = item.partition("=")
        if not eq:
            raise UserError(f"--variant {text!r}: '{item}' is not key=value; "
                            "e.g. --variant \"No ramp: momentum_ramp=0\"")
        entry[key.strip().lstrip("-")] = value.strip()
    return entry


def normalize(spec: SweepSpec) -> SweepSpec:
    """Check the grid and move one-value factors into the base flags (they are settings, not factors).

    >>> normalize(SweepSpec(grid={"lr": ["1/32"], "momentum": ["7/8", "15/16"]})).base_flags
    ['--learning_rate', '0.03125']
    """
    grid = parse_grid(spec.grid) if spec.grid else {}
    for name, values in grid.items():
        if len(values) == 1:
            if values[0].value is not None:
                spec.base_flags = [*spec.base_flags, f"--{FACTORS[name].flag}", values[0].flag_text()]
            del spec.grid[next(k for k in spec.grid if ALIASES.get(k, k) == name)]
    spec.grid = {ALIASES.get(k, k): [raw_text(x) for x in split_list(v)] for k, v in spec.grid.items()}
    if spec.max_steps is not None and spec.max_steps < 1:
        raise UserError(f"--max_steps {spec.max_steps}: must be at least 1")
    heatmap = [factor(name, " in --heatmap").name for name in spec.heatmap or []]
    for name in heatmap:
        if name not in spec.grid:
            raise UserError(f"--heatmap {name}: not a factor with several values in this sweep's grid "
                            f"({', '.join(spec.grid) or 'none'})")
    if heatmap and not 1 <= len(heatmap) <= 3:
        raise UserError("--heatmap takes one to three factors: X[,Y[,FACET]]")
    spec.heatmap = heatmap or None
    return spec


def build_variants(spec: SweepSpec, *, known_flags: set[str] | None = None,
                   base_values: dict | None = None) -> list[Variant]:
    """The sweep's variants in order: the base (unless excluded), the grid, the named variants, the baselines.

    ``known_flags``: mamba-train flag names a named variant may set besides the factors (None: accept any and let
    mamba-train's parser judge). ``base_values``: the base run's resolved ``lr`` and ``adamw_lr`` for the
    AdamW baselines.
    """
    grid = parse_grid(spec.grid) if spec.grid else {}
    if any(len(v) == 1 for v in grid.values()):
        raise UserError("a one-value grid factor is a base setting: call normalize(spec) first")
    variants: list[Variant] = []
    if spec.include_base:
        variants.append(Variant(f"Base ({spec.preset})", "base", "base", is_base=True))
    if grid:
        for point in expand_grid(grid):
            variants.append(Variant(grid_name(point), grid_slug(point), "grid", dict(point)))
    entries = list(spec.variants) + [b for b in (BASELINES if spec.baselines else ()) if b not in spec.variants]
    fills = {k: _fmt_base(v) for k, v in (base_values or {}).items()}
    fills.setdefault("base_lr", "{base_lr}")
    fills.setdefault("base_adamw_lr", fills["base_lr"])
    for entry in entries:
        variants.append(_named_variant(entry, known_flags, fills))
    if not variants or (len(variants) == 1 and variants[0].kind == "base"):
        raise UserError("nothing to sweep: give a grid (e.g. --lr 1/64,1/32 --momentum 7/8,15/16) or variants "
                        f"(--variant, --baselines); valid factors: {valid_factors()}")
    slugs: dict[str, str] = {}
    for v in variants:
        if v.slug in slugs:
            raise UserError(f"variants '{slugs[v.slug]}' and '{v.name}' would share the folder '{v.slug}'; rename one")
        slugs[v.slug] = v.name
    if spec.only:
        variants = select_variants(variants, spec.only)
    if spec.base_variant is not None:
        match = [v for v in variants if spec.base_variant in (v.name, v.slug)]
        if not match:
            raise UserError(f"--base_variant '{spec.base_variant}' is not a variant of this sweep; valid: "
                            + ", ".join(v.slug for v in variants))
        for v in variants:
            v.is_base = v is match[0]
    elif not any(v.is_base for v in variants):
        variants[0].is_base = True
    return variants


def select_variants(variants: list[Variant], only: list[str]) -> list[Variant]:
    """The variants named in ``only`` (by name or folder, case-insensitive), after the base, which stays as the
    comparison (``--no_base`` drops it). An unknown name is refused with the valid ones.

    >>> vs = [Variant("Base (p)", "base", "base", is_base=True), Variant("NS-1 ns_steps 3", "ns-1_ns_steps_3", "named"),
    ...       Variant("MM-5", "mm-5", "named")]
    >>> [v.slug for v in select_variants(vs, ["mm-5"])]
    ['base', 'mm-5']
    """
    wanted = {w.strip().lower() for w in only if w.strip()}
    known = {key.lower() for v in variants for key in (v.name, v.slug)}
    unknown = sorted(wanted - known)
    if unknown:
        raise UserError(f"--only {unknown[0]}: not a variant of this sweep; valid: "
                        + ", ".join(v.slug for v in variants if v.kind != "base"))
    return [v for v in variants if v.kind == "base" or {v.name.lower(), v.slug.lower()} & wanted]


def _fmt_base(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _named_variant(entry, known_flags, fills: dict) -> Variant:
    if isinstance(entry, str):
        builtin = entry
        if entry not in BUILTIN_VARIANTS:
            raise UserError(f"unknown named variant '{entry}'; built-in: {', '.join(BUILTIN_VARIANTS)}, or write "
                            "'NAME: factor=value, ...'")
        title, overrides = BUILTIN_VARIANTS[entry]
        entry = {"name": title.format(**fills), **{k: v.format(**fills) for k, v in overrides.items()}}
        if "{" in entry["name"]:
            raise UserError(f"variant '{title}' needs the base run's learning rates; they are unknown here")
        slug = builtin
    else:
        slug = None
        if not isinstance(entry, dict) or not entry.get("name"):
            raise UserError(f"a named variant needs a name: {entry!r}")
    name = str(entry["name"])
    where = f" in variant '{name}'"
    factors: dict[str, Value] = {}
    raw: dict[str, str] = {}
    for key, value in entry.items():
        if key == "name":
            continue
        key = str(key).lstrip("-")
        canonical = ALIASES.get(key, key)
        if canonical in FACTORS:
            factors[canonical] = parse_value(FACTORS[canonical], value)
        elif known_flags is None or key in known_flags:
            if key in ("output_dir", "resume", "training_preset"):
                raise UserError(f"--{key}{where}: the sweep sets it; remove it from the variant")
            raw[key] = raw_text(value)
        else:
            raise UserError(f"unknown factor '{key}'{where}; valid factors: {valid_factors()} "
                            "(or any mamba-train flag)")
    return Variant(name, slug or slugify(name), "named", factors, raw)
