"""Mamba-aware parameter split: which tensors Muon orthogonalizes and which AdamW handles, with or without decay.

Muon is for hidden weight matrices. It gets the weight of every ``nn.Linear`` that is not the input or
output embedding — Mamba in_proj/out_proj/x_proj, attention q/k/v/o, MLPs, Zamba2's shared-block
linears and LoRA adapters — plus 3-D stacks of expert matrices (modules named ``*Experts``, e.g. Jamba's
MoE), each expert orthogonalized on its own.

transformers' ``Conv1D`` (GPT-2 and kin) is a linear map stored (in, out): its weight goes to Muon as well,
in its own group "muon_fan_in_first" (Muon's ``fan_in_first`` key), so the update and the ``adjust_lr`` scale
come from the map's (out, in) shape, not the storage. Fused projections (qkv, gate_up, Mamba's in_proj) are
Muon matrices like the rest; the summary names them, and `create_muon_optimizer`'s ``fused`` says whether they
are orthogonalized whole or per row block.

AdamW gets the rest: embeddings and lm_head (tied or not), norms, biases, conv1d kernels (3-D), Mamba v1's
2-D ``A_log`` (not a linear map), ``D``, ``dt_bias``, ``dt_proj`` (it maps dt_rank -> d_inner through a
softplus and is initialized to a specific dt range; the issue puts it on AdamW), MoE routers.
No weight decay on embeddings, norms, biases, A_log, D, dt_bias, or anything tagged ``_no_weight_decay``.

``include`` / ``exclude``: name patterns (fnmatch globs, or ``re:<regex>`` searched in the name) that force
a parameter onto Muon / AdamW; exclude wins over include. A pattern that matches nothing is an error.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field

from torch import Tensor, nn

from optimizers.errors import MuonConfigError

NO_DECAY_LEAVES = ("A_log", "D", "dt_bias")
ADAMW_MODULES = ("dt_proj",)  # Linear modules that stay on AdamW by name
OUTPUT_MODULES = ("lm_head", "embed_out")  # fallback when get_output_embeddings() is unavailable
# module names of projections that pack several maps into one matrix: named in the summary so a user sees
# that Muon orthogonalizes the packed matrix as one map (as Keller Jordan's and Moonlight's recipes do)
FUSED_MODULES = ("c_attn", "qkv_proj", "query_key_value", "W_pack", "Wqkv", "gate_up_proj", "in_proj", "c_fc")


@dataclass
class ParamGroup:
    name: str  # "muon", "muon_no_decay" (only if a matrix is tagged _no_weight_decay), "muon_fan_in_first"
    # (Conv1D weights, stored (in, out)), "adamw_decay", "adamw_no_decay"
    use_muon: bool
    decay: bool
    fan_in_first: bool = False
    param_names: list[str] = field(default_factory=list)
    params: list[Tensor] = field(default_factory=list)


@dataclass
class ParamSplit:
    """The groups in their fixed order (empty groups dropped) and a printable summary."""

    groups: list[ParamGroup]
    fused: list[str] = field(default_factory=list)  # module names of fused projections on Muon (see FUSED_MODULES)

    def group(self, name: str) -> ParamGroup | None:
        return next((g for g in self.groups if g.name == name), None)

    def names(self, name: str) -> list[str]:
        g = self.group(name)
        return list(g.param_names) if g else []

    def _pairs(self, name: str) -> list[tuple[str, Tensor]]:
        g = self.group(name)
        return list(zip(g.param_names, g.params)) if g else []

    # (name, parameter) pairs per group; empty lists for absent groups
    muon = property(lambda self: self._pairs("muon"))
    muon_no_decay = property(lambda self: self._pairs("muon_no_decay"))
    adamw_decay = property(lambda self: self._pairs("adamw_decay"))
    adamw_no_decay = property(lambda self: self._pairs("adamw_no_decay"))

    def summary(self) -> str:
        rows = [(g.name, len(g.params), sum(p.numel() for p in g.params)) for g in self.groups]
        total = sum(r[2] for r in rows) or 1
        lines = ["parameter split (Muon: hidden matrices; AdamW: embeddings, head, norms, biases, SSM params)",
                 f"  {'group':<16}{'tensors':>8}{'parameters':>14}{'share':>8}"]
        lines += [f"  {n:<16}{t:>8}{c:>14,}{c / total:>8.1%}" for n, t, c in rows]
        lines.append(f"  {'total':<16}{sum(r[1] for r in rows):>8}{sum(r[2] for r in rows):>14,}")
        if self.fused:
            lines.append(f"  fused projections: {', '.join(self.fused)}")
        return "\n".join(lines)


def _matcher(pattern: str):
    if pattern.startswith("re:"):
        rx = re.compile(pattern[3:])
        return lambda name: rx.search(name) is not None
    return lambda name: fnmatch.fnmatchcase(name, pattern)


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, (nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)) or "norm" in type(module).__name__.lower()


def _is_matrix(p: Tensor) -> bool:
    return p.ndim == 2 and min(p.shape) > 1


def _is_matrix_stack(p: Tensor) -> bool:
    """(E, m, n): independent matrices such as MoE experts (Muon orthogonalizes each)."""
    return p.ndim == 3 and min(p.shape[-2:]) > 1


def _is_conv1d(module: nn.Module) -> bool:
    """transformers' Conv1D (GPT-2, GPT-J's predecessors...): a linear map whose weight is stored (in, out)."""
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf")


def split_parameters(model: nn.Module, include=(), exclude=()) -> ParamSplit:
    """Split ``model``'s trainable parameters into Muon / AdamW groups (see the module docstring).

    Shared parameters are listed once (``named_parameters`` de-duplicates); frozen ones are skipped.
    """
    include, exclude = tuple(include), tuple(exclude)
    inc = [(pat, _matcher(pat)) for pat in include]
    exc = [(pat, _matcher(pat)) for pat in exclude]
    used: set[str] = set()

    input_emb = _embedding_weight(model, "get_input_embeddings")
    output_emb = _embedding_weight(model, "get_output_embeddings")
    modules = dict(model.named_modules())

    groups = {name: ParamGroup(name, use_muon, decay) for name, use_muon, decay in
              [("muon", True, True), ("muon_no_decay", True, False),
               ("adamw_decay", False, True), ("adamw_no_decay", False, False)]}
    for name in ("muon_fan_in_first", "muon_fan_in_first_no_decay"):
        groups[name] = ParamGroup(name, True, not name.endswith("no_decay"), fan_in_first=True)
    fused: dict[str, None] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        module_name, _, leaf = name.rpartition(".")
        module = modules.get(module_name, model)
        mod_leaf = module_name.rpartition(".")[2]
        # a tied lm_head is the input embedding (listed once): no decay; an untied one is decayed
        is_input = p is input_emb or isinstance(module, nn.Embedding)
        is_output = p is output_emb or mod_leaf in OUTPUT_MODULES
        no_decay = (is_input or _is_norm(module) or leaf in NO_DECAY_LEAVES or leaf.endswith("bias")
                    or bool(getattr(p, "_no_weight_decay", False)))
        muon = ((isinstance(module, nn.Linear) or _is_conv1d(module)) and leaf == "weight" and not (is_input or is_output)
                and mod_leaf not in ADAMW_MODULES and _is_matrix(p))
        muon = muon or (type(module).__name__.endswith("Experts") and _is_matrix_stack(p))

        hits_inc = [pat for pat, match in inc if match(name)]
        hits_exc = [pat for pat, match in exc if match(name)]
        used.update(hits_inc + hits_exc)
        if hits_exc:
            muon = False
        elif hits_inc:
            if not (_is_matrix(p) or _is_matrix_stack(p)):
                raise MuonConfigError(f"include pattern {hits_inc[0]!r} forces {name!r} with shape {tuple(p.shape)} "
                                      "into Muon, which only takes matrices; narrow the pattern or add an exclude")
            muon = True
        key = ("muon" if muon else "adamw") + ("_no_decay" if no_decay else ("" if muon else "_decay"))
        if muon and _is_conv1d(module) and leaf == "weight":
            key = "muon_fan_in_first" + ("_no_decay" if no_decay else "")
        if muon and mod_leaf in FUSED_MODULES:
            fused[mod_leaf] = None
        groups[key].param_names.append(name)
        groups[key].params.append(p)

    unused = [pat for pat in include + exclude if pat not in used]
    if unused:
        example = next((n for n, _ in model.named_parameters()), "?")
        raise MuonConfigError(f"include/exclude pattern {unused[0]!r} matches no parameter; names look like "
                              f"{example!r} (fnmatch glob, or 're:<regex>')")
    order = ["muon", "muon_no_decay", "muon_fan_in_first", "muon_fan_in_first_no_decay", "adamw_decay",
             "adamw_no_decay"]
    return ParamSplit([groups[n] for n in order if groups[n].params], fused=list(fused))


def _embedding_weight(model: nn.Module, getter: str) -> Tensor | None:
    """The weight of the model's input/output embedding, if it exposes one (HF models do)."""
    try:
        module = getattr(model, getter)()
    except (AttributeError, NotImplementedError):
        return None
    return getattr(module, "weight", None)
