"""Benchmark Muon's optimizer step across processes: time per rank vs world size, and bytes per step vs AdamW.

    python bench/distributed_step.py                                  # hybrid-tiny and hybrid-small-standard
    python bench/distributed_step.py --sizes hybrid-tiny --worlds 1,2,4 --repeats 5
    python bench/distributed_step.py --modes ddp,fsdp2 --sizes hybrid-tiny

For each shape set (the Muon / AdamW split of a named model size, built on the meta device) and world size,
W processes on this machine (gloo over loopback, 1 thread each) hold the parameters with identical random
gradients (what DDP's all-reduce leaves) and time ``optimizer.step()`` only: Muon (newtonschulz5, fp32) and
``torch.optim.AdamW(fused=True)`` on the same tensors. The gradient all-reduce happens in backward and is the
same for both optimizers; its bytes are computed (ring all-reduce), not timed. Muon's own exchanges are
counted by `optimizers.distributed` (payload bytes) and timed by wrapping its collective.

``--modes fsdp2`` shards every parameter along dim 0 with ``fully_shard`` and times the same step (Muon's
two all_to_alls instead of the all_gather). Prints a Markdown table. Not a test: a shared machine is noisy.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from optimizer_step import model_shapes  # noqa: E402

from optimizers.newton_schulz import ns_flops  # noqa: E402

import optimizers.distributed as odist  # noqa: E402
from optimizers import Muon  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _params(shapes, seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen) * 0.02 for s in shapes]


def _timed(fn, log: list[float]):
    def wrapped(*args, **kwargs):
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        log.append(time.perf_counter() - t0)
        return out
    return wrapped


def _rank_main(rank: int, world: int, port: int, mode: str, muon_shapes, adamw_shapes, repeats: int,
               out: str) -> None:
    torch.set_num_threads(1)
    if world > 1 or mode == "fsdp2":
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                                timeout=datetime.timedelta(minutes=10))
    comm_log: list[float] = []
    odist._all_gather_single = _timed(odist._all_gather_single, comm_log)
    odist.dist.all_to_all_single = _timed(dist.all_to_all_single, comm_log)
    results = {}
    for kind in ("muon", "adamw"):
        muon = [torch.nn.Parameter(t) for t in _params(muon_shapes, 0)]
        rest = [torch.nn.Parameter(t) for t in _params(adamw_shapes, 1)]
        if mode == "fsdp2":
            from torch.distributed.fsdp import fully_shard

            holder = torch.nn.ParameterList(muon + rest)
            fully_shard(holder)
            params = list(holder)
            muon, rest = params[:len(muon)], params[len(muon):]
        full_grads = _params(muon_shapes + adamw_shapes, 2)
        for p, g in zip(muon + rest, full_grads):
            if mode == "fsdp2":
                from torch.distributed.tensor import distribute_tensor

                p.grad = distribute_tensor(g, p.device_mesh, p.placements)
            else:
                p.grad = g
        del full_grads
        if kind == "muon":
            opt = Muon([{"params": muon, "name": "muon", "weight_decay": 0.01},
                        {"params": rest, "name": "adamw", "use_muon": False, "lr": 3e-4, "weight_decay": 0.01}],
                       lr=0.02)
        else:
            opt = torch.optim.AdamW(muon + rest, lr=3e-4, weight_decay=0.01, fused=mode != "fsdp2" or None)
        opt.step()  # warm-up: state allocation
        times, comm = [], []
        for _ in range(repeats):
            if dist.is_initialized():
                dist.barrier()
            comm_log.clear()
            t0 = time.perf_counter()
            opt.step()
            times.append(time.perf_counter() - t0)
            comm.append(sum(comm_log))
        ctx = getattr(opt, "_dist", None)
        results[kind] = {"step_s": statistics.median(times), "comm_s": statistics.median(comm),
                         "sent": ctx.bytes_sent if ctx else 0, "received": ctx.bytes_received if ctx else 0}
        del opt, muon, rest
    torch.save(results, Path(out) / f"rank{rank}.pt")
    if dist.is_initialized():
        dist.destroy_process_group()


def run_world(world: int, mode: str, muon_shapes, adamw_shapes, repeats: int) -> list[dict]:
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as out:
        mp.start_processes(_rank_main, args=(world, _free_port(), mode, muon_shapes, adamw_shapes, repeats, out),
                           nprocs=world, start_method="spawn")
        return [torch.load(Path(out) / f"rank{r}.pt") for r in range(world)]


def _mb(n: float) -> str:
    return f"{n / 1e6:.2f}" if n < 1e8 else f"{n / 1e6:.0f}"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="hybrid-tiny,hybrid-small-standard")
    ap.add_argument("--worlds", default="1,2")
    ap.add_argument("--modes", default="ddp", help="ddp and/or fsdp2, comma-separated")
    ap.add_argument("--repeats", type=int, default=3, help="timed steps per optimizer (median reported)")
    args = ap.parse_args(argv)
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}; torch {torch.__version__}\n")
    print("| shape set | mode | W | Muon step / rank (s) | of which Muon comm (s) | AdamW step / rank (s) "
          "| NS GFLOP / rank | Muon exchange MB / rank (sent + recv) | grad all-reduce MB / rank (both) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for size in args.sizes.split(","):
        found = model_shapes(size)
        if found is None:
            continue
        muon_shapes, adamw_shapes = found
        numel = sum(torch.Size(s).numel() for s in muon_shapes + adamw_shapes)
        for mode in args.modes.split(","):
            for world in map(int, args.worlds.split(",")):
                ranks = run_world(world, mode, muon_shapes, adamw_shapes, args.repeats)
                muon = max(r["muon"]["step_s"] for r in ranks)
                comm = max(r["muon"]["comm_s"] for r in ranks)
                adamw = max(r["adamw"]["step_s"] for r in ranks)
                moved = max(r["muon"]["sent"] + r["muon"]["received"] for r in ranks)
                owners = odist.assign_owners([odist.ns_cost(s) for s in muon_shapes], world)
                gflop = max(sum(ns_flops(s, 5) for s, o in zip(muon_shapes, owners) if o == r)
                            for r in range(world)) / 1e9
                # ring all-reduce: each rank sends and receives 2(W-1)/W of the fp32 gradient
                allreduce = 2 * 2 * (world - 1) / world * numel * 4 if mode == "ddp" else 0
                print(f"| {size} ({len(muon_shapes)} Muon matrices, {numel / 1e6:.1f}M params) | {mode} | {world} "
                      f"| {muon:.3f} | {comm:.3f} | {adamw:.3f} | {gflop:.1f} | {_mb(moved)} | "
                      f"{_mb(allreduce) if mode == 'ddp' else 'n/a'} |", flush=True)


if __name__ == "__main__":
    main()
