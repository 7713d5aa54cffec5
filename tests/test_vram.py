"""--vram_auto sizing: the pure estimate with made-up memory numbers, and the out-of-memory step-down."""

import pytest

from configs.model_configs import get_model_config
from configs.model_sizes import TOKENIZER_VOCAB_SIZES, padded_vocab_size
from mamba_trainer.errors import UserError
from mamba_trainer.vram import GIB, next_smaller_divisor, plan_batch, probe_batch

# hybrid-small-standard's shape (112M target parameters, hidden 640, 25 layers) and its padded gpt-neox vocabulary
# (50,304 rows), as train.py passes them to plan_batch (it counts the built model's parameters, within 5% of params).
_SIZE = get_model_config("hybrid-small-standard")
MODEL = dict(n_params=_SIZE["params"], hidden_size=_SIZE["config"]["hidden_size"],
             num_layers=_SIZE["config"]["num_hidden_layers"],
             vocab_size=padded_vocab_size(TOKENIZER_VOCAB_SIZES[_SIZE["tokenizer"]]), seq_len=1024)


def test_plan_keeps_effective_batch_and_grows_with_memory():
    plans = [plan_batch(gib * GIB, effective_batch=32, **MODEL) for gib in (8, 16, 24, 80)]
    for plan in plans:
        assert plan.per_device_batch * plan.grad_accum == 32
        assert plan.estimated_bytes <= 0.85 * plan.free_bytes
    batches = [p.per_device_batch for p in plans]
    assert batches == sorted(batches) and batches[0] < batches[-1]
    roomy = plan_batch(1024 * GIB, effective_batch=32, **MODEL)
    assert (roomy.per_device_batch, roomy.grad_accum, roomy.gradient_checkpointing) == (32, 1, False)


def test_plan_picks_largest_fitting_divisor():
    plan = plan_batch(16 * GIB, effective_batch=24, **MODEL)
    # the next larger divisor of 24 must not fit, or the plan was not the largest
    larger = [d for d in (1, 2, 3, 4, 6, 8, 12, 24) if d > plan.per_device_batch]
    if larger:
        tighter = plan_batch(16 * GIB, effective_batch=larger[0], **MODEL)
        assert tighter.per_device_batch < larger[0] or tighter.gradient_checkpointing


def test_gradient_checkpointing_when_one_sequence_does_not_fit():
    big = dict(MODEL, seq_len=4096)
    plan = plan_batch(6 * GIB, effective_batch=8, **big)
    assert plan.gradient_checkpointing
    assert plan.per_device_batch * plan.grad_accum == 8


def test_too_little_memory_is_one_line():
    with pytest.raises(UserError) as err:
        plan_batch(1 * GIB, effective_batch=8, **dict(MODEL, n_params=400_000_000))
    assert "\n" not in str(err.value) and "--max_seq_length" in str(err.value)


def test_next_smaller_divisor():
    assert next_smaller_divisor(32, 32) == 16
    assert next_smaller_divisor(12, 24) == 8
    assert next_smaller_divisor(1, 24) == 0


@pytest.fixture
def no_gc(monkeypatch):
    """accelerate runs gc.collect() after each out-of-memory error: about a second each with torch and transformers
    loaded. What is tested here is the stepping down, not the collection."""
    import gc

    monkeypatch.setattr(gc, "collect", lambda *args: 0)


def test_probe_steps_down_through_divisors_on_oom(no_gc):
    tried = []

    def fake_step(batch):
        tried.append(batch)
        if batch > 6:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    assert probe_batch(fake_step, 24, 24) == 6
    assert tried == [24, 12, 8, 6]


def test_probe_gives_up_with_one_line(no_gc):
    def always_oom(batch):
        raise RuntimeError("CUDA out of memory.")

    with pytest.raises(UserError) as err:
        probe_batch(always_oom, 4, 4)
    assert "\n" not in str(err.value)


def test_probe_reraises_other_errors(no_gc):
    def broken(batch):
        raise ValueError("shape mismatch")

    with pytest.raises(ValueError, match="shape mismatch"):
        probe_batch(broken, 4, 4)


@pytest.mark.integration
def test_a_plan_with_checkpointing_turns_it_on_in_the_trainer(tmp_path):
    """apply_batch_plan writes the plan where transformers 5 reads it: the Trainer then trains with activation
    checkpointing on (setting only the old gradient_checkpointing alias after init would leave it off)."""
    import dataclasses

    import torch
    from transformers import Trainer, TrainingArguments

    from mamba_trainer.models import build_model
    from mamba_trainer.vram import apply_batch_plan

    big = plan_batch(6 * GIB, effective_batch=8, **dict(MODEL, seq_len=4096))
    plan = dataclasses.replace(big, per_device_batch=2, grad_accum=4)
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=1, report_to=[], save_strategy="no",
                             use_cpu=True, dataloader_pin_memory=False)
    line = apply_batch_plan(args, plan)
    assert "gradient checkpointing on" in line
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (2, 4)
    model = build_model("hybrid-tiny", vocab_size=64)
    ids = torch.randint(0, 64, (8, 16), generator=torch.Generator().manual_seed(0))
    data = [{"input_ids": row, "labels": row} for row in ids]
    Trainer(model=model, args=args, train_dataset=data).train()
    assert model.is_activation_checkpointing
