"""Per-block orthogonalization of fused projections (``row_blocks``): each row block updated exactly as if it
were its own parameter — the reference is Muon on the blocks as separate parameters."""

import copy

import pytest
import torch
from torch import nn

from optimizers import Muon, MuonConfigError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZES = [24, 40, 6]  # e.g. Mamba2 in_proj's gate, x and dt rows
COLS = 32


def grads(step: int):
    gen = torch.Generator().manual_seed(step)
    return torch.randn(sum(SIZES), COLS, generator=gen)


@pytest.mark.parametrize("adjust_lr", ["original", "match_rms_adamw"])
def test_blocks_update_like_separate_parameters(adjust_lr):
    gen = torch.Generator().manual_seed(0)
    fused = nn.Parameter(torch.randn(sum(SIZES), COLS, generator=gen))
    parts = [nn.Parameter(t.clone()) for t in fused.detach().split(SIZES)]
    other = nn.Parameter(torch.randn(16, COLS, generator=gen))  # a plain matrix in the same group
    other_ref = nn.Parameter(other.detach().clone())
    kw = dict(lr=0.02, momentum=0.9, weight_decay=0.1, compute_dtype="float32", adjust_lr=adjust_lr)
    ours = Muon([{"params": [fused, other], "row_blocks": [SIZES, None]}], **kw)
    ref = Muon([{"params": [*parts, other_ref]}], **kw)
    start = fused.detach().clone()
    for step in range(3):
        g = grads(step)
        fused.grad, other.grad = g.clone(), g[:16].clone()
        for p, gp in zip(parts, g.split(SIZES)):
            p.grad = gp.clone()
        other_ref.grad = g[:16].clone()
        ours.step()
        ref.step()
    torch.testing.assert_close(fused.detach(), torch.cat([p.detach() for p in parts]), atol=1e-6, rtol=0)
    torch.testing.assert_close(other.detach(), other_ref.detach(), atol=1e-6, rtol=0)
    # and it is not what whole-matrix Muon does
    whole = nn.Parameter(start.clone())
    opt = Muon([{"params": [whole]}], **kw)
    for step in range(3):
        whole.grad = grads(step)
        opt.step()
    assert (whole.detach() - fused.detach()).abs().max() > 1e-3


def test_interleaved_blocks_update_like_separate_parameters():
    """row_interleave (GPT-NeoX's qkv: q_0, k_0, v_0, q_1, ... per head): block i is the rows of its pieces in order,
    updated as a separate parameter holding exactly those rows would be."""
    heads, head, cols = 4, 6, 20
    gen = torch.Generator().manual_seed(3)
    fused = nn.Parameter(torch.randn(heads * 3 * head, cols, generator=gen))

    def gather(t):  # (heads*3*head, cols) -> [q, k, v], each (heads*head, cols) in head order
        return [x.reshape(-1, cols) for x in t.view(heads, 3 * head, cols).split(head, dim=1)]

    parts = [nn.Parameter(x.detach().clone()) for x in gather(fused.detach())]
    kw = dict(lr=0.02, momentum=0.9, weight_decay=0.1, compute_dtype="float32")
    ours = Muon([{"params": [fused], "row_blocks": [[heads * head] * 3], "row_interleave": [heads]}], **kw)
    ref = Muon([{"params": parts}], **kw)
    for step in range(3):
        g = torch.randn(fused.shape, generator=torch.Generator().manual_seed(10 + step))
        fused.grad = g.clone()
        for p, gp in zip(parts, gather(g)):
            p.grad = gp.clone()
        ours.step()
        ref.step()
    for got, want in zip(gather(fused.detach()), parts):
        torch.testing.assert_close(got, want.detach(), atol=1e-6, rtol=0)
    assert list(ours.describe()["groups"][0]["row_interleave"].values()) == [heads]
    # contiguous blocks of the same sizes are another update
    flat = nn.Parameter(torch.randn(fused.shape, generator=torch.Generator().manual_seed(3)))
    other = Muon([{"params": [flat], "row_blocks": [[heads * head] * 3]}], **kw)
    for step in range(3):
        flat.grad = torch.randn(fused.shape, generator=torch.Generator().manual_seed(10 + step))
        other.step()
    assert (flat.detach() - fused.detach()).abs().max() > 1e-3


def test_factory_gives_gpt_neox_qkv_its_interleaved_blocks_and_auto_keeps_it_whole():
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    from optimizers import create_muon_optimizer

    torch.manual_seed(0)
    model = GPTNeoXForCausalLM(GPTNeoXConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2,
                                             num_attention_heads=4, intermediate_size=64))
    per_block = create_muon_optimizer(model, fused="per_block", verbose=False).describe()["groups"][0]
    qkv = [n for n in per_block["param_names"] if n.endswith("query_key_value.weight")]
    assert len(qkv) == 2 and all(per_block["row_blocks"][n] == [32, 32, 32] for n in qkv)
    assert per_block["row_interleave"] == {n: 4 for n in qkv}
    auto = create_muon_optimizer(model, verbose=False)
    assert auto.fused_blocks == "whole" and auto.fused_blocks_reason == "auto: gpt_neox"


def test_auto_is_whole_under_normuon_and_explicit_per_block_is_refused():
    from mamba_trainer.models import build_model
    from optimizers import create_muon_optimizer

    model = build_model("mamba-tiny", vocab_size=64)
    opt = create_muon_optimizer(model, beta2=0.95, verbose=False)
    assert opt.fused_blocks == "whole" and "NorMuon" in opt.fused_blocks_reason
    assert not any(g.get("row_blocks") for g in opt.param_groups)
    with pytest.raises(MuonConfigError, match="cannot be combined with NorMuon.*--fused_blocks whole"):
        create_muon_optimizer(model, beta2=0.95, fused="per_block_dt_adamw", verbose=False)


def test_blocks_resume_exactly():
    def make():
        torch.manual_seed(0)
        p = nn.Parameter(torch.randn(sum(SIZES), COLS))
        return p, Muon([{"params": [p], "row_blocks": [SIZES]}], lr=0.02, compute_dtype="float32")

    p, opt = make()
    for step in range(2):
        p.grad = grads(step)
        opt.step()
    saved, saved_p = copy.deepcopy(opt.state_dict()), p.detach().clone()  # state_dict() holds live tensors
    for step in range(2, 4):
        p.grad = grads(step)
        opt.step()
    q, opt2 = make()
    with torch.no_grad():
        q.copy_(saved_p)
    opt2.load_state_dict(saved)
    for step in range(2, 4):
        q.grad = grads(step)
        opt2.step()
    assert torch.equal(p, q)


@pytest.mark.parametrize("blocks,match", [([[24, 40, 5]], "summing to its 70 rows"),
                                          ([[24, 46]], None),
                                          ([SIZES, SIZES], "one entry"),
                                          ([[24, 0, 46]], "positive")])
def test_bad_row_blocks_are_one_line_errors(blocks, match):
    p = nn.Parameter(torch.randn(sum(SIZES), COLS))
    if match is None:
        Muon([{"params": [p], "row_blocks": blocks}])
        return
    with pytest.raises(MuonConfigError, match=match) as err:
        Muon([{"params": [p], "row_blocks": blocks}])
    assert "\n" not in str(err.value)


def test_factory_per_block_reads_blocks_from_the_config():
    from mamba_trainer.models import build_model
    from optimizers import create_muon_optimizer
    from optimizers.fused_blocks import fused_row_blocks

    torch.manual_seed(0)
    model = build_model("hybrid-tiny", vocab_size=1024)
    expected = {n: [k for _, k in b] for n, b in fused_row_blocks(model).items()}
    opt = create_muon_optimizer(model, fused="per_block", verbose=False)
    recorded = {n: b for g in opt.describe()["groups"] for n, b in (g.get("row_blocks") or {}).items()}
    assert recorded == expected and any("in_proj" in n for n in recorded)
    whole = create_muon_optimizer(model, verbose=False)
    assert not any(g.get("row_blocks") for g in whole.describe()["groups"])
    with pytest.raises(MuonConfigError, match="valid: auto, whole, per_block, per_block_dt_adamw"):
        create_muon_optimizer(model, fused="blocks", verbose=False)


def _trained(model, fused: str, steps: int = 2) -> tuple[dict, object]:
    """``model``'s parameters after ``steps`` Muon steps on fixed random gradients, and the optimizer."""
    from optimizers import create_muon_optimizer

    opt = create_muon_optimizer(model, lr=0.02, fused=fused, compute_dtype="float32", verbose=False)
    for step in range(steps):
        gen = torch.Generator().manual_seed(step)
        for p in model.parameters():
            p.grad = torch.randn(p.shape, generator=gen)
        opt.step()
    return {n: p.detach().clone() for n, p in model.named_parameters()}, opt


@pytest.mark.parametrize("size, expected", [("mamba-tiny", "per_block_dt_adamw"), ("hybrid-tiny", "whole")])
def test_auto_trains_exactly_as_the_mode_measured_best_for_the_family(size, expected):
    """The default ("auto") is per_block_dt_adamw on pure Mamba2 and whole on the Zamba2 hybrid: the same updates
    as passing that mode, and different ones from the other (so the choice is really made)."""
    from mamba_trainer.models import build_model

    def fresh():
        torch.manual_seed(0)
        return build_model(size, vocab_size=256)

    auto, opt = _trained(fresh(), "auto")
    assert opt.fused_blocks == expected and opt.describe()["fused_blocks"] == expected
    assert opt.fused_blocks_reason == f"auto: {fresh().config.model_type}"
    assert f"fused projections: {expected} (auto: " in opt.compute_summary()
    same, _ = _trained(fresh(), expected)
    other, _ = _trained(fresh(), "whole" if expected != "whole" else "per_block_dt_adamw")
    assert all(torch.equal(auto[n], same[n]) for n in auto)
    assert max((auto[n] - other[n]).abs().max().item() for n in auto if "in_proj" in n) > 1e-4


def test_auto_is_whole_for_models_without_a_known_family_and_on_fsdp2_shards():
    from optimizers import create_muon_optimizer
    from optimizers.factory import resolve_fused

    plain = nn.Sequential(nn.Linear(8, 16), nn.Linear(16, 4))
    opt = create_muon_optimizer(plain, verbose=False)
    assert opt.fused_blocks == "whole" and opt.fused_blocks_reason == "auto: Sequential"

    class Mamba2Like(nn.Module):  # a Mamba2 config whose weights are FSDP2 shards (DTensor-like parameters)
        config = type("Config", (), {"model_type": "mamba2"})()

        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(8, 8)
            self.proj.weight.device_mesh, self.proj.weight.placements = object(), ()

    sharded = Mamba2Like()
    mode, why = resolve_fused(sharded, "auto")
    assert mode == "whole" and "FSDP2" in why and "per_block_dt_adamw" in why
    assert resolve_fused(sharded, "whole") == ("whole", "as given")
    with pytest.raises(MuonConfigError, match="does not run on FSDP2-sharded parameters; use fused='whole'") as err:
        resolve_fused(sharded, "per_block")
    assert "\n" not in str(err.value)
    unmeasured = nn.Linear(8, 8)
    unmeasured.config = type("Config", (), {"model_type": "falcon_h1"})()
    assert resolve_fused(unmeasured, "auto") == ("whole", "auto: falcon_h1")


@pytest.mark.parametrize("decoupled_wd", [True, False])
def test_adamw_blocks_update_like_an_adamw_group(decoupled_wd):
    """adamw_blocks: the dt-like block steps as a parameter of an AdamW group at lr·adamw_lr_ratio, the other
    blocks as separate Muon parameters — through a save/load of the state in the middle."""
    gen = torch.Generator().manual_seed(1)
    fused = nn.Parameter(torch.randn(sum(SIZES), COLS, generator=gen))
    parts = [nn.Parameter(t.clone()) for t in fused.detach().split(SIZES)]
    kw = dict(lr=0.02, momentum=0.9, weight_decay=0.1, compute_dtype="float32", decoupled_wd=decoupled_wd)
    adamw = dict(betas=(0.9, 0.99), eps=1e-6)

    def make(p, ref):
        if ref:
            return Muon([{"params": ref[:2]}, {"params": ref[2:], "use_muon": False, "lr": 0.02 * 0.25, **adamw}],
                        **kw)
        return Muon([{"params": [p], "row_blocks": [SIZES], "adamw_blocks": [[2]], "adamw_lr_ratio": 0.25,
                      **adamw}], **kw)

    ours, ref = make(fused, None), make(None, parts)
    for step in range(4):
        if step == 2:  # state survives a round trip (the block's step count stays fp32 on its device)
            saved = copy.deepcopy(ours.state_dict())
            ours = make(fused, None)
            ours.load_state_dict(saved)
            assert ours.state[fused]["step_rows2"].dtype == torch.float32
        g = grads(step)
        fused.grad = g.clone()
        for p, gp in zip(parts, g.split(SIZES)):
            p.grad = gp.clone()
        ours.step()
        ref.step()
    torch.testing.assert_close(fused.detach(), torch.cat([p.detach() for p in parts]), atol=1e-6, rtol=0)
    assert ours.state[fused]["step_rows2"].item() == 4  # AdamW's bias correction counted every step


@pytest.mark.parametrize("group,match", [({"adamw_blocks": [[2]]}, "needs row_blocks"),
                                         ({"row_blocks": [SIZES], "adamw_blocks": [[3]]}, "indices into"),
                                         ({"row_blocks": [SIZES], "adamw_blocks": [[2]], "adamw_lr_ratio": 0},
                                          "adamw_lr_ratio"),
                                         ({"row_blocks": [SIZES], "row_interleave": [4]}, "divides every block"),
                                         ({"row_interleave": [2]}, "row_interleave needs row_blocks"),
                                         ({"row_blocks": [SIZES], "row_interleave": [2], "adamw_blocks": [[2]]},
                                          "interleaved blocks stay on Muon")])
def test_bad_adamw_blocks_and_row_interleave_are_one_line_errors(group, match):
    p = nn.Parameter(torch.randn(sum(SIZES), COLS))
    with pytest.raises(MuonConfigError, match=match) as err:
        Muon([{"params": [p], **group}])
    assert "\n" not in str(err.value)


def test_factory_dt_adamw_puts_only_in_proj_dt_rows_on_adamw():
    from mamba_trainer.models import build_model
    from optimizers import create_muon_optimizer
    from optimizers.fused_blocks import fused_row_blocks

    torch.manual_seed(0)
    model = build_model("hybrid-tiny", vocab_size=1024)
    blocks = fused_row_blocks(model)
    opt = create_muon_optimizer(model, lr=0.02, adamw_lr=0.004, fused="per_block_dt_adamw", verbose=False)
    muon = next(g for g in opt.describe()["groups"] if g.get("row_blocks"))
    picked = muon["adamw_blocks"]
    assert picked and set(picked) == {n for n in blocks if n.endswith("in_proj.weight")}
    assert all([blocks[n][i][0] for i in idx] == ["dt"] for n, idx in picked.items())
    assert muon["adamw_lr_ratio"] == pytest.approx(0.2)
    # a step moves the dt rows by about AdamW's lr per element (Adam's first step is ~lr·sign(grad))
    name = next(iter(picked))
    p = dict(model.named_parameters())[name]
    dt_rows = slice(p.shape[0] - blocks[name][-1][1], p.shape[0])
    before = p.detach().clone()
    for q in model.parameters():
        q.grad = torch.randn_like(q)
    opt.step()
    moved = (p.detach() - before)[dt_rows]
    decay = before[dt_rows] * 0.004 * 0.01
    torch.testing.assert_close((moved + decay).abs(), torch.full_like(moved, 0.004), atol=1e-6, rtol=1e-3)


def test_a_checkpoint_of_another_fused_mode_continues_in_that_mode():
    """A Mamba2 run saved under "whole" (the default before "auto") and resumed under "auto": torch restores the
    saved groups, so it continues whole-matrix, exactly as the uninterrupted run, and says so."""
    from mamba_trainer.models import build_model

    def fresh():
        torch.manual_seed(0)
        return build_model("mamba-tiny", vocab_size=256)

    straight, _ = _trained(fresh(), "whole", steps=3)
    model = fresh()
    _, first = _trained(model, "whole", steps=2)
    saved = copy.deepcopy(first.state_dict())
    from optimizers import create_muon_optimizer

    resumed = create_muon_optimizer(model, lr=0.02, compute_dtype="float32", verbose=False)
    assert resumed.fused_blocks == "per_block_dt_adamw"
    resumed.load_state_dict(saved)
    assert resumed.fused_blocks == "whole" and "checkpoint" in resumed.fused_blocks_reason
    assert resumed.describe()["fused_blocks"] == "whole"
    gen = torch.Generator().manual_seed(2)  # the third step's gradients, as _trained draws them
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=gen)
    resumed.step()
    assert all(torch.equal(p.detach(), straight[n]) for n, p in model.named_parameters())
