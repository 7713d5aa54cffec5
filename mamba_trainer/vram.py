"""``--vram_auto``: choose the per-device batch and gradient accumulation that fit the free GPU memory.

The effective batch of the preset (per-device batch x accumulation x devices) is kept exactly: the per-device
batch is always a divisor of it. ``plan_batch`` is a pure estimate (tested with made-up memory numbers);
``probe_batch`` then checks the plan on the real model with accelerate's ``find_executable_batch_size`` and
steps down on an out-of-memory error.

Memory model, per device, in bytes:
  static      = parameters x (4 weights + 4 gradients + optimizer state bytes per parameter)
  per sample  = seq_len x (activation_factor x hidden x layers x act_bytes + vocab x 12)
The vocab term is the logits, their fp32 upcast and their gradient (3 x 4 bytes per vocabulary entry and
token), which dominates small models with a 50k vocabulary. With gradient checkpointing only each layer's
input is kept (2 x hidden x layers bytes per token in bf16) plus one layer's activations.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .errors import UserError

GIB = 1024**3


@dataclass(frozen=True)
class BatchPlan:
    per_device_batch: int
    grad_accum: int
    gradient_checkpointing: bool
    estimated_bytes: int
    free_bytes: int

    def describe(self) -> str:
        ckpt = ", gradient checkpointing on" if self.gradient_checkpointing else ""
        return (f"--vram_auto: batch {self.per_device_batch} x accumulation {self.grad_accum}{ckpt} "
                f"(estimated {self.estimated_bytes / GIB:.1f} of {self.free_bytes / GIB:.1f} GiB free)")


def divisors_desc(n: int) -> list[int]:
    return [d for d in range(n, 0, -1) if n % d == 0]


def plan_batch(
    free_bytes: int,
    *,
    n_params: int,
    hidden_size: int,
    num_layers: int,
    vocab_size: int,
    seq_len: int,
    effective_batch: int,
    optimizer_state_bytes: float = 8.0,
    activation_factor: float = 48.0,
    act_bytes: int = 2,
    safety: float = 0.85,
) -> BatchPlan:
    """The largest per-device batch dividing ``effective_batch`` whose estimate fits in ``safety x free_bytes``.

    ``effective_batch`` is per device (the preset's batch x accumulation). ``optimizer_state_bytes`` is 8 for
    AdamW (two fp32 moments), about 4-6 for Muon (one momentum for matrices, AdamW for the rest), ~2 for 8-bit.
    """
    if effective_batch < 1 or seq_len < 1:
        raise UserError(f"--vram_auto needs a positive batch and sequence length (got {effective_batch}, {seq_len})")
    budget = int(free_bytes * safety)
    static = int(n_params * (8 + optimizer_state_bytes))
    logits = seq_len * vocab_size * 12
    full = seq_len * activation_factor * hidden_size * num_layers * act_bytes + logits
    checkpointed = seq_len * (2 * hidden_size * num_layers * act_bytes + activation_factor * hidden_size * act_bytes)
    checkpointed += logits
    for use_ckpt, per_sample in ((False, full), (True, checkpointed)):
        for batch in divisors_desc(effective_batch):
            need = static + batch * int(per_sample)
            if need <= budget:
                return BatchPlan(batch, effective_batch // batch, use_ckpt, need, free_bytes)
    raise UserError(
        f"--vram_auto: even one sequence of {seq_len} tokens does not fit in {free_bytes / GIB:.1f} GiB free "
        f"(model and optimizer alone need ~{static / GIB:.1f} GiB); use a smaller --model_size or --max_seq_length"
    )


def next_smaller_divisor(batch: int, effective_batch: int) -> int:
    """The next per-device batch to try after an out-of-memory error (keeps dividing the effective batch)."""
    smaller = [d for d in divisors_desc(effective_batch) if d < batch]
    return smaller[0] if smaller else 0


def probe_batch(try_step, start_batch: int, effective_batch: int) -> int:
    """Run ``try_step(batch)`` (one forward/backward) from ``start_batch`` down until it fits; return the batch.

    Out-of-memory detection and cache clearing are accelerate's (``find_executable_batch_size``).
    """
    from accelerate.utils import find_executable_batch_size

    # accelerate shrinks by 0.9x by default; we step through divisors of the effective batch instead.
    state = {"batch": start_batch}

    def reduce():
        state["batch"] = next_smaller_divisor(state["batch"], effective_batch)
        return state["batch"]

    @find_executable_batch_size(starting_batch_size=start_batch, reduce_batch_size_fn=reduce)
    def run(batch_size):
        state["batch"] = batch_size
        try_step(batch_size)
        return batch_size

    try:
        return run()
    except RuntimeError as exc:
        if "No executable batch size found" in str(exc):
            raise UserError("--vram_auto: even a batch of 1 runs out of GPU memory; use a smaller --model_size "
                            "or --max_seq_length, or --activation_checkpointing true") from None
        raise


def apply_vram_auto(parsed, model, optimizer_type: str) -> str:
    """Resize batch/accumulation for the free GPU memory; returns the line to print."""
    import torch

    t = parsed.training
    if not torch.cuda.is_available():
        return (f"--vram_auto: no CUDA GPU visible; using the preset's batch "
                f"{t.per_device_train_batch_size} x accumulation {t.gradient_accumulation_steps}")
    free, _ = torch.cuda.mem_get_info()
    cfg = model.config
    effective = t.per_device_train_batch_size * t.gradient_accumulation_steps
    # The preset may choose the optimizer, so size its state from the resolved type, not the raw flag.
    state_bytes = 8.0 if optimizer_type == "adamw" else 6.0
    plan = plan_batch(free, n_params=sum(p.numel() for p in model.parameters()), hidden_size=cfg.hidden_size,
                      num_layers=cfg.num_hidden_layers, vocab_size=cfg.vocab_size,
                      seq_len=parsed.data.max_seq_length, effective_batch=effective, optimizer_state_bytes=state_bytes)
    device = torch.device("cuda")
    model.to(device)
    if plan.gradient_checkpointing:
        model.gradient_checkpointing_enable()

    def try_step(batch):
        ids = torch.randint(0, cfg.vocab_size, (batch, parsed.data.max_seq_length), device=device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=t.bf16):
            model(input_ids=ids, labels=ids).loss.backward()
        model.zero_grad(set_to_none=True)

    batch = probe_batch(try_step, plan.per_device_batch, effective)
    model.to("cpu")
    return apply_batch_plan(t, dataclasses.replace(plan, per_device_batch=batch, grad_accum=effective // batch))


def apply_batch_plan(t, plan) -> str:
    """Write a --vram_auto plan into the TrainingArguments the Trainer reads; returns the line to print."""
    t.per_device_train_batch_size = plan.per_device_batch
    t.gradient_accumulation_steps = plan.grad_accum
    # transformers 5 reads activation_checkpointing; gradient_checkpointing is an alias resolved only at init,
    # so setting it alone afterwards would leave checkpointing off
    t.activation_checkpointing = t.gradient_checkpointing = plan.gradient_checkpointing
    return plan.describe()
