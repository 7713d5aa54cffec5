"""``muon-ablate``: run a Muon ablation sweep (one training run per variant) and write its report.

    muon-ablate --name lr_mom_ns --training_preset muon_demo --model_size hybrid-tiny --max_steps 200 \\
        --lr 1/64,1/32,1/16 --momentum 7/8,15/16 --ns_steps 4,8,16          # 18 grid points + the base
    muon-ablate --training_preset muon_demo --max_steps 200 --time_budget 5m \\
        --variant "NS-1: ns_steps=3" --variant "MM-5: momentum_ramp=0" --variant no_nesterov --baselines
    muon-ablate --spec sweep.yaml                        # the same, from a YAML/JSON file
    muon-ablate --resume_sweep results/lr_mom_ns_20250101_120000   # rerun: finished variants are skipped
    muon-ablate --report results/lr_mom_ns_20250101_120000         # rebuild README, results and plots
    muon-ablate --model_size hybrid-small-standard --proxy_layers 3 --lr 0.01,0.02,0.04 --max_steps 300 \
        --write_preset my_muon --presets_file my_presets.yaml    # lrs at the size's width, written as a preset

Factors (grid axes; comma lists, fractions such as 1/32 or 2^-5 allowed): see ``--help``. Any other flag is a
``mamba-train`` flag shared by every variant (``--model_size``, ``--max_train_examples``, ...). A named variant
(``--variant "NAME: factor=value, flag=value"`` or a built-in name) changes only what it lists.
Exit status: 0 done (diverged variants included), 2 bad input (one line on stderr), 130 interrupted.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from ..errors import USER_ERRORS, UserError, run_cli
from .factors import ALIASES, FACTORS, slugify, split_list, valid_factors
from .spec import BUILTIN_VARIANTS, SweepSpec, build_variants, load_spec_file, normalize, parse_variant_arg

RESULTS_ROOT = Path("results")
#: Options that define a sweep (refused with --resume_sweep, which reruns the recorded one).
_SPEC_OPTIONS = ("spec", "name", "training_preset", "max_steps", "time_budget", "divergence_factor", "variant",
                 "baselines", "no_base", "base_variant", "heatmap", "only", "proxy_layers", "write_preset")
_SWEEP_SETS = ("output_dir", "resume", "run_name")


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UserError(f"{message} (see muon-ablate --help)")


def make_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="muon-ablate", allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter,
                description="Run a Muon ablation sweep: one mamba-train run per variant, then a ranked report.",
                epilog="built-in named variants: " + ", ".join(BUILTIN_VARIANTS) + "\nother flags go to every "
                       "variant's mamba-train command (e.g. --model_size hybrid-tiny --max_train_examples 2000)")
    s = p.add_argument_group("sweep")
    s.add_argument("--spec", help="YAML/JSON sweep file (name, preset, base_flags, grid, variants, ...)")
    s.add_argument("--name", help="sweep name (default: muon_ablation); the folder is results/<name>_<time>/")
    s.add_argument("--training_preset", help="base preset (default: muon_default)")
    s.add_argument("--output", help="sweep folder; an existing one is continued (finished variants skipped)")
    s.add_argument("--resume_sweep", metavar="DIR", help="rerun the sweep recorded in DIR/sweep.json")
    s.add_argument("--report", metavar="DIR", help="only rebuild DIR's README, results and plots from its run folders")
    s.add_argument("--max_steps", type=int, help="steps per variant (upper bound under --time_budget)")
    s.add_argument("--time_budget", help="wall-clock per variant, e.g. 90s, 5m, 1.5h (mamba-train --time_budget; "
                                         "the LR schedule follows the clock, --schedule_by time, unless the base "
                                         "flags say --schedule_by steps)")
    s.add_argument("--divergence_factor", type=float,
                   help="a variant whose loss exceeds F x its best is stopped as diverged (default 4; 0 = off)")
    s.add_argument("--variant", action="append", default=[], metavar="'NAME: k=v, ...'",
                   help="a named variant (repeatable): factors and/or mamba-train flags, or a built-in name")
    s.add_argument("--baselines", action="store_true",
                   help="add the diagnostic AdamW runs: AdamW on all params at the Muon lr, and at the AdamW-side lr")
    s.add_argument("--only", metavar="NAME[,NAME...]",
                   help="run only these of the sweep's variants (names or folder names), with the base; e.g. a "
                        "second --seed for the best few of a --spec")
    s.add_argument("--no_base", action="store_true", help="do not run the base preset as a variant of its own")
    s.add_argument("--base_variant", help="variant (name or folder) the improvement column compares with")
    s.add_argument("--heatmap", metavar="X,Y[,FACET]", help="grid factors of the heatmap (default: chosen)")
    s.add_argument("--proxy_layers", type=int, metavar="N",
                   help="train a proxy of --model_size: its width, heads and state with N layers (a hybrid uses its "
                        "shared block once), to tune lrs for the full size cheaply")
    s.add_argument("--write_preset", metavar="NAME",
                   help="after the sweep, add preset NAME to --presets_file FILE: the best variant's lrs (both "
                        "sides), stated at the trained width, for mamba-train --presets_file FILE --training_preset NAME")
    r = p.add_argument_group("running")
    r.add_argument("--retry_failed", action="store_true", help="rerun diverged/failed variants too")
    r.add_argument("--dry_run", action="store_true", help="print the variants and their commands, run nothing")
    r.add_argument("--max_workers", type=int, help="at most this many variants at once (default: one per GPU group)")
    r.add_argument("--gpus_per_variant", type=int, default=1, help="GPUs each variant sees (default 1)")
    f = p.add_argument_group("factors (comma-separated values; one value = a base setting)")
    for factor in FACTORS.values():
        names = [f"--{factor.name}"] + [f"--{a}" for a, target in ALIASES.items() if target == factor.name]
        extra = f" ({', '.join(factor.choices)})" if factor.choices else ""
        f.add_argument(*names, dest=f"factor_{factor.name}", metavar="V[,V...]", help=factor.help + extra)
    return p


def training_flag_names() -> set[str]:
    from .. import args

    return {fl.name for cls in args.ARG_CLASSES for fl in dataclasses.fields(cls) if fl.init}


def check_base_flags(rest: list[str], known: set[str]) -> list[str]:
    """The leftover command line must be mamba-train flags (with their values)."""
    for i, token in enumerate(rest):
        if not token.startswith("--"):
            if i == 0 or not rest[i - 1].startswith("--"):
                raise UserError(f"unexpected argument '{token}' (see muon-ablate --help)")
            continue
        name = token[2:].split("=", 1)[0]
        if name in _SWEEP_SETS:
            raise UserError(f"--{name}: the sweep sets it for every variant; use --output for the sweep folder")
        if name not in known:
            raise UserError(f"unknown option --{name}: neither a sweep option, a factor ({valid_factors()}) nor a "
                            "mamba-train flag (see muon-ablate --help)")
    return rest


def spec_from_args(ns, rest: list[str]) -> SweepSpec:
    spec = load_spec_file(ns.spec) if ns.spec else SweepSpec()
    for key in ("name", "time_budget", "divergence_factor", "base_variant"):
        if getattr(ns, key) is not None:
            setattr(spec, key, getattr(ns, key))
    if ns.training_preset:
        spec.preset = ns.training_preset
    if ns.max_steps is not None:
        spec.max_steps = ns.max_steps
    if ns.heatmap:
        spec.heatmap = split_list(ns.heatmap)
    for factor in FACTORS.values():
        raw = getattr(ns, f"factor_{factor.name}")
        if raw is not None:
            spec.grid = {k: v for k, v in spec.grid.items() if ALIASES.get(k, k) != factor.name}
            spec.grid[factor.name] = split_list(raw)
    spec.variants = list(spec.variants) + [parse_variant_arg(v) for v in ns.variant]
    spec.baselines = bool(spec.baselines or ns.baselines)
    if ns.no_base:
        spec.include_base = False
    if ns.only:
        spec.only = split_list(ns.only)
    spec.base_flags = list(spec.base_flags) + rest
    return spec


def _canonical(parsed) -> str:
    """The resolved configuration of a run, without where it is written (to spot identical variants)."""
    parts = {k: dataclasses.asdict(getattr(parsed, k)) for k in ("model", "data", "run", "muon")}
    train = {k: v for k, v in parsed.training.to_dict().items() if k not in ("output_dir", "logging_dir", "run_name")}
    return json.dumps([parts, train], sort_keys=True, default=str)


def resolve_variants(spec: SweepSpec) -> list:
    """Build the variants and check every one with mamba-train's own parser before anything runs."""
    from ..args import parse_args

    base_argv = spec.base_argv()
    try:
        base = parse_args(base_argv)
    except USER_ERRORS as exc:
        raise UserError(f"base flags ({' '.join(base_argv)}): {exc}") from None
    if base.model.model_size:
        from configs.model_configs import get_model_config

        get_model_config(base.model.model_size)  # an unknown size fails here, with the valid ones
    from optimizers.factory import ADAMW_LR_RATIO

    # The lr training gives the AdamW side when adamw_lr is None (optimizers.factory), so baselines match it.
    adamw_lr = base.muon.adamw_lr if base.muon.adamw_lr is not None else base.training.learning_rate * ADAMW_LR_RATIO
    base_values = {"base_lr": base.training.learning_rate, "base_adamw_lr": adamw_lr}
    variants = build_variants(spec, known_flags=training_flag_names(), base_values=base_values)
    seen: dict[str, object] = {}
    for v in variants:
        try:
            parsed = parse_args(base_argv + v.flags())
        except USER_ERRORS as exc:
            raise UserError(f"variant '{v.name}': {exc}") from None
        beta2 = v.factors.get("beta2")
        if beta2 is not None and beta2.value is None and parsed.muon.muon_beta2 is not None:
            raise UserError(f"variant '{v.name}': beta2=off cannot undo --muon_beta2 {parsed.muon.muon_beta2:g} of the "
                            "base; drop it from the base flags and sweep it instead (e.g. --beta2 off,0.95)")
        key = _canonical(parsed)
        if key in seen:
            first = seen[key]
            if first.kind == "base" and spec.base_variant is None:
                print(f"note: the base is the same run as '{v.name}'; it counts as the base", flush=True)
                v.is_base = True
                variants.remove(first)
                seen[key] = v
            else:
                print(f"warning: variants '{first.name}' and '{v.name}' resolve to the same settings", flush=True)
        else:
            seen[key] = v
    return variants


def sweep_folder(ns, spec: SweepSpec) -> Path:
    if ns.resume_sweep:
        return Path(ns.resume_sweep)
    if ns.output:
        return Path(ns.output)
    stamp = time.strftime("%Y%m%d_%H%M%S")
    return RESULTS_ROOT / f"{slugify(spec.name)}_{stamp}"


def main(argv: list[str] | None = None) -> int:
    # exit_codes: --help, or mamba-train's parser rejecting a flag (it printed one line), returns its status
    return run_cli(run, list(sys.argv[1:] if argv is None else argv), exit_codes=True)


def run(argv: list[str]) -> int:
    ns, rest = make_parser().parse_known_args(argv)
    if ns.report:
        return report_only(Path(ns.report))
    if ns.resume_sweep:
        given = [k for k in _SPEC_OPTIONS if getattr(ns, k) not in (None, False, [])]
        given += [f.name for f in FACTORS.values() if getattr(ns, f"factor_{f.name}") is not None]
        if given or rest or ns.output:
            extra = given + rest[:1] + (["output"] if ns.output else [])
            raise UserError(f"--resume_sweep reruns the recorded sweep; drop --{extra[0].lstrip('-')} "
                            "(or start a new sweep with --output)")
        recorded = _read_sweep(Path(ns.resume_sweep))
        if recorded is None:
            raise UserError(f"--resume_sweep {ns.resume_sweep}: no sweep.json there; pass a folder made by muon-ablate")
        spec = SweepSpec(**recorded["spec"])
    else:
        spec = spec_from_args(ns, check_base_flags(rest, training_flag_names()))
    sweep_dir = sweep_folder(ns, spec)
    preset_file = _preset_target(ns, spec)
    if ns.proxy_layers is not None:
        from .proxy import proxy_base_flags

        spec.base_flags = proxy_base_flags(spec.base_flags, ns.proxy_layers, sweep_dir)
    spec = normalize(spec)
    variants = resolve_variants(spec)
    from .sweep import execute

    code = execute(spec, variants, sweep_dir, argv, dry_run=ns.dry_run, retry_failed=ns.retry_failed,
                   max_workers=ns.max_workers, gpus_per_variant=ns.gpus_per_variant)
    if code == 0 and ns.write_preset and not ns.dry_run:
        from ..jsonio import read_json
        from .proxy import preset_from_best, write_preset

        entry, line = preset_from_best(read_json(sweep_dir / "results.json"), sweep_dir, ns.write_preset)
        write_preset(preset_file, ns.write_preset, entry)
        with open(sweep_dir / "README.md", "a") as readme:
            readme.write(f"\n## Written preset\n\n{line} (in {preset_file})\n")
        print(f"{line}; written to {preset_file}", flush=True)
    return code


def _preset_target(ns, spec: SweepSpec) -> Path | None:
    """The presets file --write_preset writes to (its --presets_file); a file not there yet is not loaded."""
    if not ns.write_preset:
        return None
    from .proxy import flag_value, without_flag

    target = flag_value(spec.base_flags, "presets_file")
    if target is None:
        raise UserError("--write_preset NAME needs --presets_file FILE: the file the preset is written to")
    if not Path(target).exists():
        spec.base_flags = without_flag(spec.base_flags, "presets_file")
    return Path(target)


def _read_sweep(sweep_dir: Path) -> dict | None:
    from ..jsonio import read_json
    from .runner import SWEEP_FILE

    path = sweep_dir / SWEEP_FILE
    return read_json(path) if path.is_file() else None


def report_only(sweep_dir: Path) -> int:
    from .report import build_report
    from .runner import RUNS_DIR

    if not (sweep_dir / RUNS_DIR).is_dir():
        raise UserError(f"--report {sweep_dir}: no {RUNS_DIR}/ folder there; pass a sweep folder made by muon-ablate")
    data = build_report(sweep_dir)
    print(f"report: {sweep_dir / 'README.md'} (best: {data['best_variant']})")
    return 0
