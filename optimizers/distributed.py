"""Muon across processes: every rank orthogonalizes only its share of the matrices (DDP and FSDP2).

Momentum is elementwise, so only the Newton-Schulz work is split. The math is `optimizers.functional.muon_update`,
as in one process; this module only hands it a route: which matrices this rank orthogonalizes, and the bytes
that move. `assign_owners` (a pure function of the matrix shapes, so every rank computes the same answer) gives
each matrix one owning rank, balancing the orthogonalization FLOPs; each rank still batches its own same-shaped
matrices into one call.

DDP (plain tensors; DDP has all-reduced the gradients, so they are identical on every rank): every rank
updates every momentum buffer, exactly as one process would, so the optimizer state is identical on every
rank and rank 0's ``optimizer.pt`` resumes on any world size. Each rank orthogonalizes its own matrices and
one ``all_gather`` per Muon group gives every rank every update; NorMuon, scaling and the parameter update
then run on every rank. The updates travel in the compute dtype when it is narrower than the gradients'
(bf16 on CUDA): exact, since every backend computes in that dtype and casts up only at the end. The
updated parameters would be as many bytes in fp32 and need NorMuon state on the owner only.

FSDP2 (``fully_shard``: DTensor parameters sharded along one dim of a 1-D mesh): momentum and the Nesterov
step run on the local shards (state stays sharded); one ``all_to_all`` sends each rank's shard of matrix j
to j's owner, which orthogonalizes the full matrix, and a second ``all_to_all`` sends the update's shards
back. AdamW groups need no communication (elementwise on local shards). NorMuon needs whole-matrix norms
and is refused here.

Every rank issues the same collectives in the same order: at the start of each step one small
``all_reduce`` agrees on which parameters have a gradient, whether any gradient is non-finite, and (DDP)
that the gradients really are the same on every rank.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Sequence

import torch
import torch.distributed as dist
from torch import Tensor

from optimizers.errors import MuonConfigError
from optimizers.functional import Bucket
from optimizers.newton_schulz import plain_flops
from optimizers.precision import agree_bf16_speedup, resolve_dtype

DISTRIBUTED_MODES = ("auto", "off")
GRAD_MATCH_RTOL = 1e-6  # DDP's all-reduced gradients are bitwise equal on every rank; this only absorbs
# a backend whose reduction order differs by rank, while catching ranks that never reduced at all


def ns_cost(shape: Sequence[int]) -> int:
    """Load-balancing weight of a matrix (or stack) of ``shape``: one plain Newton–Schulz step's FLOPs.

    >>> ns_cost((64, 256)) == ns_cost((256, 64)) == plain_flops((64, 256), 1)
    True
    """
    return plain_flops(shape, 1)


def assign_owners(costs: Sequence[float], world_size: int) -> list[int]:
    """The rank that orthogonalizes each item: longest-first greedy (each item, largest cost first, to the
    least-loaded rank; ties to the lower index and the lower rank). Deterministic, so every rank agrees;
    the largest load is at most 4/3 of the optimum plus nothing else to tune.

    >>> assign_owners([4, 3, 3, 2], 2)
    [0, 1, 1, 0]
    >>> assign_owners([5, 5, 5], 4)
    [0, 1, 2]
    """
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    loads = [0.0] * world_size
    owners = [0] * len(costs)
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        rank = min(range(world_size), key=lambda r: (loads[r], r))
        owners[i] = rank
        loads[rank] += costs[i]
    return owners


@lru_cache(maxsize=64)
def _owners(shapes: tuple[tuple[int, ...], ...], world_size: int) -> tuple[int, ...]:
    return tuple(assign_owners([ns_cost(s) for s in shapes], world_size))


def shard_sizes(dim_size: int, world_size: int) -> list[int]:
    """Rows of a dimension of ``dim_size`` held by each rank under DTensor's ``Shard`` (``torch.chunk``
    semantics: ceil-sized chunks, trailing ranks possibly empty).

    >>> shard_sizes(5, 4), shard_sizes(3, 4), shard_sizes(6, 2)
    ([2, 2, 1, 0], [1, 1, 1, 0], [3, 3])
    """
    chunk = -(-dim_size // world_size)
    return [max(0, min(chunk, dim_size - r * chunk)) for r in range(world_size)]


def _shard(full: Tensor, dim: int, world_size: int, rank: int) -> Tensor:
    """``rank``'s slice of ``full`` along ``dim`` under `shard_sizes` (possibly empty)."""
    sizes = shard_sizes(full.shape[dim], world_size)
    return full.narrow(dim, sum(sizes[:rank]), sizes[rank])


def _wire_dtype(group: dict, grad: Tensor) -> torch.dtype:
    """The dtype updates travel in: the compute dtype when narrower than the gradient's (lossless)."""
    compute = resolve_dtype(group["compute_dtype"], grad.device)
    return compute if compute.itemsize < grad.dtype.itemsize else grad.dtype


_all_gather_single = getattr(dist, "all_gather_single", None) or getattr(dist, "all_gather_into_tensor", None)


class _Context:
    """What both modes share: the process group, this rank, and the per-step agreement."""

    kind = ""

    def __init__(self, group, rank: int, world_size: int):
        self.group, self.rank, self.world_size = group, rank, world_size
        self.bytes_sent = 0  # payload bytes this rank sent / received in this step's exchanges (benchmarks)
        self.bytes_received = 0

    @staticmethod
    def _local(t: Tensor) -> Tensor:
        return t

    def check_gradients_match(self) -> bool:
        return False

    def agree(self, optimizer) -> bool:
        """One all_reduce: which params have a gradient (must be the same on every rank), whether any
        gradient anywhere is non-finite, and (DDP) whether the gradients match. Returns False for a step
        to skip (``nonfinite="skip"``); raises on every rank together otherwise."""
        self.bytes_sent = self.bytes_received = 0
        params = [(gi, name, p) for gi, g in enumerate(optimizer.param_groups)
                  for name, p in zip(optimizer.param_names(gi), g["params"])]
        grads = [self._local(p.grad) for _, _, p in params if p.grad is not None]
        norms = torch._foreach_norm(grads) if grads else []
        norms = torch.stack([n.double() for n in norms]) if grads else torch.zeros(0, dtype=torch.float64)
        # a huge but finite gradient can overflow the sum of squares: confirm element-wise (rare path)
        local_bad = not bool(norms.isfinite().all()) and not all(bool(g.isfinite().all()) for g in grads)
        checksum = 0.0 if local_bad else float(norms.square().sum())
        values = [float(p.grad is not None) for _, _, p in params] + [float(local_bad), checksum]
        v = torch.tensor(values, dtype=torch.float64)
        both = torch.cat([v, -v])
        dist.all_reduce(both, op=dist.ReduceOp.MAX, group=self.group)
        high, low = both[: len(values)], -both[len(values):]
        n = len(params)
        mixed = (high[:n] != low[:n]).nonzero().flatten().tolist()
        if mixed:
            _, name, _ = params[mixed[0]]
            more = f" (and {len(mixed) - 1} more)" if len(mixed) > 1 else ""
            raise RuntimeError(
                f"Muon ({self.kind}): parameter {name!r}{more} has a gradient on some ranks and not on others at "
                f"optimizer step {optimizer.step_count}; every rank must step the same parameters (wrap the model "
                "in DistributedDataParallel, which all-reduces every gradient), or build Muon with distributed='off'")
        if high[n] > 0:  # a non-finite gradient on some rank: every rank skips or raises together
            if optimizer.nonfinite == "skip":
                return False
            bad = [name for _, name, p in params
                   if p.grad is not None and not bool(self._local(p.grad).isfinite().all())]
            where = "on another rank"
            if bad:
                where = f"in parameter {bad[0]!r}" + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else "")
            raise FloatingPointError(
                f"non-finite gradient (nan/inf) {where} at optimizer step {optimizer.step_count}; "
                "lower the learning rate, clip gradients, or build the optimizer with nonfinite='skip'")
        if self.check_gradients_match() and float(high[n + 1] - low[n + 1]) > GRAD_MATCH_RTOL * float(high[n + 1]):
            raise RuntimeError(
                f"Muon (DDP): gradients differ across ranks at optimizer step {optimizer.step_count} (squared norm "
                f"{float(low[n + 1]):.6g} vs {float(high[n + 1]):.6g}); wrap the model in DistributedDataParallel "
                "before training, or build Muon with distributed='off' if each rank trains its own model")
        return True


class DDPMuon(_Context):
    """Plain, replicated parameters whose gradients DDP has all-reduced."""

    kind = "DDP"

    def check_gradients_match(self) -> bool:
        return True

    def route(self, group: dict, buckets: list[Bucket]) -> _DDPRoute:
        return _DDPRoute(self, group, buckets)


class _DDPRoute:
    """`muon_update`'s route under DDP: every rank blends every matrix (so every momentum buffer is updated, as one
    process would), orthogonalizes the ones it owns, and one ``all_gather`` per wire dtype gives every rank every
    update: views into the receive buffer, in the grads' dtype."""

    def __init__(self, ctx: DDPMuon, group: dict, buckets: list[Bucket]):
        self.ctx, self.group, self.buckets = ctx, group, buckets
        self.order = [(b, row) for b, bucket in enumerate(buckets) for row in range(len(bucket.params))]
        self.owners = _owners(tuple(buckets[b].shape for b, _ in self.order), ctx.world_size)
        self.mine: list[list[int]] = [[] for _ in buckets]
        for (b, row), owner in zip(self.order, self.owners):
            if owner == ctx.rank:
                self.mine[b].append(row)

    def gather(self, blended: list[Tensor]) -> list[Tensor]:
        return [U if len(rows) == len(U) else U[rows] for U, rows in zip(blended, self.mine)]

    def scatter(self, updates: list[Tensor]) -> list[list[Tensor]]:
        ctx, buckets = self.ctx, self.buckets
        out: list[list] = [[None] * len(bucket.params) for bucket in buckets]
        wires = [_wire_dtype(self.group, bucket.grads[0]) for bucket in buckets]
        for wire in sorted(set(wires), key=str):
            entries = [(b, row, owner) for (b, row), owner in zip(self.order, self.owners) if wires[b] == wire]
            numel = {b: math.prod(buckets[b].shape) for b, _, _ in entries}
            loads = [0] * ctx.world_size
            for b, _, owner in entries:
                loads[owner] += numel[b]
            width = max(loads)
            if width == 0:
                continue
            device = buckets[0].grads[0].device
            send = torch.zeros(width, dtype=wire, device=device)
            offset, seen = 0, {}
            for b, row, owner in entries:
                if owner == ctx.rank:
                    pos = seen[b] = seen.get(b, -1) + 1  # rows of `updates[b]` are in bucket order
                    send[offset: offset + numel[b]].copy_(updates[b][pos].reshape(-1))
                    offset += numel[b]
            recv = torch.empty(width * ctx.world_size, dtype=wire, device=device)
            _all_gather_single(recv, send, group=ctx.group)
            cursor = [r * width for r in range(ctx.world_size)]
            for b, row, owner in entries:
                piece = recv[cursor[owner]: cursor[owner] + numel[b]].view(buckets[b].shape)
                out[b][row] = piece.to(buckets[b].grads[0].dtype)
                cursor[owner] += numel[b]
            ctx.bytes_sent += width * wire.itemsize
            ctx.bytes_received += width * (ctx.world_size - 1) * wire.itemsize
        return out


class FSDP2Muon(_Context):
    """DTensor parameters (``fully_shard``) sharded along one dimension of a 1-D device mesh."""

    kind = "FSDP2"

    def __init__(self, mesh):
        super().__init__(mesh.get_group(), mesh.get_local_rank(), mesh.size())
        self.mesh = mesh

    @staticmethod
    def _local(t: Tensor) -> Tensor:
        return t.to_local() if hasattr(t, "to_local") else t

    def _local_shape(self, p, rank: int) -> tuple[int, ...]:
        dim = p.placements[0].dim
        shape = list(p.shape)
        shape[dim] = shard_sizes(p.shape[dim], self.world_size)[rank]
        return tuple(shape)

    def route(self, group: dict, buckets: list[Bucket]) -> _FSDP2Route:
        return _FSDP2Route(self, group, buckets)

    def _exchange(self, chunks: list[Tensor], in_splits: list[int], out_splits: list[int], dtype: torch.dtype,
                  device) -> Tensor:
        send = torch.cat([c.to(dtype) for c in chunks]) if chunks else torch.zeros(0, dtype=dtype, device=device)
        if self.world_size == 1:  # a one-rank mesh: nothing to move
            return send
        recv = torch.empty(sum(out_splits), dtype=dtype, device=device)
        dist.all_to_all_single(recv, send, out_splits, in_splits, group=self.group)
        self.bytes_sent += (sum(in_splits) - in_splits[self.rank]) * dtype.itemsize
        self.bytes_received += (sum(out_splits) - out_splits[self.rank]) * dtype.itemsize
        return recv


class _FSDP2Route:
    """`muon_update`'s route under FSDP2. ``buckets`` (what the update reads and writes) hold the local shards of the
    parameters, gradients and momentum buffers, so state stays sharded. ``gather``: one ``all_to_all`` sends each
    rank's blended shard of matrix j to j's owner, which assembles its full matrices; ``scatter``: a second
    ``all_to_all`` sends each rank its shard of every update."""

    def __init__(self, ctx: FSDP2Muon, group: dict, buckets: list[Bucket]):
        local = ctx._local
        self.ctx, self.sharded = ctx, buckets
        self.buckets = [Bucket([local(p) for p in b.params], [local(g) for g in b.grads],
                               [local(m) for m in b.bufs], b.shape, b.moments) for b in buckets]
        order = [(b, row) for b, bucket in enumerate(buckets) for row in range(len(bucket.params))]
        owners = _owners(tuple(buckets[b].shape for b, _ in order), ctx.world_size)
        self.entries = [(b, row, buckets[b].params[row], owner) for (b, row), owner in zip(order, owners)]
        self.mine = [(b, row, p) for b, row, p, owner in self.entries if owner == ctx.rank]
        dtypes = {_wire_dtype(group, b.grads[0]) for b in buckets}
        if len(dtypes) > 1:
            raise MuonConfigError(f"Muon (FSDP2): param group {group['name']!r} mixes dtypes "
                                  f"{sorted(map(str, dtypes))}; keep one parameter dtype per Muon group")
        self.wire = dtypes.pop() if dtypes else None
        self.device = self.buckets[0].grads[0].device if buckets else None
        for b, row, p, _ in self.entries:
            local_shape = tuple(self.buckets[b].grads[row].shape)
            if local_shape != ctx._local_shape(p, ctx.rank):
                raise MuonConfigError(f"Muon (FSDP2): a local shard of shape {local_shape} where "
                                      f"torch.chunk gives {ctx._local_shape(p, ctx.rank)}; unsupported sharding")

    def gather(self, blended: list[Tensor]) -> list[Tensor]:
        ctx, W = self.ctx, self.ctx.world_size
        send = [blended[b][row].reshape(-1) for dest in range(W) for b, row, _, owner in self.entries if owner == dest]
        in_splits = [sum(blended[b][row].numel() for b, row, _, owner in self.entries if owner == dest)
                     for dest in range(W)]
        out_splits = [sum(math.prod(ctx._local_shape(p, src)) for _, _, p in self.mine) for src in range(W)]
        recv = ctx._exchange(send, in_splits, out_splits, self.wire, self.device)
        pieces: dict[tuple[int, int], list[Tensor]] = {(b, row): [] for b, row, _ in self.mine}
        cursor = 0
        for src in range(W):
            for b, row, p in self.mine:
                shape = ctx._local_shape(p, src)
                pieces[(b, row)].append(recv[cursor: cursor + math.prod(shape)].view(shape))
                cursor += math.prod(shape)
        out = []
        for b, bucket in enumerate(self.sharded):
            full = [torch.cat(pieces[(b, row)], dim=p.placements[0].dim) for b2, row, p in self.mine if b2 == b]
            out.append(torch.stack(full) if full else recv.new_empty((0, *bucket.shape)))
        return out

    def scatter(self, updates: list[Tensor]) -> list[list[Tensor]]:
        ctx, W = self.ctx, self.ctx.world_size
        done: dict[tuple[int, int], Tensor] = {}
        for b, result in enumerate(updates):
            rows = [(row, p) for b2, row, p in self.mine if b2 == b]
            done.update({(b, row): o for (row, _), o in zip(rows, result.unbind(0))})
        send = [_shard(done[(b, row)], p.placements[0].dim, W, dest).reshape(-1)
                for dest in range(W) for b, row, p in self.mine]
        in_splits = [sum(math.prod(ctx._local_shape(p, dest)) for _, _, p in self.mine) for dest in range(W)]
        out_splits = [sum(self.buckets[b].grads[row].numel() for b, row, _, owner in self.entries if owner == src)
                      for src in range(W)]
        recv = ctx._exchange(send, in_splits, out_splits, self.wire, self.device)
        out: list[list] = [[None] * len(bucket.params) for bucket in self.buckets]
        cursor = 0
        for src in range(W):
            for b, row, _, owner in self.entries:
                if owner == src:
                    grad = self.buckets[b].grads[row]
                    out[b][row] = recv[cursor: cursor + grad.numel()].view(grad.shape).to(grad.dtype)
                    cursor += grad.numel()
        return out


def distributed_context(optimizer) -> DDPMuon | FSDP2Muon | None:
    """The sharded-orthogonalization mode for ``optimizer``'s parameters, or None for the one-process path.

    ``optimizer.distributed == "auto"``: FSDP2 when the Muon parameters are DTensors, DDP when a process
    group of more than one rank is initialized and they are plain tensors. ``"off"``: never (every rank
    orthogonalizes every matrix, as before).
    """
    mode = getattr(optimizer, "distributed", "auto")
    if mode not in DISTRIBUTED_MODES:
        raise MuonConfigError(f"unknown distributed={mode!r}; valid: {', '.join(DISTRIBUTED_MODES)}")
    if mode == "off" or not dist.is_available() or not dist.is_initialized():
        return None
    muon = [(name, p, g) for gi, g in enumerate(optimizer.param_groups) if g["use_muon"]
            for name, p in zip(optimizer.param_names(gi), g["params"])]
    sharded = [hasattr(p, "device_mesh") and hasattr(p, "placements") for _, p, _ in muon]
    if any(sharded):
        ctx = _fsdp2_context(muon, sharded)
    elif dist.get_world_size() == 1:
        return None
    else:
        ctx = DDPMuon(dist.group.WORLD, dist.get_rank(), dist.get_world_size())
    if any(g["compute_dtype"] in (None, "auto") and p.device.type == "cpu" for _, p, g in muon):
        # the auto dtype on a CPU comes from a timing probe, which can differ across ranks: all take the slowest
        # rank's, so every rank computes in, and sends updates in, the same dtype
        agree_bf16_speedup(lambda t: dist.all_reduce(t, op=dist.ReduceOp.MIN, group=ctx.group))
    return ctx


def _fsdp2_context(muon, sharded) -> FSDP2Muon:
    from torch.distributed.tensor import Shard

    if not all(sharded):
        name = next(name for (name, _, _), s in zip(muon, sharded) if not s)
        raise MuonConfigError(f"Muon: parameter {name!r} is a plain tensor while other Muon parameters are FSDP2 "
                              "DTensors; shard the whole model with fully_shard before building the optimizer")
    mesh = muon[0][1].device_mesh
    for name, p, g in muon:
        if p.device_mesh != mesh or mesh.ndim != 1:
            raise MuonConfigError(f"Muon (FSDP2): parameter {name!r} is on a {p.device_mesh.ndim}-D or different "
                                  "device mesh; only one 1-D mesh (plain fully_shard, no HSDP/TP) is supported")
        if len(p.placements) != 1 or type(p.placements[0]) is not Shard:
            raise MuonConfigError(f"Muon (FSDP2): parameter {name!r} has placements {p.placements}; only Shard(dim) "
                                  "is supported")
        if g["beta2"] is not None:
            raise MuonConfigError(f"Muon (FSDP2): NorMuon (beta2) needs whole-matrix norms and is not supported on "
                                  f"sharded parameters (group {g['name']!r}); use beta2=None or DDP")
    return FSDP2Muon(mesh)
