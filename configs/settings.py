"""The settings schema: ``MuonArguments`` (one field per Muon knob, named as ``create_muon_optimizer``'s keyword) and
``TRAINING_KEYS`` (the rule of every training-preset key). No torch import: choice lists are read from their owners
when first needed (``configs.rules.Choice``).

Every field of ``MuonArguments`` is, by its one name: a preset key (its default is ``BASE``'s value), a
``mamba-train`` flag (``HfArgumentParser`` reads the dataclass; ``aliases`` keep older flag names working), a
``muon-ablate`` factor (``mamba_trainer.ablate.factors``), a key of ``run_config.json``'s "muon" section and, unless
its metadata says ``factory=False``, a keyword of ``optimizers.create_muon_optimizer`` (``factory_kwargs()``). A new
knob is one field here.

    >>> MuonArguments(beta2=0.95).factory_kwargs()["beta2"]
    0.95
    >>> MuonArguments(momentum=1.5)
    Traceback (most recent call last):
    ...
    ValueError: momentum must be a number in [0, 1), got 1.5

Field metadata: ``help``; ``rule`` (type, bounds, choices: ``configs.rules``); ``aliases`` (older flag names, also
read as preset keys with a note); ``label`` (the sweep's column title); ``sweep`` (a shorter factor name);
``factory`` (False: not an optimizer keyword, the run uses it elsewhere).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, fields

from .errors import ConfigError, unknown_name_error
from .rules import NONNEG, POS, UNIT, Choice, Num, Rule

#: Scheduler names ``transformers.get_scheduler`` accepts (tests check this against ``SchedulerType``).
#: warmup_stable_decay and *_with_min_lr also need ``--lr_scheduler_kwargs`` (e.g. num_decay_steps / min_lr_rate).
SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
              "inverse_sqrt", "cosine_with_min_lr", "cosine_warmup_with_min_lr", "warmup_stable_decay")


def setting(default, rule: Rule, help: str, *, aliases=(), label: str | None = None, sweep: str | None = None,
            factory: bool = True):
    """A ``MuonArguments`` field: its default, rule and help (see the module docstring for the rest)."""
    rule.help = help
    metadata = {"help": help, "rule": rule, "label": label, "sweep": sweep, "factory": factory}
    if aliases:
        metadata["aliases"] = [f"--{name}" for name in aliases]
    return field(default=default, metadata=metadata)


@dataclass
class MuonArguments:
    """The Muon settings (read only under ``optimizer="muon"``); defaults are ``BASE``'s."""

    # None = learning_rate / 10 (optimizers.factory.ADAMW_LR_RATIO); the Muon presets set it
    adamw_lr: float | None = setting(None, Num(float, **POS, nullable=True), label="AdamW-side LR", help=(
        "lr of the AdamW side (embeddings, norms, biases, SSM scalars) under Muon (default: learning_rate / 10)."))
    # Keller Jordan's Muon default
    momentum: float = setting(0.95, Num(float, **UNIT), "Muon momentum after the warmup ramp.", label="Momentum")
    # momentum ramps 0.85 -> `momentum` over 300 steps, as in the modded-nanoGPT runs (MomentumScheduleCallback)
    momentum_warmup_start: float = setting(
        0.85, Num(float, **UNIT), "Muon momentum at step 0, ramped linearly to --momentum.", label="Momentum start",
        sweep="momentum_start", factory=False)
    momentum_warmup_steps: int = setting(300, Num(int, **NONNEG), "Length of the momentum ramp (0 = constant).",
                                         label="Ramp steps", sweep="momentum_ramp", factory=False)
    # Muon's reference update uses Nesterov momentum
    nesterov: bool = setting(True, Choice((True, False)), "Nesterov momentum in Muon.", label="Nesterov")
    # quintic Newton-Schulz: the reference orthogonalization
    backend: str = setting("newtonschulz5", Choice("optimizers.orthogonalize:BACKENDS"),
                           "Orthogonalization backend of the Muon update.", label="Backend")
    # None = the backend's own iteration count (5 for newtonschulz5)
    ns_steps: int | None = setting(None, Num(int, **POS, nullable=True),
                                   "Iterations of the backend (default: its own).", label="NS steps")
    # NorMuon second-moment normalisation off: opt in with e.g. 0.95
    beta2: float | None = setting(None, Num(float, **UNIT, nullable=True), "NorMuon second-moment decay (default: "
                                  "off).", aliases=("muon_beta2",), label="NorMuon β2")
    # lr x sqrt(max(1, rows/cols)), as in the reference Muon
    adjust_lr: str = setting("original", Choice("optimizers.functional:ADJUST_LR"), label="Update scale", help=(
        "Muon update scale: original = sqrt(max(1, rows/cols)) as reference Muon; match_rms_adamw = 0.2 "
        "sqrt(max(rows, cols)), an AdamW-like RMS; none = 1."))
    # bf16 where the device multiplies bf16 faster than fp32 (CUDA; a CPU whose bf16 unit a probe finds faster)
    compute_dtype: str = setting("auto", Choice("optimizers.precision:COMPUTE_DTYPES"), aliases=(
        "muon_compute_dtype",), label="Compute dtype", help=(
        "dtype of the orthogonalization; auto = bfloat16 on CUDA and on CPUs with AVX-512 BF16/AMX where a "
        "30 ms probe finds bf16 GEMMs at least 1.25x faster than fp32; float32 elsewhere."))
    # Gram-space Newton-Schulz where it needs >= 5% fewer FLOPs (Mamba2 in_proj)
    ns_method: str = setting("auto", Choice("optimizers.newton_schulz:METHODS"), label="NS method", help=(
        "Newton-Schulz form: plain, gram (Gram-space), or auto (gram where it needs fewer FLOPs)."))
    # fused projections (in_proj, gate_up_proj) by model family: per row block with the dt rows on AdamW for pure
    # Mamba2 (won every seed at 400 steps), one matrix as reference Muon for Zamba2 (per-block lost every seed)
    fused: str = setting("auto", Choice("optimizers.factory:FUSED_MODES"), aliases=("fused_blocks",),
                         label="Fused blocks", help=(
        "How Muon updates fused projections (Mamba2 in_proj, Zamba2 gate_up_proj): whole = one matrix; per_block = "
        "each row block (z, x, B, C, dt / gate, up) as its own matrix; per_block_dt_adamw = the same with in_proj's "
        "dt rows on AdamW at --adamw_lr; auto = per_block_dt_adamw for Mamba2, whole for the rest (measured: "
        "docs/benchmarks.md)."))
    # opt-in: a default only once the convergence bench says so
    cautious_wd: bool = setting(False, Choice((True, False)), label="Cautious WD", help=(
        "Cautious weight decay: Muon decays only the weight entries its update moves toward zero (Chen et al. 2025)."))
    # the long-run presets state 512, the demo presets 192 (configs/training_presets.py); the rule: configs/lr_rule.py
    lr_width: int | None = setting(None, Num(int, **POS, nullable=True), label="LR width", factory=False, help=(
        "Width at which --learning_rate and --adamw_lr are stated: the run carries them to the model's width by the "
        "rule in configs/lr_rule.py and prints what it used (none: the lrs apply as written). Lrs typed on the command "
        "line are carried only when --lr_width is typed too; without it, as given."))

    def __post_init__(self):
        for f in fields(self):
            value, rule = getattr(self, f.name), f.metadata["rule"]
            try:
                setattr(self, f.name, rule(value))
            except (TypeError, ValueError):
                raise ValueError(f"{f.name} {rule.error(value)}") from None

    def __getattr__(self, name):  # only for names that are not fields: the older names (muon_beta2, ...)
        if name in LEGACY_KEYS:
            return getattr(self, LEGACY_KEYS[name])
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def factory_kwargs(self) -> dict:
        """The settings ``create_muon_optimizer`` / ``MuonFactory`` take, by their names."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.metadata["factory"]}


MUON_FIELDS = fields(MuonArguments)
#: preset key -> default, for ``configs.training_presets.BASE``
MUON_DEFAULTS = {f.name: f.default for f in MUON_FIELDS}
#: older key / flag name -> today's (``--fused_blocks`` is ``--fused``); read with a note in presets files
LEGACY_KEYS = {alias.lstrip("-"): f.name for f in MUON_FIELDS for alias in f.metadata.get("aliases", ())}

#: training key -> rule. The keys are exactly BASE's: resolving the built-in presets fails on a missing or extra key.
TRAINING_KEYS: dict[str, Rule] = {
    "optimizer": Choice("optimizers.factory:OPTIMIZER_TYPES", help=(
        "muon: Muon on the hidden weight matrices and AdamW on the rest; adamw / adamw_8bit: AdamW (8-bit: "
        "bitsandbytes) on every parameter.")),
    "learning_rate": Num(float, **POS, help="Peak lr. Under --optimizer muon: Muon's lr for the hidden weight "
                                            "matrices (--adamw_lr is the lr of the rest)."),
    "weight_decay": Num(float, **NONNEG),
    "max_steps": Num(int, **POS, also=(-1,), help="Optimizer steps of the run; -1 trains --num_train_epochs "
                                                  "epochs instead (the presets set a step count)."),
    "warmup_steps": Num(int, **NONNEG),
    "lr_scheduler_type": Choice(SCHEDULERS),
    "eval_interval": Num(int, **POS, flag="eval_steps"),
    "save_interval": Num(int, **POS, flag="save_steps"),
    "logging_steps": Num(int, **POS),
    "per_device_train_batch_size": Num(int, **POS),
    "gradient_accumulation_steps": Num(int, **POS),
    "max_seq_length": Num(int, **POS, help="Tokens per training sequence."),
    "adam_beta1": Num(float, **UNIT),
    "adam_beta2": Num(float, **UNIT),
    "adam_epsilon": Num(float, **POS),
    "max_grad_norm": Num(float, **NONNEG),
    "label_smoothing": Num(float, **UNIT, flag="label_smoothing_factor"),
    **{f.name: f.metadata["rule"] for f in MUON_FIELDS},
}


def flag_of(key: str) -> str:
    """The mamba-train flag of training key ``key`` (``eval_interval`` -> ``eval_steps``)."""
    return TRAINING_KEYS[key].flag or key


_noted: set[str] = set()


def with_current_names(entry: dict, where: str) -> dict:
    """``entry`` with older key names (``LEGACY_KEYS``) read as today's, each with a one-line note on stderr."""
    out = {}
    for key, value in entry.items():
        new = LEGACY_KEYS.get(key)
        if new is not None:
            if new in entry:
                raise ConfigError(f"{where}: '{key}' and '{new}' are the same key; keep '{new}'")
            note = f"note: {where}: '{key}' is now called '{new}' (read as '{new}'; rename it to drop this note)"
            if note not in _noted:
                _noted.add(note)
                print(note, file=sys.stderr, flush=True)
        out[new or key] = value
    return out


def check_keys(keys, where: str) -> None:
    for key in keys:
        if key not in TRAINING_KEYS:
            raise ConfigError(f"{where}: {unknown_name_error('training key', key, TRAINING_KEYS)}")


def validate_training_config(values: dict, where: str = "training config") -> dict:
    """Check every key is known and every value has the right type and range; return a normalized copy."""
    values = with_current_names(values, where)
    check_keys(values, where)
    missing = sorted(set(TRAINING_KEYS) - set(values))
    if missing:
        raise ConfigError(f"{where}: missing training key(s) {', '.join(missing)}")
    out = {}
    for key, rule in TRAINING_KEYS.items():
        try:
            out[key] = rule(values[key])
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: {key} {rule.error(values[key])}") from None
    return out
