"""Muon across processes: every rank orthogonalizes only its share of the matrices (DDP and FSDP2).

Momentum is elementwise, so only the Newton-Schulz work is split. `assign_owners` (a pure function of the
matrix shapes, so every rank computes the same answer) gives each matrix one owning rank, balancing the
orthogonalization FLOPs; each rank still batches its own same-shaped matrices into one call.

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
from optimizers.functional import muon_momentum_
from optimizers.newton_schulz import plain_flops
from optimizers.orthogonalize import orthogonalize, resolve_dtype

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
                  for name, p in zip(optimizer._names(g, gi), g["params"])]
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

    def bucket_updates(self, group: dict, params: list[Tensor], grads: list[Tensor],
                       buckets: dict[tuple, list[int]], state) -> dict[tuple, list[Tensor] | Tensor]:
        """For each bucket key, the k orthogonalized updates in the grads' dtype, on every rank: views into
        the receive buffer (no second copy), or one stacked (k, *shape) tensor for NorMuon.

        Updates every momentum buffer of the group (all ranks, as one process would)."""
        order = [(key, row, i) for key, idx in buckets.items() for row, i in enumerate(idx)]
        owners = _owners(tuple(tuple(params[i].shape) for _, _, i in order), self.world_size)
        mine: dict[tuple, list[int]] = {}
        for (key, row, _), owner in zip(order, owners):
            if owner == self.rank:
                mine.setdefault(key, []).append(row)
        local: dict[tuple, Tensor] = {}
        for key, idx in buckets.items():
            U = muon_momentum_([grads[i] for i in idx], [state[params[i]]["momentum_buffer"] for i in idx],
                               momentum=group["momentum"], nesterov=group["nesterov"])
            if key in mine:
                rows = mine[key]
                U_mine = U if len(rows) == len(idx) else U[rows]
                local[key] = orthogonalize(U_mine, group["backend"], group["ns_steps"], group["compute_dtype"],
                                           group["ns_method"])

        out: dict[tuple, list] = {key: [None] * len(idx) for key, idx in buckets.items()}
        wires = {key: _wire_dtype(group, grads[idx[0]]) for key, idx in buckets.items()}
        for wire in sorted(set(wires.values()), key=str):
            entries = [(key, row, owner) for (key, row, _), owner in zip(order, owners) if wires[key] == wire]
            numel = {key: math.prod(params[buckets[key][0]].shape) for key, _, _ in entries}
            loads = [0] * self.world_size
            for key, _, owner in entries:
                loads[owner] += numel[key]
            width = max(loads)
            if width == 0:
                continue
            device = grads[0].device
            send = torch.zeros(width, dtype=wire, device=device)
            offset, seen = 0, {}
            for key, row, owner in entries:
                if owner == self.rank:
                    pos = seen[key] = seen.get(key, -1) + 1  # rows of `local[key]` are in bucket order
                    send[offset: offset + numel[key]].copy_(local[key][pos].reshape(-1))
                    offset += numel[key]
            recv = torch.empty(width * self.world_size, dtype=wire, device=device)
            _all_gather_single(recv, send, group=self.group)
            cursor = [r * width for r in range(self.world_size)]
            for key, row, owner in entries:
                idx = buckets[key]
                piece = recv[cursor[owner]: cursor[owner] + numel[key]].view(params[idx[0]].shape)
                out[key][row] = piece.to(grads[idx[0]].dtype)
                cursor[owner] += numel[key]
            self.bytes_sent += width * wire.itemsize
            self.bytes_received += width * (self.world_size - 1) * wire.itemsize
        if group["beta2"] is not None:  # NorMuon works on the stacked batch
            return {key: torch.stack(updates) for key, updates in out.items()}
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

    def bucket_updates(self, group: dict, params: list[Tensor], grads: list[Tensor],
                       buckets: dict[tuple, list[int]], state) -> dict[tuple, list[Tensor]]:
        """For each bucket key, the per-matrix updates as DTensors sharded like their parameters.

        Updates the local shards of the group's momentum buffers."""
        from torch.distributed.tensor import DTensor

        order = [(key, row, i) for key, idx in buckets.items() for row, i in enumerate(idx)]
        owners = _owners(tuple(tuple(params[i].shape) for _, _, i in order), self.world_size)
        U_local: dict[tuple, Tensor] = {}
        for key, idx in buckets.items():
            U_local[key] = muon_momentum_([self._local(grads[i]) for i in idx],
                                          [self._local(state[params[i]]["momentum_buffer"]) for i in idx],
                                          momentum=group["momentum"], nesterov=group["nesterov"])
        wire = {key: _wire_dtype(group, grads[idx[0]]) for key, idx in buckets.items()}
        dtypes = set(wire.values())
        if len(dtypes) > 1:
            raise MuonConfigError(f"Muon (FSDP2): param group {group['name']!r} mixes dtypes "
                                  f"{sorted(map(str, dtypes))}; keep one parameter dtype per Muon group")
        wire_dtype = dtypes.pop()
        device = self._local(grads[0]).device
        W, me = self.world_size, self.rank
        entries = [(key, row, params[i], owner) for (key, row, i), owner in zip(order, owners)]
        for key, row, p, _ in entries:
            if tuple(U_local[key][row].shape) != self._local_shape(p, me):
                raise MuonConfigError(f"Muon (FSDP2): a local shard of shape {tuple(U_local[key][row].shape)} where "
                                      f"torch.chunk gives {self._local_shape(p, me)}; unsupported sharding")

        # 1) every rank sends its shard of each matrix to the matrix's owner
        send = [U_local[key][row].reshape(-1) for dest in range(W) for key, row, _, owner in entries if owner == dest]
        in_splits = [sum(U_local[key][row].numel() for key, row, _, owner in entries if owner == dest)
                     for dest in range(W)]
        out_splits = [sum(math.prod(self._local_shape(p, src)) for _, _, p, owner in entries if owner == me)
                      for src in range(W)]
        recv = self._exchange(send, in_splits, out_splits, wire_dtype, device)

        # 2) the owner assembles its full matrices, orthogonalizes them bucket by bucket
        mine = [(key, row, p) for key, row, p, owner in entries if owner == me]
        pieces = {(key, row): [] for key, row, _ in mine}
        cursor = 0
        for src in range(W):
            for key, row, p in mine:
                shape = self._local_shape(p, src)
                pieces[(key, row)].append(recv[cursor: cursor + math.prod(shape)].view(shape))
                cursor += math.prod(shape)
        full: dict[tuple, Tensor] = {}
        for key in buckets:
            rows = [(k, row, p) for k, row, p in mine if k == key]
            if rows:
                batch = torch.stack([torch.cat(pieces[(key, row)], dim=p.placements[0].dim) for _, row, p in rows])
                O = orthogonalize(batch, group["backend"], group["ns_steps"], group["compute_dtype"],
                                  group["ns_method"])
                for (_, row, p), o in zip(rows, O.unbind(0)):
                    full[(key, row)] = o
        # 3) the owner sends each rank its shard of the update
        send = [_shard(full[(key, row)], p.placements[0].dim, W, dest).reshape(-1)
                for dest in range(W) for key, row, p in mine]
        in_splits = [sum(math.prod(self._local_shape(p, dest)) for _, _, p in mine) for dest in range(W)]
        out_splits = [sum(U_local[key][row].numel() for key, row, _, owner in entries if owner == src)
                      for src in range(W)]
        recv = self._exchange(send, in_splits, out_splits, wire_dtype, device)

        out: dict[tuple, list] = {key: [None] * len(idx) for key, idx in buckets.items()}
        cursor = 0
        for src in range(W):
            for key, row, p, owner in entries:
                if owner == src:
                    shape = U_local[key][row].shape
                    local = recv[cursor: cursor + math.prod(shape)].view(shape).to(grads[0].dtype)
                    cursor += math.prod(shape)
                    out[key][row] = DTensor.from_local(local, self.mesh, p.placements, run_check=False,
                                                       shape=p.shape, stride=p.stride())
        return out

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
            for name, p in zip(optimizer._names(g, gi), g["params"])]
    sharded = [hasattr(p, "device_mesh") and hasattr(p, "placements") for _, p, _ in muon]
    if any(sharded):
        return _fsdp2_context(muon, sharded)
    if dist.get_world_size() == 1:
        return None
    return DDPMuon(dist.group.WORLD, dist.get_rank(), dist.get_world_size())


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
