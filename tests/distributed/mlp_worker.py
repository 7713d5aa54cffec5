"""Muon under DDP and FSDP2 on a tiny MLP: one rank of a multi-process run, or the one-process reference.

    RANK=r WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=p python tests/distributed/mlp_worker.py OUT_DIR

writes ``OUT_DIR/rank<r>.pt`` (final parameters, optimizer states, checkpoints, error messages);
tests/test_distributed.py imports this file to compute the same runs in one process and compares.
Every rank sees its slice of one global batch per step, so N processes and one must agree.
"""

from __future__ import annotations

import datetime
import os
import sys
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script from any folder
    sys.path.insert(0, str(ROOT))

from optimizers import Muon, MuonConfigError  # noqa: E402

STEPS = 4  # optimizer steps per run; a checkpoint after SAVE_AT
SAVE_AT = 2
GLOBAL_BATCH = 8
DIM = 16


class MLP(nn.Module):
    """Matrices of four shapes: a bucket of three (split across ranks), one used on even steps only (no
    gradient on odd steps), and odd row counts (uneven FSDP2 shards)."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(DIM, 32)
        self.blocks = nn.ModuleList([nn.Linear(32, 32) for _ in range(3)])
        self.skip = nn.Linear(32, 32, bias=False)
        self.narrow = nn.Linear(32, 7)
        self.out = nn.Linear(7, 3)

    def forward(self, x, use_skip: bool = True):
        h = torch.tanh(self.inp(x))
        for block in self.blocks:
            h = torch.tanh(block(h))
        if use_skip:
            h = h + torch.tanh(self.skip(h))
        return self.out(torch.tanh(self.narrow(h)))


def build_model(seed: int = 0) -> MLP:
    torch.manual_seed(seed)
    return MLP()


def build_optimizer(model: nn.Module, *, normuon: bool = True, distributed: str = "auto",
                    nonfinite: str = "raise", per_block: bool = False) -> Muon:
    """Two Muon groups (fp32 NorMuon with decay; bf16 compute without decay, so its updates travel in bf16)
    and an AdamW group for the biases. ``per_block``: NorMuon off, and ``inp.weight`` (32 rows) is a fused
    projection of three row blocks, the last one (4 rows, like Mamba2's dt) on AdamW."""
    named = dict(model.named_parameters())
    first = [n for n in named if n.endswith("weight") and not n.startswith(("narrow", "out"))]
    second = ["narrow.weight", "out.weight"]
    biases = [n for n in named if n.endswith("bias")]

    def group(names, **kw):
        return {"params": [named[n] for n in names], "param_names": names, **kw}

    # explicit dtypes: the auto default is bf16 on CPUs with native bf16. Both groups run plain NS: DDP's
    # averaged half-batch gradients differ from one process's in fp32 rounding, and the Gram form (which works
    # on G·Gᵀ, squaring the condition number) amplifies that: one bf16 rounding flip became 9e-4 (AVX-512 BF16
    # EPYC), and in fp32 the first layer ended 6.4e-5 apart (AMX Xeon), both > ATOL. That the Gram path gives
    # the same bits for any subset of a bucket, as the ranks orthogonalize, is tested in test_newton_schulz.py
    fused = {}
    if per_block:
        normuon = False
        fused = dict(row_blocks=[[16, 12, 4] if n == "inp.weight" else None for n in first],
                     adamw_blocks=[[2] if n == "inp.weight" else None for n in first], adamw_lr_ratio=0.2)
    return Muon([group(first, name="muon", weight_decay=0.1, beta2=0.95 if normuon else None,
                       compute_dtype="float32", ns_method="plain", **fused),
                 group(second, name="muon_bf16", weight_decay=0.0, compute_dtype="bfloat16", ns_method="plain"),
                 group(biases, name="adamw", use_muon=False, lr=1e-2, weight_decay=0.01)],
                lr=0.05, momentum=0.9, distributed=distributed, nonfinite=nonfinite)


def batch(step: int, rank: int = 0, world_size: int = 1):
    """Rank ``rank``'s slice of the global batch of ``step``."""
    gen = torch.Generator().manual_seed(1000 + step)
    x, y = torch.randn(GLOBAL_BATCH, DIM, generator=gen), torch.randn(GLOBAL_BATCH, 3, generator=gen)
    per = GLOBAL_BATCH // world_size
    return x[rank * per:(rank + 1) * per], y[rank * per:(rank + 1) * per]


def train(forward, optimizer, start: int, stop: int, rank: int = 0, world_size: int = 1) -> None:
    for step in range(start, stop):
        x, y = batch(step, rank, world_size)
        loss = (forward(x, use_skip=step % 2 == 0) - y).square().mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def params_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: (p.full_tensor() if hasattr(p, "full_tensor") else p).detach().clone()
            for n, p in model.named_parameters()}


def reference(stop: int = STEPS, resume: dict | None = None, normuon: bool = True, with_state: bool = False,
              per_block: bool = False):
    """The one-process run (no process group), optionally resumed from a saved {model, optimizer} at SAVE_AT:
    its final parameters (and optimizer state_dict)."""
    model = build_model()
    optimizer = build_optimizer(model, normuon=normuon, per_block=per_block)
    start = 0
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        start = SAVE_AT
    train(model, optimizer, start, stop)
    return (params_of(model), optimizer.state_dict()) if with_state else params_of(model)


# ---------------------------------------------------------------------------- multi-process scenarios

def ddp_run(rank: int, world_size: int) -> dict:
    """DDP: train, checkpoint at SAVE_AT, finish; then resume rank 0's checkpoint and finish again."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    from optimizers.distributed import DDPMuon, distributed_context

    model = build_model()
    optimizer = build_optimizer(model)
    ddp = DDP(model, find_unused_parameters=True)
    train(ddp, optimizer, 0, SAVE_AT, rank, world_size)
    checkpoint = {"model": {k: v.clone() for k, v in model.state_dict().items()},
                  "optimizer": _clone_state(optimizer.state_dict())}
    train(ddp, optimizer, SAVE_AT, STEPS, rank, world_size)
    result = {"params": params_of(model), "optimizer": _clone_state(optimizer.state_dict()),
              "checkpoint": checkpoint, "context": type(distributed_context(optimizer)).__name__,
              "opt_out": distributed_context(build_optimizer(build_model(), distributed="off"))}
    assert isinstance(distributed_context(optimizer), DDPMuon)

    # every rank resumes from rank 0's checkpoint (as HF Trainer does with optimizer.pt)
    ckpt = [checkpoint]
    torch.distributed.broadcast_object_list(ckpt, src=0)
    resumed = build_model()
    resumed.load_state_dict(ckpt[0]["model"])
    resumed_opt = build_optimizer(resumed)
    resumed_opt.load_state_dict(_clone_state(ckpt[0]["optimizer"]))  # loading aliases the tensors
    train(DDP(resumed, find_unused_parameters=True), resumed_opt, SAVE_AT, STEPS, rank, world_size)
    result["resumed_params"] = params_of(resumed)
    return result


def ddp_per_block_run(rank: int, world_size: int) -> dict:
    """DDP with a per-block fused projection (one block on AdamW): every rank updates the blocks by itself."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    model = build_model()
    optimizer = build_optimizer(model, per_block=True)
    train(DDP(model, find_unused_parameters=True), optimizer, 0, STEPS, rank, world_size)
    return {"params": params_of(model), "optimizer": _clone_state(optimizer.state_dict())}


def fsdp2_per_block_error(rank: int, world_size: int) -> str:
    """Per-block on FSDP2 shards: refused at the first step, on every rank, with the fix."""
    from torch.distributed.fsdp import fully_shard

    model = build_model()
    fully_shard(model)
    optimizer = build_optimizer(model, per_block=True)
    x, y = batch(0, rank, world_size)
    (model(x) - y).square().mean().backward()
    try:
        optimizer.step()
    except MuonConfigError as exc:
        return str(exc)
    return "no error"


def fsdp2_run(rank: int, world_size: int) -> dict:
    """FSDP2: every Linear and the root sharded along dim 0; NorMuon off (refused on shards)."""
    from torch.distributed.fsdp import fully_shard

    from optimizers.distributed import FSDP2Muon, distributed_context

    model = build_model()
    for module in [model.inp, *model.blocks, model.skip, model.narrow, model.out]:
        fully_shard(module)
    fully_shard(model)
    optimizer = build_optimizer(model, normuon=False)
    assert isinstance(distributed_context(optimizer), FSDP2Muon)
    train(model, optimizer, 0, STEPS, rank, world_size)
    buf = optimizer.state[model.narrow.weight]["momentum_buffer"]
    return {"params": params_of(model), "buffer_local_shape": tuple(buf.to_local().shape),
            "buffer_global_shape": tuple(buf.shape)}


def mismatch_runs(rank: int, world_size: int) -> dict:
    """Without DDP, ranks that disagree: a parameter with a gradient on one rank only; gradients that differ;
    a NaN gradient on rank 0 only (raise, then skip). Every rank must raise (or skip) together, and nobody
    hang in a collective. Returns each case's error message (or the skipped-step count)."""
    errors = {}
    for case in ("participation", "gradients", "nan", "nan_skip"):
        model = build_model()
        optimizer = build_optimizer(model, nonfinite="skip" if case == "nan_skip" else "raise")
        x, y = batch(0, rank, world_size) if case == "gradients" else batch(0)
        use_skip = rank == 0 if case == "participation" else True
        (model(x, use_skip=use_skip) - y).square().mean().backward()
        if case.startswith("nan") and rank == 0:
            model.narrow.weight.grad[0, 0] = float("nan")
        try:
            optimizer.step()
            errors[case] = optimizer.skipped_steps
        except (RuntimeError, FloatingPointError) as exc:
            errors[case] = str(exc)
    return errors


def auto_dtype_agreement(rank: int, world_size: int) -> dict:
    """compute_dtype auto under DDP where the ranks' bf16 probes disagree (faked: rank 0 measures bf16 3x faster,
    rank 1 0.5x): every rank must take the same dtype (the slowest rank's choice, fp32), or the ranks would send
    updates in different dtypes and the all_gather would break. Runs last: it leaves the agreed ratio set."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    import optimizers.precision as precision

    precision.cpu_flags = lambda: frozenset({"avx512_bf16"})
    precision._bf16_speedup = lambda *args: 3.0 if rank == 0 else 0.5
    before = precision.resolve_dtype(None, torch.device("cpu"))
    model = build_model()
    named = dict(model.named_parameters())
    matrices = [n for n in named if n.endswith("weight")]
    biases = [n for n in named if n not in matrices]
    optimizer = Muon([{"params": [named[n] for n in matrices], "param_names": matrices, "ns_method": "plain"},
                      {"params": [named[n] for n in biases], "param_names": biases, "use_muon": False, "lr": 1e-2}],
                     lr=0.05, momentum=0.9)
    train(DDP(model, find_unused_parameters=True), optimizer, 0, STEPS, rank, world_size)
    return {"before": before, "after": precision.resolve_dtype(None, torch.device("cpu")),
            "described": optimizer.describe()["groups"][0]["compute_dtype"], "params": params_of(model)}


def _clone_state(sd):
    if isinstance(sd, torch.Tensor):
        return sd.clone()
    if isinstance(sd, dict):
        return {k: _clone_state(v) for k, v in sd.items()}
    if isinstance(sd, list):
        return [_clone_state(v) for v in sd]
    return sd


def main(out_dir: str) -> None:
    torch.set_num_threads(1)
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    torch.distributed.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
    try:
        result = {"ddp": ddp_run(rank, world_size), "fsdp2": fsdp2_run(rank, world_size),
                  "ddp_per_block": ddp_per_block_run(rank, world_size),
                  "fsdp2_per_block": fsdp2_per_block_error(rank, world_size),
                  "mismatch": mismatch_runs(rank, world_size),
                  "auto_dtype": auto_dtype_agreement(rank, world_size)}
        torch.save(result, Path(out_dir) / f"rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
