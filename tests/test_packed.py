"""Packed rows keep their examples apart (mamba_trainer.packed): each example of a packed row gets the logits, loss
and gradients it gets alone, for Mamba2, Zamba2 and the two-shared-block hybrid; with no boundary in the batch the
model is transformers' own forward, bit for bit. CPU, fp32."""

import copy
import inspect
import json
import logging

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

from mamba_trainer import packed
from mamba_trainer.models import build_config, build_model, load_pretrained
from mamba_trainer.packed import (TESTED_TRANSFORMERS, enable_packed_boundaries, packed_boundaries_enabled,
                                  packed_causal_conv1d, packed_ssd_scan, seq_idx_from_position_ids,
                                  transformers_in_tested_range)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

VOCAB = 1024
LENGTHS = [5, 3, 17, 40]  # starts 0, 5, 8, 25; 65 tokens: chunk boundaries fall inside examples and at a start
# (size, config overrides): every family, default chunks and small ones (examples spanning several chunks)
CASES = [("mamba-tiny", {}), ("mamba-tiny", {"chunk_size": 8}), ("hybrid-tiny", {}),
         ("hybrid-tiny", {"chunk_size": 16}), ("hybrid-tiny-2", {}), ("hybrid-tiny-2", {"chunk_size": 8})]
CASE_IDS = [f"{size}{'-chunk' + str(o['chunk_size']) if o else ''}" for size, o in CASES]
SIZES = ["mamba-tiny", "hybrid-tiny", "hybrid-tiny-2"]


def examples(lengths, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, VOCAB, (n,), generator=g) for n in lengths]


def pack(exs):
    """input_ids, position_ids restarting at 0, labels with -100 at each example's first token (as data.py does)."""
    ids = torch.cat(exs)
    pos = torch.cat([torch.arange(len(e)) for e in exs])
    labels = ids.clone()
    labels[pos == 0] = -100
    return ids, pos, labels


def split(row, exs):
    return list(torch.split(row, [len(e) for e in exs]))


def ce(logits, ids):
    """Mean next-token cross entropy of one example (what the model's loss is for it alone)."""
    return F.cross_entropy(logits[:-1].float(), ids[1:])


@pytest.fixture(scope="module")
def models():
    cache = {}

    def get(size, **overrides):
        key = (size, tuple(sorted(overrides.items())))
        if key not in cache:
            cache[key] = build_model(size, vocab_size=VOCAB, seed=0, **overrides)
        return cache[key]
    return get


# ---- no boundaries: transformers' own forward --------------------------------------------------------------
@pytest.mark.parametrize("size", SIZES)
def test_no_boundaries_is_bit_identical_to_transformers(size):
    model = build_model(size, vocab_size=VOCAB, seed=0).train()
    assert packed_boundaries_enabled(model)
    config = build_config(size, VOCAB)
    torch.manual_seed(0)
    plain = AutoModelForCausalLM.from_config(config).train()
    assert not packed_boundaries_enabled(plain)
    for (name, a), b in zip(model.state_dict().items(), plain.state_dict().values()):
        assert torch.equal(a, b), name
    ids = torch.randint(3, VOCAB, (2, 37), generator=torch.Generator().manual_seed(2))
    arange = torch.arange(ids.shape[1])
    for position_ids in [None, arange[None], arange[None].expand(2, -1), arange[None] + 7]:
        kwargs = {} if position_ids is None else {"position_ids": position_ids}
        plain_kwargs = {} if size.startswith("mamba") else kwargs  # transformers' Mamba2 takes no position_ids
        outs = []
        for m, kw in [(model, kwargs), (plain, plain_kwargs)]:
            m.zero_grad(set_to_none=True)
            out = m(input_ids=ids, labels=ids, **kw)
            out.loss.backward()
            outs.append((out.logits.detach(), out.loss.detach(), [p.grad.clone() for p in m.parameters()]))
        (logits, loss, grads), (plain_logits, plain_loss, plain_grads) = outs
        assert torch.equal(logits, plain_logits) and torch.equal(loss, plain_loss)
        assert all(torch.equal(g, h) for g, h in zip(grads, plain_grads))


# ---- a packed row: each example as if alone ----------------------------------------------------------------
@pytest.mark.parametrize("size,overrides", CASES, ids=CASE_IDS)
def test_packed_row_logits_and_loss_match_each_example_alone(models, size, overrides):
    model = models(size, **overrides).eval()
    exs = examples(LENGTHS)
    ids, pos, labels = pack(exs)
    with torch.no_grad():
        out = model(input_ids=ids[None], position_ids=pos[None], labels=labels[None])
        alone = [model(input_ids=e[None], labels=e[None]) for e in exs]
        leaky = model(input_ids=ids[None]).logits[0]
    diffs = [(p - a.logits[0]).abs().max().item() for p, a in zip(split(out.logits[0], exs), alone)]
    assert max(diffs) < 1e-5, diffs
    losses = [ce(p, e) for p, e in zip(split(out.logits[0], exs), exs)]
    assert max(abs(l.item() - a.loss.item()) for l, a in zip(losses, alone)) < 1e-5
    # the model's own loss of the packed row: the token-weighted mean of the examples' losses
    weighted = sum(a.loss * (len(e) - 1) for a, e in zip(alone, exs)) / sum(len(e) - 1 for e in exs)
    assert abs(out.loss.item() - weighted.item()) < 1e-5
    # and without position_ids the examples do leak into each other (the test can tell)
    assert (split(leaky, exs)[1] - alone[1].logits[0]).abs().max() > 1e-2


@pytest.mark.parametrize("size,overrides", [CASES[1], CASES[3], CASES[5]], ids=[CASE_IDS[1], CASE_IDS[3], CASE_IDS[5]])
def test_packed_row_gradients_match_the_sum_over_examples_alone(models, size, overrides):
    model = models(size, **overrides).train()
    exs = examples(LENGTHS, seed=3)
    ids, pos, _ = pack(exs)
    model.zero_grad(set_to_none=True)
    logits = model(input_ids=ids[None], position_ids=pos[None]).logits[0]
    sum(ce(p, e) for p, e in zip(split(logits, exs), exs)).backward()
    packed_grads = torch.cat([p.grad.flatten() for p in model.parameters()])
    model.zero_grad(set_to_none=True)
    for e in exs:
        model(input_ids=e[None], labels=e[None]).loss.backward()
    alone_grads = torch.cat([p.grad.flatten() for p in model.parameters()])
    model.zero_grad(set_to_none=True)
    rel = ((packed_grads - alone_grads).norm() / alone_grads.norm()).item()
    assert rel < 1e-5, rel


def test_two_packed_rows_with_different_boundaries(models):
    model = models("hybrid-tiny-2", chunk_size=8).eval()
    rows = [examples([5, 17, 40, 3], seed=4), examples([30, 1, 34], seed=5)]  # both 65 tokens; a 1-token example
    packed_rows = [pack(r) for r in rows]
    ids = torch.stack([p[0] for p in packed_rows])
    pos = torch.stack([p[1] for p in packed_rows])
    with torch.no_grad():
        logits = model(input_ids=ids, position_ids=pos).logits
        for row, exs in zip(logits, rows):
            for p, e in zip(split(row, exs), exs):
                assert (p - model(input_ids=e[None]).logits[0]).abs().max() < 1e-5


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_zamba2_attention_is_causal_within_each_example(implementation):
    model = build_model("hybrid-tiny-2", vocab_size=VOCAB, seed=0).eval()
    model.set_attn_implementation(implementation)
    exs = examples([9, 20, 12], seed=6)
    ids, pos, _ = pack(exs)
    with torch.no_grad():
        logits = model(input_ids=ids[None], position_ids=pos[None], attention_mask=torch.ones_like(ids)[None]).logits[0]
        for p, e in zip(split(logits, exs), exs):
            assert (p - model(input_ids=e[None]).logits[0]).abs().max() < 1e-5


@pytest.mark.parametrize("size", ["mamba-tiny", "hybrid-tiny"])
def test_takes_a_batch_of_transformers_flattening_collator(models, size):
    from transformers import DataCollatorWithFlattening
    model = models(size).eval()
    exs = examples([11, 4, 23], seed=13)
    collate = DataCollatorWithFlattening(return_flash_attn_kwargs=True, return_seq_idx=True)
    batch = collate([{"input_ids": e.tolist()} for e in exs])
    with torch.no_grad():
        out = model(**batch)
        alone = [model(input_ids=e[None], labels=e[None]) for e in exs]
    for p, a in zip(split(out.logits[0], exs), alone):
        assert (p - a.logits[0]).abs().max() < 1e-5
    weighted = sum(a.loss * (len(e) - 1) for a, e in zip(alone, exs)) / sum(len(e) - 1 for e in exs)
    assert abs(out.loss.item() - weighted.item()) < 1e-5


def test_gradient_checkpointing_keeps_the_boundaries(models):
    model = build_model("hybrid-tiny", vocab_size=VOCAB, seed=0, chunk_size=16).train()
    exs = examples(LENGTHS, seed=7)
    ids, pos, labels = pack(exs)
    grads = []
    for checkpointing in (False, True):
        if checkpointing:  # activation_checkpointing_enable: the newer name
            getattr(model, "activation_checkpointing_enable", model.gradient_checkpointing_enable)()
        model.zero_grad(set_to_none=True)
        model(input_ids=ids[None], position_ids=pos[None], labels=labels[None]).loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert ((grads[0] - grads[1]).norm() / grads[0].norm()).item() < 1e-6


def test_mamba2_padding_mask_in_a_packed_row(models):
    model = models("mamba-tiny", chunk_size=8).eval()
    exs = examples([7, 13], seed=8)
    ids, pos, _ = pack(exs + [torch.zeros(6, dtype=torch.long)])  # padding: its own run of positions, mask 0
    mask = torch.ones_like(ids)
    mask[-6:] = 0
    with torch.no_grad():
        logits = model(input_ids=ids[None], position_ids=pos[None], attention_mask=mask[None]).logits[0]
        for p, e in zip(split(logits[:20], exs), exs):
            assert (p - model(input_ids=e[None]).logits[0]).abs().max() < 1e-5


def test_refuses_what_it_cannot_keep_apart(models):
    model = models("hybrid-tiny")
    ids, pos, _ = pack(examples([6, 6]))
    mask = torch.ones_like(ids)
    mask[-2:] = 0
    with pytest.raises(ValueError, match="attention_mask zeros"):
        model(input_ids=ids[None], position_ids=pos[None], attention_mask=mask[None])
    jumpy = pos.clone()
    jumpy[3] = 9
    with pytest.raises(ValueError, match="count 0, 1, 2"):
        model(input_ids=ids[None], position_ids=jumpy[None])


# ---- the pieces, against plain references --------------------------------------------------------------------
def test_seq_idx_from_position_ids():
    pos = torch.tensor([[0, 1, 2, 0, 1, 0], [3, 4, 0, 1, 2, 3]])
    assert seq_idx_from_position_ids(pos).tolist() == [[0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 1, 1]]
    assert seq_idx_from_position_ids(pos[0]).dtype == torch.int32


def test_conv1d_matches_each_example_alone():
    g = torch.Generator().manual_seed(0)
    lengths = [1, 6, 2, 9]
    x = torch.randn(1, sum(lengths), 5, generator=g)
    weight, bias = torch.randn(5, 1, 4, generator=g), torch.randn(5, generator=g)
    seq_idx = torch.repeat_interleave(torch.arange(4), torch.tensor(lengths))[None]
    out = packed_causal_conv1d(x, weight, bias, seq_idx, "silu")
    alone = [F.silu(F.conv1d(e.transpose(1, 2), weight, bias, padding=3, groups=5)[..., :e.shape[1]]).transpose(1, 2)
             for e in torch.split(x, lengths, dim=1)]
    assert (out - torch.cat(alone, dim=1)).abs().max() < 1e-6


def test_ssd_scan_matches_the_recurrence_reset_at_each_example():
    g = torch.Generator().manual_seed(0)
    b, heads, p, groups, n = 2, 4, 3, 2, 5
    lengths = [[4, 11, 1, 14], [30]]
    seq_len = 30
    x = torch.randn(b, seq_len, heads, p, generator=g)
    dt = torch.randn(b, seq_len, heads, generator=g)
    A = -torch.rand(heads, generator=g) * 4
    B, C = torch.randn(2, b, seq_len, groups, n, generator=g)
    D, dt_bias = torch.randn(heads, generator=g), torch.randn(heads, generator=g)
    seq_idx = torch.stack([torch.repeat_interleave(torch.arange(len(r)), torch.tensor(r)) for r in lengths])
    out = packed_ssd_scan(x, dt, A, B, C, 8, seq_idx, D=D, dt_bias=dt_bias, dt_limit=(0.01, float("inf")))
    # reference: h_t = exp(dt A) h_{t-1} + dt B_t x_t, y_t = C_t h_t + D x_t; h = 0 at each example's first token
    delta = F.softplus(dt + dt_bias).clamp(min=0.01)
    Bh, Ch = (t.repeat_interleave(heads // groups, dim=2) for t in (B, C))
    ref = torch.zeros_like(out)
    for i in range(b):
        state = torch.zeros(heads, p, n)
        for t in range(seq_len):
            if t > 0 and seq_idx[i, t] != seq_idx[i, t - 1]:
                state = torch.zeros(heads, p, n)
            state = torch.exp(delta[i, t] * A)[:, None, None] * state \
                + delta[i, t][:, None, None] * x[i, t][:, :, None] * Bh[i, t][:, None, :]
            ref[i, t] = (state * Ch[i, t][:, None, :]).sum(-1) + D[:, None] * x[i, t]
    assert (out - ref).abs().max() < 1e-5


# ---- a layer on instances: checkpoints stay transformers' -----------------------------------------------------
@pytest.mark.parametrize("size", ["mamba-tiny", "hybrid-tiny-2"])
def test_checkpoint_stays_transformers_and_load_pretrained_re_enables(size, tmp_path):
    model = build_model(size, vocab_size=VOCAB, pad_token_id=0, bos_token_id=1, eos_token_id=2, seed=0).eval()
    model.save_pretrained(tmp_path)
    assert "packed" not in (tmp_path / "config.json").read_text()
    assert json.loads((tmp_path / "config.json").read_text())["architectures"] == [type(model).__name__]
    plain = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(plain) is type(model) and not packed_boundaries_enabled(plain)
    loaded = load_pretrained(tmp_path).eval()
    assert packed_boundaries_enabled(loaded)
    exs = examples([6, 14], seed=9)
    ids, pos, _ = pack(exs)
    with torch.no_grad():
        logits = loaded(input_ids=ids[None], position_ids=pos[None]).logits[0]
        assert (split(logits, exs)[1] - plain(input_ids=exs[1][None]).logits[0]).abs().max() < 1e-5
    prompt = exs[1][None, :5]
    gen = dict(max_new_tokens=6, do_sample=False, pad_token_id=0)
    assert torch.equal(loaded.generate(prompt, **gen), plain.generate(prompt, **gen))


def test_enable_is_idempotent_and_survives_to_and_deepcopy():
    model = build_model("mamba-tiny", vocab_size=VOCAB, seed=0, chunk_size=8).eval()
    forwards = [m.__dict__.get("forward") for m in model.modules()]
    assert enable_packed_boundaries(model) is model
    assert [m.__dict__.get("forward") for m in model.modules()] == forwards
    assert "position_ids" in inspect.signature(model.forward).parameters  # the Trainer keeps the column
    model = model.to(torch.float64)
    twin = copy.deepcopy(model)
    with torch.no_grad():
        twin.lm_head.weight.mul_(2)  # tied: the copy's own weights must be the ones used
    exs = examples([10, 12], seed=10)
    ids, pos, _ = pack(exs)
    with torch.no_grad():
        for m in (model, twin):
            logits = m(input_ids=ids[None], position_ids=pos[None]).logits[0]
            assert (split(logits, exs)[1] - m(input_ids=exs[1][None]).logits[0]).abs().max() < 1e-6  # fp32 logits
        assert not torch.allclose(model(input_ids=ids[None]).logits, twin(input_ids=ids[None]).logits)


def test_other_families_are_left_alone():
    from transformers import MambaConfig
    model = AutoModelForCausalLM.from_config(MambaConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1))
    assert enable_packed_boundaries(model) is model and "forward" not in model.__dict__


@pytest.mark.integration
def test_a_family_that_cannot_keep_examples_apart_trains_on_padded_rows(tmp_path, monkeypatch, capsys):
    """Fine-tuning a Mamba (v1) checkpoint under the default bfd rows: its forward would ignore position_ids and let
    the examples leak, so the run trains and evaluates on one padded example per row, says so in one line and records
    it; a bfd the user typed is refused in one line."""
    from transformers import MambaConfig

    from mamba_trainer.tokenizer import load_tokenizer
    from mamba_trainer.train import main

    tok = load_tokenizer("bundled")
    AutoModelForCausalLM.from_config(MambaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1,
                                                 state_size=4, pad_token_id=tok.pad_token_id)).save_pretrained(
        tmp_path / "mamba1")
    monkeypatch.chdir(tmp_path)
    flags = ["--model_name_or_path", str(tmp_path / "mamba1"), "--tokenizer", "bundled", "--training_preset",
             "muon_smoke", "--max_steps", "2", "--max_train_examples", "40", "--max_eval_examples", "4",
             "--save_strategy", "no", "--report_to", "none"]
    assert main([*flags, "--output_dir", "run"]) == 0
    out = capsys.readouterr().out
    assert "data: a mamba model does not keep packed examples apart" in out
    assert "data: 40 training examples -> 40 rows of 64 tokens (none: one padded example per row" in out
    data = json.loads((tmp_path / "run" / "run_config.json").read_text())["data"]
    assert (data["packing"], data["eval_packing"], data["eval_rows"]) == ("none", "none", "none")
    assert main([*flags, "--output_dir", "typed", "--packing", "bfd"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--packing bfd keeps packed examples apart only in Mamba2 and Zamba2" in err


# ---- the transformers range ------------------------------------------------------------------------------------
def test_installed_transformers_is_in_the_tested_range():
    import transformers
    assert transformers_in_tested_range(), (
        f"transformers {transformers.__version__} is outside TESTED_TRANSFORMERS {TESTED_TRANSFORMERS}: run this "
        "file; when it passes, widen the range in mamba_trainer/packed.py (and the pin in pyproject.toml)")
    assert transformers_in_tested_range("5.17.0") and not transformers_in_tested_range("5.16.2")
    assert not transformers_in_tested_range(TESTED_TRANSFORMERS[1].lstrip("<") + ".0")


def test_untested_transformers_warns_once_and_works(monkeypatch, caplog):
    import transformers
    monkeypatch.setattr(transformers, "__version__", "99.0.0")
    monkeypatch.setattr(packed, "_warned_version", False)
    with caplog.at_level(logging.WARNING, logger="mamba_trainer.packed"):
        build_model("mamba-tiny", vocab_size=VOCAB, seed=0)
        model = build_model("mamba-tiny", vocab_size=VOCAB, seed=0)
    records = [r for r in caplog.records if r.name == "mamba_trainer.packed"]
    assert len(records) == 1 and "99.0.0" in records[0].getMessage() and "\n" not in records[0].getMessage()
    assert packed_boundaries_enabled(model)


# ---- CUDA kernels (mamba-ssm, causal-conv1d) -------------------------------------------------------------------
def fake_kernels(calls):
    """Stand-ins with the signatures of causal-conv1d's and mamba-ssm's functions that check what the CUDA kernels
    require of their inputs (channel-last conv input, int32 contiguous seq_idx) and compute what they compute."""
    def check_seq_idx(seq_idx, batch, seq_len):
        assert seq_idx.dtype == torch.int32 and seq_idx.is_contiguous() and seq_idx.shape == (batch, seq_len)

    def conv1d(x, weight, bias=None, seq_idx=None, initial_states=None, return_final_states=False,
               final_states_out=None, activation=None):
        calls.append("conv1d")
        batch, dim, seq_len = x.shape
        assert x.stride(1) == 1 and x.stride(2) % 8 == 0 and x.stride(0) % 8 == 0 and dim % 8 == 0
        assert weight.shape == (dim, 4) and activation in ("silu", "swish")
        check_seq_idx(seq_idx, batch, seq_len)
        out = packed_causal_conv1d(x.transpose(1, 2), weight[:, None], bias, seq_idx, "silu")
        return out.contiguous().transpose(1, 2)  # channel-last, like its input

    def chunk_scan(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, initial_states=None, seq_idx=None,
                   cu_seqlens=None, dt_softplus=False, dt_limit=(0.0, float("inf")), return_final_states=False,
                   return_varlen_states=False):
        calls.append("chunk_scan")
        batch, seq_len, heads, _ = x.shape
        assert dt.shape == (batch, seq_len, heads) and A.shape == (heads,) and B.shape[:2] == (batch, seq_len)
        assert dt_softplus and z is None and initial_states is None and not return_final_states
        check_seq_idx(seq_idx, batch, seq_len)
        return packed_ssd_scan(x, dt, A, B, C, chunk_size, seq_idx, D=D, dt_bias=dt_bias, dt_limit=dt_limit)

    def split_conv1d_scan(zxbcdt, conv1d_weight, conv1d_bias, dt_bias, A, D, chunk_size, initial_states=None,
                          seq_idx=None, dt_limit=(0.0, float("inf")), return_final_states=False, activation="silu",
                          rmsnorm_weight=None, rmsnorm_eps=1e-6, outproj_weight=None, outproj_bias=None,
                          headdim=None, ngroups=1, norm_before_gate=True):
        calls.append("split_conv1d_scan")
        batch, seq_len, width = zxbcdt.shape
        assert width % 8 == 0 and not norm_before_gate and rmsnorm_weight is not None
        heads = D.shape[0]
        dim = heads * headdim
        conv_dim = conv1d_weight.shape[0]
        state = (conv_dim - dim) // ngroups // 2
        z, xBC, dt = torch.split(zxbcdt, [dim, conv_dim, heads], dim=-1)
        xBC = conv1d(xBC.transpose(1, 2), conv1d_weight, conv1d_bias, seq_idx=seq_idx, activation=activation)
        x, B, C = torch.split(xBC.transpose(1, 2), [dim, ngroups * state, ngroups * state], dim=-1)
        y = chunk_scan(x.reshape(batch, seq_len, heads, headdim), dt, A, B.reshape(batch, seq_len, ngroups, state),
                       C.reshape(batch, seq_len, ngroups, state), chunk_size, D=D, dt_bias=dt_bias, seq_idx=seq_idx,
                       dt_softplus=True, dt_limit=dt_limit)
        y = y.reshape(batch, seq_len, ngroups, dim // ngroups) * F.silu(z.float()).reshape(batch, seq_len, ngroups, -1)
        y = (y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + rmsnorm_eps)).reshape(batch, seq_len, dim)
        return F.linear(y * rmsnorm_weight, outproj_weight, outproj_bias)

    return {"conv1d": conv1d, "chunk_scan": chunk_scan, "split_conv1d_scan": split_conv1d_scan}


WIDE = [("mamba-tiny", {"chunk_size": 8}), ("hybrid-tiny-2", {"chunk_size": 8}),  # in_proj 902 / 644 wide
        ("mamba-tiny", {"chunk_size": 8, "hidden_size": 256, "num_heads": 8, "num_hidden_layers": 2}),  # 1160
        ("hybrid-tiny-2", {"chunk_size": 8, "hidden_size": 256, "n_mamba_heads": 8})]  # 1160: the fused call


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("size,overrides", WIDE, ids=["mamba-902", "hybrid-644", "mamba-1160", "hybrid-1160"])
def test_cuda_kernel_calls_with_stand_ins(monkeypatch, models, size, overrides, training):
    """The calls into the CUDA kernels (which need a GPU), made against stand-ins of the same signatures."""
    model = models(size, **overrides).train(training)
    calls = []
    monkeypatch.setattr(packed, "_kernels_for", lambda m, projected: fake_kernels(calls))
    in_proj_width = next(m for m in model.modules() if hasattr(m, "in_proj")).in_proj.out_features
    exs = examples([5, 17, 20], seed=12)
    ids, pos, _ = pack(exs)
    with torch.no_grad():
        logits = model(input_ids=ids[None], position_ids=pos[None]).logits[0]
    monkeypatch.undo()
    fused = training and in_proj_width % 8 == 0
    assert calls and set(calls) == ({"split_conv1d_scan"} if fused else set()) | {"conv1d", "chunk_scan"}
    with torch.no_grad():
        for p, e in zip(split(logits, exs), exs):
            assert (p - model(input_ids=e[None]).logits[0]).abs().max() < 1e-5


@pytest.mark.skipif(not torch.cuda.is_available() or packed._cuda_kernels() is None,
                    reason="needs CUDA with mamba-ssm and causal-conv1d")
@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("size", ["mamba-tiny", "hybrid-tiny-2"])
def test_cuda_kernels_keep_examples_apart(size, training):
    model = build_model(size, vocab_size=VOCAB, seed=0, chunk_size=16).cuda().train(training)
    exs = [e.cuda() for e in examples(LENGTHS, seed=11)]
    ids, pos, _ = pack(exs)
    with torch.no_grad():
        logits = model(input_ids=ids[None], position_ids=pos[None]).logits[0]
        ref = torch.cat([model(input_ids=e[None]).logits[0] for e in exs])
        leaky = model(input_ids=ids[None]).logits[0]
    scale = ref.abs().max().item()
    assert (logits - ref).abs().max().item() < 2e-3 * scale
    assert (leaky - ref).abs().max().item() > 1e-2 * scale
