"""Training presets as data: one shared ``BASE`` plus sparse per-preset overrides (no torch import).

Each value carries a one-line *why*. Steps, lrs and batch sizes are starting points, not measured optima; the
presets make no accuracy claims. ``TRAINING_CONFIGS`` (in ``configs.model_configs``) holds the resolved dicts.

Key names are the ones users write today (``eval_interval``, ``save_interval``, ``label_smoothing``); the CLI
maps them to ``TrainingArguments`` flags (the ``flag`` of each rule in ``configs.settings.TRAINING_KEYS``, the
schema every key here is checked with). The Muon keys are the fields of ``configs.settings.MuonArguments``, which
hold their defaults. Under ``optimizer="muon"``, ``learning_rate`` is Muon's lr for the
hidden weight matrices and ``adamw_lr`` the lr of everything else (embeddings, norms, biases, SSM scalars).
"""

from __future__ import annotations

from .settings import MUON_DEFAULTS, SCHEDULERS  # noqa: F401  (SCHEDULERS: re-exported, its old home)

BASE: dict = {
    "optimizer": "adamw",  # the well-known baseline; Muon presets opt in
    "learning_rate": 3e-4,  # the usual AdamW lr for 50M-350M decoders
    "weight_decay": 0.1,  # GPT-3 / nanoGPT value for decoupled decay
    "max_steps": 100_000,  # overridden per preset
    "warmup_steps": 2_000,  # ~2% of a 100K run: long enough for Adam's second moments to settle
    "lr_scheduler_type": "cosine",  # needs no extra kwargs and tolerates a --max_steps override
    "eval_interval": 2_000,  # eval cost stays < 1% of a run
    "save_interval": 5_000,  # checkpoints every few hours on one GPU; resume loses at most that much
    "logging_steps": 10,  # dense enough for loss curves, cheap to write
    "per_device_train_batch_size": 8,  # fits a 112M hybrid at 1,024 tokens on a 16 GB GPU
    "gradient_accumulation_steps": 4,  # 32 sequences x 1,024 = 32K tokens per optimizer step
    "max_seq_length": 1_024,  # long enough for a math problem plus a worked solution
    "adam_beta1": 0.9,  # standard first-moment decay (also the AdamW side under Muon)
    "adam_beta2": 0.95,  # LLM-pretraining value: reacts faster to loss spikes than 0.999
    "adam_epsilon": 1e-8,  # PyTorch default
    "max_grad_norm": 1.0,  # clip rare spikes; inactive in normal steps
    "label_smoothing": 0.0,  # off: smoothing distorts the likelihood we evaluate with
    # Muon keys (read only when optimizer == "muon"): the defaults, and why, are the fields of MuonArguments
    **MUON_DEFAULTS,
}

#: the long-run presets state their lrs at width 512 (hybrid-small, mamba-small: where these usual values sit); every
#: other size gets them carried by the measured width rule (configs/lr_rule.py), printed at start, in run_config.json
_AT_512 = {"lr_width": 512}

_MUON = {
    "optimizer": "muon",
    "weight_decay": 0.01,  # decay is scaled by lr (decoupled); the value every Muon run of the lr study used
}

#: The Muon presets' Muon lr sits at or below the hybrid's best at the longest horizon measured (width 192, 4,800
#: steps of 4 x 256 tokens: 1.4e-3, carried to 512 by the width rule: 9.8e-4). Muon's best lr fell with every
#: horizon step and with the larger batch on both families (bench/lr_transfer.py), and these presets run 6-25x
#: longer with 32x the tokens a step, so the right lr is at most that; how much lower is not measured (the hybrid's
#: fall flattened: 1.7e-3 at 2,400 steps; docs/benchmarks.md, "The long-run presets against the longest horizon
#: measured"; tests/test_lr_rule.py keeps them under it). Mamba2's bound (2,400 steps) is 4.8e-3, 5x above them.

#: name -> sparse overrides of ``BASE`` (``"base"`` names another preset to start from instead).
PRESETS: dict[str, dict] = {
    # -- AdamW --
    "fast": {
        **_AT_512,
        "learning_rate": 5e-4,  # a little hotter to make up for the shorter run
        "max_steps": 50_000,  # half of default
    },
    "default": {**_AT_512},  # BASE as it is: 3e-4 for 100K steps
    "careful": {
        **_AT_512,
        "learning_rate": 1e-4,  # slower and steadier, for when default spikes
        "max_steps": 200_000,  # twice as long to make up for the lower lr
    },
    # -- Muon (hidden matrices) + AdamW (the rest) --
    "muon_fast": {
        **_MUON,
        **_AT_512,
        "learning_rate": 9e-4,  # the hottest Muon preset, just under the measured bound (above)
        "adamw_lr": 5e-4,  # the AdamW side follows the `fast` preset
        "max_steps": 30_000,  # Muon is used for shorter runs than AdamW's 50K
    },
    "muon_default": {
        **_MUON,
        **_AT_512,
        "learning_rate": 7.5e-4,  # lower than muon_fast's, for twice its steps
        "adamw_lr": 3e-4,  # the AdamW side follows the `default` preset
        "max_steps": 60_000,  # vs AdamW's 100K
    },
    "muon_careful": {
        **_MUON,
        **_AT_512,
        "learning_rate": 5e-4,  # lower again, for four times muon_fast's steps
        "adamw_lr": 1e-4,  # the AdamW side follows the `careful` preset
        "max_steps": 120_000,  # vs AdamW's 200K
    },
    # -- CPU: tests and a few-minute demo of a *-tiny model --
    "smoke": {
        "learning_rate": 1e-3,  # tiny models move visibly in a handful of steps
        "max_steps": 6,  # seconds on a CPU: enough to cross two eval/save points
        "warmup_steps": 2,  # a warmup that ends inside the run
        "eval_interval": 3,  # eval twice
        "save_interval": 3,  # checkpoint twice: exercises resume and rotation
        "logging_steps": 1,  # every step, so tests can read metrics.jsonl
        "per_device_train_batch_size": 2,  # smallest batch that still tests batching
        "gradient_accumulation_steps": 1,  # one micro-batch per step keeps it fast
        "max_seq_length": 64,  # short sequences keep each step well under a second
        "momentum_warmup_steps": 3,  # unused under AdamW; keeps muon_smoke's ramp inside the run
    },
    "muon_smoke": {
        "base": "smoke",
        **_MUON,
        "learning_rate": 2e-2,  # reference Muon lr for small models
        "adamw_lr": 1e-3,  # same as smoke's AdamW lr
    },
    "demo": {
        "learning_rate": 2e-3,  # small models train well at a higher AdamW lr
        "max_steps": 200,  # ~3-5 minutes of a *-tiny model on 2 CPU cores
        "warmup_steps": 20,  # 10% of the run
        "eval_interval": 50,  # four evals on the curve
        "save_interval": 100,  # two checkpoints
        "logging_steps": 10,  # 20 points on the loss curve
        "per_device_train_batch_size": 8,  # 8 x 256 tokens: ~1-1.5 s/step for the tiny sizes on 2 cores
        "gradient_accumulation_steps": 1,  # no accumulation: every step is an update
        "max_seq_length": 256,  # fits a bundled math problem and its solution
        "momentum_warmup_steps": 30,  # muon_demo's ramp: 15% of the run
        "lr_width": 192,  # the demo lrs were tuned on the 192-wide *-tiny sizes
    },
    "muon_demo": {
        "base": "demo",
        **_MUON,
        "learning_rate": 2e-2,  # reference Muon lr for small models
        "adamw_lr": 2e-3,  # same as demo's AdamW lr
    },
}
