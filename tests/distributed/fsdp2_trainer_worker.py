"""A plain `transformers.Trainer` with `MuonFactory` under FSDP2 (torchrun) or in one process; writes the final
parameters (full tensors) to OUT/params.pt on rank 0.

    python tests/distributed/fsdp2_trainer_worker.py OUT BATCH MAX_STEPS [RESUME_CHECKPOINT]
"""

import os
import sys
from pathlib import Path

import torch
import transformers as T

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from test_factory import _data, _llama  # noqa: E402

from optimizers import MuonFactory  # noqa: E402


def main(out: str, batch: int, steps: int, resume: str | None) -> None:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    fsdp = dict(fsdp="full_shard", fsdp_config={"fsdp_version": 2}) if world > 1 else {}
    args = T.TrainingArguments(out, max_steps=steps, per_device_train_batch_size=batch, learning_rate=1e-2,
                               lr_scheduler_type="linear", warmup_steps=1, logging_steps=1, save_steps=2,
                               report_to="none", use_cpu=True, seed=0, data_seed=0, disable_tqdm=True,
                               dataloader_num_workers=0, **fsdp)
    model = _llama()
    factory = (MuonFactory, {"lr": 1e-2, "adamw_lr": 1e-3, "verbose": False, "compute_dtype": "float32"})
    trainer = T.Trainer(model=model, args=args, train_dataset=_data(), optimizer_cls_and_kwargs=factory)
    trainer.train(resume_from_checkpoint=resume)
    params = {}
    for name, p in trainer.model.named_parameters():
        full = p.full_tensor() if hasattr(p, "full_tensor") else p  # FSDP2 DTensor shards -> whole tensor
        params[name] = full.detach().clone()
    if int(os.environ.get("RANK", "0")) == 0:
        torch.save({"params": params, "fsdp_requested": bool(fsdp), "fsdp_enabled": trainer.is_fsdp_enabled,
                    "dtensor": any(type(p).__name__ == "DTensor" for p in trainer.model.parameters())},
                   Path(out) / "params.pt")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] if len(sys.argv) > 4 else None)
