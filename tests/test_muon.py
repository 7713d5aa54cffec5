"""`Muon` against its references (torch.optim.Muon, torch.optim.AdamW, bitsandbytes AdamW8bit), plus
resume, NorMuon, non-finite handling, bad input and describe()."""

import copy
import io
import json
import math

import bitsandbytes as bnb
import pytest
import torch
from torch import nn

from optimizers import Muon, MuonConfigError, create_muon_optimizer, momentum_at_step

pytestmark = pytest.mark.usefixtures("one_torch_thread")


SHAPES = [(32, 48), (32, 48), (64, 16), (16, 64), (24, 24)]  # a bucket of two, tall, wide, square


def make_params(shapes, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [nn.Parameter(torch.randn(s, generator=gen)) for s in shapes]


def clone(params):
    return [nn.Parameter(p.detach().clone()) for p in params]


def set_grads(seed, *param_lists):
    gen = torch.Generator().manual_seed(seed)
    grads = [torch.randn(p.shape, generator=gen) for p in param_lists[0]]
    for params in param_lists:
        for p, g in zip(params, grads):
            p.grad = g.clone()


def adamw_group(params, **kw):
    return {"params": params, "use_muon": False, "name": "adamw", **kw}


class TinyLM(nn.Module):
    """Embedding, two Linear layers of one shape (a Muon bucket), a norm with bias, an untied head."""

    def __init__(self, vocab=160, dim=32):  # 160 x 32 >= 4096: embedding and head get 8-bit AdamW state
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.up = nn.Linear(dim, 2 * dim, bias=False)
        self.mid = nn.Linear(2 * dim, 2 * dim)
        self.mid2 = nn.Linear(2 * dim, 2 * dim, bias=False)
        self.down = nn.Linear(2 * dim, dim, bias=False)
        self.norm = nn.LayerNorm(dim)
        self.lm_head = nn.Linear(dim, vocab, bias=False)

    def get_input_embeddings(self):
        return self.embed

    def get_output_embeddings(self):
        return self.lm_head

    def forward(self, ids):
        h = self.embed(ids)
        h = h + self.down(torch.relu(self.mid2(torch.relu(self.mid(self.up(h))))))
        return self.lm_head(self.norm(h))


def train(model, optimizer, steps, start=0, schedule=True):
    for step in range(start, start + steps):
        gen = torch.Generator().manual_seed(1000 + step)
        ids = torch.randint(0, 160, (4, 9), generator=gen)
        if schedule:  # what MomentumScheduleCallback does every step
            for g in optimizer.param_groups:
                if g["use_muon"]:
                    g["momentum"] = momentum_at_step(step, warmup_steps=4)
        logits = model(ids[:, :-1])
        loss = nn.functional.cross_entropy(logits.reshape(-1, 160), ids[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


# ---------------------------------------------------------------------------------------- references


@pytest.mark.parametrize("adjust_lr", [None, "original", "match_rms_adamw"])
@pytest.mark.parametrize("nesterov", [True, False])
def test_matches_torch_muon(adjust_lr, nesterov):
    """torch.optim.Muon runs NS in bf16, so ours runs with compute_dtype=bf16 here. On the dev machine the
    results are bit-identical; the tolerance allows one bf16 ulp of the update (|O| <~ 0.3) times lr."""
    ours_p = make_params(SHAPES)
    ref_p = clone(ours_p)
    kw = dict(lr=0.02, momentum=0.9, nesterov=nesterov, weight_decay=0.1)
    ours = Muon([{"params": ours_p}], adjust_lr=adjust_lr or "original", compute_dtype=torch.bfloat16,
                ns_method="plain", **kw)
    ref = torch.optim.Muon(ref_p, adjust_lr_fn=adjust_lr, **kw)
    start = [p.detach().clone() for p in ours_p]
    for step in range(3):
        set_grads(step, ours_p, ref_p)
        ours.step()
        ref.step()
        for a, b in zip(ours_p, ref_p):
            torch.testing.assert_close(a, b, atol=0.02 * 4 * 2**-8 * 0.3, rtol=0)
    assert all((a - s).abs().max() > 1e-3 for a, s in zip(ours_p, start))  # it did move


def test_matches_torch_muon_when_momentum_changes_every_step():
    ours_p = make_params(SHAPES)
    ref_p = clone(ours_p)
    ours = Muon([{"params": ours_p}], lr=0.02, weight_decay=0.1, compute_dtype="bfloat16", ns_method="plain")
    ref = torch.optim.Muon(ref_p, lr=0.02, weight_decay=0.1)
    for step in range(4):
        for opt in (ours, ref):
            opt.param_groups[0]["momentum"] = momentum_at_step(step, warmup_steps=3)
        set_grads(step, ours_p, ref_p)
        ours.step()
        ref.step()
    for a, b in zip(ours_p, ref_p):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0)


@pytest.mark.parametrize("decoupled", [True, False])
def test_adamw_groups_match_torch(decoupled):
    """Decoupled: torch.optim.AdamW; L2 (decoupled_wd=False): torch.optim.Adam with weight_decay. Tensors of
    >= 32768 elements use torch's fused kernel (bit-identical to fused=True), smaller ones the foreach path
    (bit-identical to the default single-tensor path); both paths agree to ~1 ulp."""
    shapes = [(100,), (30, 20), (7, 3, 5), (256, 160)]
    ours_p = make_params(shapes)
    fused_p, plain_p = clone(ours_p), clone(ours_p)
    kw = dict(lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    ours = Muon([adamw_group(ours_p, decoupled_wd=decoupled, **kw)])
    cls = torch.optim.AdamW if decoupled else torch.optim.Adam
    fused, plain = cls(fused_p, fused=True, **kw), cls(plain_p, **kw)
    for step in range(5):
        set_grads(step, ours_p, fused_p, plain_p)
        for opt in (ours, fused, plain):
            opt.step()
    assert all(torch.equal(a, b) for a, b in zip(ours_p[:3], plain_p[:3]))
    assert torch.equal(ours_p[3], fused_p[3])
    for a, b, s in zip(ours_p, plain_p, make_params(shapes)):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
        assert (a - s).abs().max() > 0.01


def test_adamw_8bit_matches_bitsandbytes():
    """Tensors >= 4096 elements: bnb's 8-bit kernel (bit-identical to bnb.optim.AdamW8bit);
    smaller ones keep fp32 moments, as bnb does, and match torch.optim.AdamW."""
    shapes = [(128, 64), (300, 70), (50,)]
    ours_p = make_params(shapes)
    bnb_p, fp32_p, start = clone(ours_p), clone(ours_p), clone(ours_p)
    kw = dict(lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    ours = Muon([adamw_group(ours_p, **kw)], adamw_8bit=True)
    ref8 = bnb.optim.AdamW8bit(bnb_p, **kw)
    ref32 = torch.optim.AdamW(fp32_p, **kw)
    for step in range(4):
        set_grads(step, ours_p, bnb_p, fp32_p)
        for opt in (ours, ref8, ref32):
            opt.step()
    assert torch.equal(ours_p[0], bnb_p[0]) and torch.equal(ours_p[1], bnb_p[1])
    assert torch.equal(ours_p[2], fp32_p[2])
    assert ours.state[ours_p[0]]["exp_avg_q"].dtype == torch.uint8
    # tracks fp32 AdamW: the 8-bit moments change the total movement by a few percent (relative L2)
    delta8, delta32 = ours_p[1] - start[1], fp32_p[1] - start[1]
    assert 0 < (delta8 - delta32).norm() / delta32.norm() < 0.1


def test_batched_bucket_equals_separate_optimizers():
    params = make_params([(32, 48)] * 3)
    singles = [clone([p]) for p in params]
    batched = Muon([{"params": params}], lr=0.02)
    separate = [Muon([{"params": s}], lr=0.02) for s in singles]
    for step in range(3):
        set_grads(step, params, [s[0] for s in singles])
        batched.step()
        for opt in separate:
            opt.step()
    for p, s in zip(params, singles):
        torch.testing.assert_close(p, s[0], atol=1e-6, rtol=0)


def test_expert_stack_equals_separate_matrices():
    """A 3-D (E, m, n) parameter (MoE experts) is E independent matrices to Muon."""
    (stack,) = make_params([(3, 16, 24)])
    singles = [nn.Parameter(m.detach().clone()) for m in stack]
    opt_stack, opt_singles = Muon([{"params": [stack]}], lr=0.02), Muon([{"params": singles}], lr=0.02)
    for step in range(2):
        gen = torch.Generator().manual_seed(step)
        stack.grad = torch.randn(3, 16, 24, generator=gen)
        for s, g in zip(singles, stack.grad):
            s.grad = g.clone()
        opt_stack.step()
        opt_singles.step()
    torch.testing.assert_close(stack.detach(), torch.stack([s.detach() for s in singles]), atol=1e-6, rtol=0)


def test_update_scale():
    from optimizers.functional import update_scale

    assert update_scale((64, 16), "original") == 2.0 and update_scale((16, 64), "original") == 1.0
    assert update_scale((16, 64), "match_rms_adamw") == pytest.approx(1.6)
    assert update_scale((64, 16), "none") == 1.0


# ------------------------------------------------------------------------------------------- resume


@pytest.mark.parametrize("options", [
    {},
    {"beta2": 0.95, "adamw_8bit": True, "backend": "polar_express", "decoupled_wd": False},
], ids=["default", "normuon-8bit-pe-l2"])
def test_resume_is_bit_identical(options):
    torch.manual_seed(0)
    initial = TinyLM()
    options = {**options, "verbose": False, "lr": 0.02, "adamw_lr": 3e-3}
    full = copy.deepcopy(initial)
    opt_full = create_muon_optimizer(full, **options)
    train(full, opt_full, 6)

    first = copy.deepcopy(initial)
    opt_first = create_muon_optimizer(first, **options)
    train(first, opt_first, 3)
    buffer = io.BytesIO()
    torch.save({"model": first.state_dict(), "optimizer": opt_first.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)  # what HF Trainer does with optimizer.pt

    resumed = copy.deepcopy(initial)
    resumed.load_state_dict(saved["model"])
    opt_resumed = create_muon_optimizer(resumed, **options)
    opt_resumed.load_state_dict(saved["optimizer"])
    train(resumed, opt_resumed, 3, start=3)
    for (name, a), b in zip(full.named_parameters(), resumed.parameters()):
        assert torch.equal(a, b), name
    assert [g["name"] for g in opt_resumed.param_groups] == ["muon", "adamw_decay", "adamw_no_decay"]
    if options.get("adamw_8bit"):
        assert any(s.get("exp_avg_q", torch.empty(0)).dtype == torch.uint8 for s in opt_resumed.state.values())


def lr_factor(kind, step, warmup, total):
    """transformers' schedules, written out: linear warmup, then linear / half-cosine decay to 0, or constant."""
    if step < warmup:
        return step / warmup
    progress = (step - warmup) / (total - warmup)
    return {"linear": max(0.0, 1.0 - progress), "cosine": max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress))),
            "constant_with_warmup": 1.0}[kind]


@pytest.mark.parametrize("kind", ["linear", "cosine", "constant_with_warmup"])
def test_lr_scheduler_scales_every_group(kind):
    """The Trainer's scheduler (transformers.get_scheduler) on our optimizer: at every step each group's lr is its
    own base lr (Muon 0.02, both AdamW groups 1e-3) times the schedule's factor, and the step uses it (lr 0 moves
    nothing)."""
    from transformers import get_scheduler

    model = TinyLM()
    opt = create_muon_optimizer(model, lr=0.02, adamw_lr=1e-3, verbose=False)
    warmup, total = 3, 10
    sched = get_scheduler(kind, opt, num_warmup_steps=warmup, num_training_steps=total)
    assert [g["initial_lr"] for g in opt.param_groups] == [0.02, 1e-3, 1e-3]
    for step in range(total):
        f = lr_factor(kind, step, warmup, total)
        assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.02 * f, 1e-3 * f, 1e-3 * f], rel=1e-12, abs=0)
        assert sched.get_last_lr() == [g["lr"] for g in opt.param_groups]
        before = [p.detach().clone() for p in model.parameters()]
        train(model, opt, 1, start=step)
        moved = [not torch.equal(b, p) for b, p in zip(before, model.parameters())]
        assert all(moved) if f > 0 else not any(moved), (step, f)
        sched.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.02, 1e-3, 1e-3] if kind == "constant_with_warmup"
                                                                 else [0.0, 0.0, 0.0], abs=1e-15)


# ------------------------------------------------------------------------------------------ features


def test_momentum_at_step():
    assert momentum_at_step(0) == 0.85
    assert momentum_at_step(150) == pytest.approx(0.90)
    assert momentum_at_step(300) == momentum_at_step(10_000) == 0.95
    assert momentum_at_step(5, start=0.5, end=0.9, warmup_steps=0) == 0.9
    values = [momentum_at_step(s, warmup_steps=10) for s in range(12)]
    assert values == sorted(values) and values[-1] == 0.95


def reference_normuon(W, grads, lr, momentum, beta2):
    """NorMuon as in its paper's reference code, fp32: Nesterov momentum, NS5, per-row second moment."""
    from optimizers import orthogonalize

    buf, v = torch.zeros_like(W), torch.zeros(W.shape[0], 1)
    for g in grads:
        buf.lerp_(g, 1 - momentum)
        O = orthogonalize(g.lerp(buf, momentum))
        norm = O.norm()
        v.lerp_(O.square().mean(dim=-1, keepdim=True), 1 - beta2)
        O = O / (v.sqrt() + 1e-10)
        O = O * norm / (O.norm() + 1e-10)
        W = W - lr * max(1, W.shape[0] / W.shape[1]) ** 0.5 * O
    return W


def test_normuon_matches_reference_and_keeps_update_norm():
    (p,) = make_params([(48, 16)])
    W0 = p.detach().clone()
    grads = [torch.randn(48, 16, generator=torch.Generator().manual_seed(s)) for s in range(3)]
    opt = Muon([{"params": [p]}], lr=0.02, beta2=0.95)
    plain = clone([p.detach().clone()])
    opt_plain = Muon([{"params": plain}], lr=0.02)
    for i, g in enumerate(grads):
        p.grad, plain[0].grad = g.clone(), g.clone()
        before = p.detach().clone()
        opt.step()
        opt_plain.step()
        if i == 0:  # first step: every row of the update has the same RMS, norm equals plain Muon's
            delta = p.detach() - before
            rows = delta.norm(dim=1)
            torch.testing.assert_close(rows, rows.mean().expand_as(rows), rtol=1e-4, atol=0)
            torch.testing.assert_close(delta.norm(), (plain[0].detach() - before).norm(), rtol=1e-5, atol=0)
    torch.testing.assert_close(p.detach(), reference_normuon(W0, grads, 0.02, 0.95, 0.95), atol=1e-6, rtol=0)
    assert opt.state[p]["second_moment"].shape == (48, 1)


def nan_setup(nonfinite):
    model = TinyLM()
    opt = create_muon_optimizer(model, nonfinite=nonfinite, verbose=False)
    train(model, opt, 1)
    return model, opt


def test_nonfinite_raise_names_param_and_step():
    model, opt = nan_setup("raise")
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    model.mid.weight.grad[3, 4] = float("nan")
    with pytest.raises(FloatingPointError) as err:
        opt.step()
    message = str(err.value)
    assert "mid.weight" in message and "step 2" in message and "\n" not in message


def test_nonfinite_skip_leaves_everything_untouched():
    model, opt = nan_setup("skip")
    params = [p.detach().clone() for p in model.parameters()]
    state = copy.deepcopy(opt.state_dict())
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    model.embed.weight.grad[0, 0] = float("inf")
    opt.step()
    assert opt.skipped_steps == 1
    assert all(torch.equal(a, b) for a, b in zip(params, model.parameters()))
    after = opt.state_dict()
    for key, s in state["state"].items():
        for k, v in s.items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(after["state"][key][k])), k
    fresh = create_muon_optimizer(model, nonfinite="skip", verbose=False)
    fresh.load_state_dict(after)
    assert fresh.skipped_steps == 1 and fresh.step_count == 2


def test_huge_finite_gradient_is_not_nonfinite():
    model, opt = nan_setup("raise")
    for p in model.parameters():
        p.grad = torch.full_like(p, 1e30)  # sum of squares overflows fp32; the values are finite
    opt.step()
    assert opt.skipped_steps == 0


@pytest.mark.parametrize("kwargs, fragment", [
    ({"lr": 0.0}, "lr"),
    ({"lr": -1e-3}, "lr"),
    ({"momentum": 1.0}, "momentum"),
    ({"momentum": -0.1}, "momentum"),
    ({"backend": "newtonshulz5"}, "newtonschulz5"),
    ({"adjust_lr": "rms"}, "match_rms_adamw"),
    ({"nonfinite": "ignore"}, "skip"),
    ({"beta2": 1.0}, "beta2"),
])
def test_bad_input_is_one_line(kwargs, fragment):
    with pytest.raises(MuonConfigError) as err:
        Muon([{"params": make_params([(8, 8)])}], **kwargs)
    assert fragment in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("shape", [(16,), (48, 1, 4), (1, 32)])
def test_non_matrix_forced_into_muon(shape):
    with pytest.raises(MuonConfigError) as err:
        Muon([{"params": make_params([shape]), "param_names": ["layer.conv1d.weight"]}])
    assert "layer.conv1d.weight" in str(err.value) and "\n" not in str(err.value)


def test_momentum_set_out_of_range_by_a_callback():
    params = make_params([(8, 8)])
    opt = Muon([{"params": params}])
    opt.param_groups[0]["momentum"] = 1.5
    set_grads(0, params)
    with pytest.raises(MuonConfigError, match="momentum"):
        opt.step()


def test_describe_is_json_and_names_every_param():
    model = TinyLM()
    opt = create_muon_optimizer(model, verbose=False, backend=[(3.4445, -4.775, 2.0315)] * 3)
    info = json.loads(json.dumps(opt.describe()))
    names = {g["name"]: g["param_names"] for g in info["groups"]}
    assert names["muon"] == ["up.weight", "mid.weight", "mid2.weight", "down.weight"]
    assert names["adamw_decay"] == ["lm_head.weight"]
    assert set(names["adamw_no_decay"]) == {"embed.weight", "mid.bias", "norm.weight", "norm.bias"}
    muon = info["groups"][0]
    assert muon["ns_steps"] == 3 and muon["use_muon"] and muon["momentum"] == 0.95
    assert info["groups"][1]["lr"] == pytest.approx(3e-4)  # adamw_lr defaults to lr / 10
    assert info["groups"][2]["weight_decay"] == 0.0
