"""Training presets as data: one shared ``BASE`` plus sparse per-preset overrides (no torch import).

Each value carries a one-line *why*. Steps, lrs and batch sizes are starting points, not measured optima; the
presets make no accuracy claims. ``TRAINING_CONFIGS`` (in ``configs.model_configs``) holds the resolved dicts.

Key names are the ones users write today (``eval_interval``, ``save_interval``, ``label_smoothing``); the CLI
maps them to ``TrainingArguments`` flags (the ``flag`` of each rule in ``configs.model_configs.TRAINING_KEYS``, the
schema every key here is checked with). Under ``optimizer="muon"``, ``learning_rate`` is Muon's lr for the
hidden weight matrices and ``adamw_lr`` the lr of everything else (embeddings, norms, biases, SSM scalars).
"""

from __future__ import annotations

#: Scheduler names ``transformers.get_scheduler`` accepts (tests check this against ``SchedulerType``).
#: warmup_stable_decay and *_with_min_lr also need ``--lr_scheduler_kwargs`` (e.g. num_decay_steps / min_lr_rate).
SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
              "inverse_sqrt", "cosine_with_min_lr", "cosine_warmup_with_min_lr", "warmup_stable_decay")

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
    # Muon keys (read only when optimizer == "muon")
    "momentum": 0.95,  # Keller Jordan's Muon default
    "nesterov": True,  # Muon's reference update uses Nesterov momentum
    "backend": "newtonschulz5",  # quintic Newton-Schulz: the reference orthogonalization
    "ns_steps": None,  # None = the backend's own iteration count (5 for newtonschulz5)
    "adjust_lr": "original",  # lr x sqrt(max(1, rows/cols)), as in the reference Muon
    "adamw_lr": None,  # None = learning_rate / 10 (optimizers.factory.ADAMW_LR_RATIO); Muon presets set it
    "momentum_warmup_start": 0.85,  # momentum ramps 0.85 -> `momentum`, as in the modded-nanoGPT runs
    "momentum_warmup_steps": 300,  # length of that ramp
    "muon_beta2": None,  # NorMuon second-moment normalisation off: opt in with e.g. 0.95
    "muon_compute_dtype": "auto",  # bf16 where the device multiplies bf16 fast (CUDA, AVX-512 BF16), else fp32
    "ns_method": "auto",  # Gram-space Newton-Schulz where it needs >= 5% fewer FLOPs (Mamba2 in_proj)
    # fused projections (in_proj, gate_up_proj) by model family: per row block with the dt rows on AdamW for pure
    # Mamba2 (won every seed at 400 steps), one matrix as reference Muon for Zamba2 (per-block lost every seed)
    "fused_blocks": "auto",
    # the lrs apply as written at every width until the lr-transfer study sets a measured rule (configs/lr_rule.py)
    "lr_width": None,
}

_MUON = {
    "optimizer": "muon",
    "weight_decay": 0.01,  # decay is scaled by lr, ~10x the AdamW lr: lr*wd stays near AdamW's 3e-5 per step
}

#: name -> sparse overrides of ``BASE`` (``"base"`` names another preset to start from instead).
PRESETS: dict[str, dict] = {
    # -- AdamW --
    "fast": {
        "learning_rate": 5e-4,  # a little hotter to make up for the shorter run
        "max_steps": 50_000,  # half of default
    },
    "default": {},  # BASE as it is: 3e-4 for 100K steps
    "careful": {
        "learning_rate": 1e-4,  # slower and steadier, for when default spikes
        "max_steps": 200_000,  # twice as long to make up for the lower lr
    },
    # -- Muon (hidden matrices) + AdamW (the rest) --
    "muon_fast": {
        **_MUON,
        "learning_rate": 4e-3,  # Muon tolerates ~10x AdamW's lr (spectral-norm-bounded updates)
        "adamw_lr": 5e-4,  # the AdamW side follows the `fast` preset
        "max_steps": 30_000,  # Muon is used for shorter runs than AdamW's 50K
    },
    "muon_default": {
        **_MUON,
        "learning_rate": 3e-3,  # ~10x the AdamW default
        "adamw_lr": 3e-4,  # the AdamW side follows the `default` preset
        "max_steps": 60_000,  # vs AdamW's 100K
    },
    "muon_careful": {
        **_MUON,
        "learning_rate": 2e-3,  # lower for stability on the larger sizes
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
    },
    "muon_demo": {
        "base": "demo",
        **_MUON,
        "learning_rate": 2e-2,  # reference Muon lr for small models
        "adamw_lr": 2e-3,  # same as demo's AdamW lr
    },
}
