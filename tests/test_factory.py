"""The optimizer factory for plain `transformers.Trainer` / TRL, Conv1D on Muon, the no-matrix error, re-export."""

import pytest
import torch
import transformers as T
from torch import nn
from transformers.pytorch_utils import Conv1D

from optimizers import MuonConfigError, MuonFactory, create_muon_optimizer, split_parameters

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_muon_module_reexports_the_factory_functions():
    from optimizers.muon import MuonFactory as F, create_muon_optimizer as c

    assert c is create_muon_optimizer and F is MuonFactory
    with pytest.raises(ImportError):
        from optimizers.muon import no_such_name  # noqa: F401


def _gpt2():
    torch.manual_seed(0)
    return T.GPT2LMHeadModel(T.GPT2Config(vocab_size=64, n_positions=32, n_embd=16, n_layer=2, n_head=2))


def test_gpt2_conv1d_weights_go_to_muon_with_fan_in_first():
    model = _gpt2()
    split = split_parameters(model)
    conv = sorted(n for n, m in model.named_modules() if isinstance(m, Conv1D))
    assert conv, "GPT-2 has Conv1D modules"
    assert sorted(split.names("muon_fan_in_first")) == [f"{n}.weight" for n in conv]
    assert "transformer.wte.weight" in split.names("adamw_no_decay")
    assert "c_attn" in split.fused and "c_attn" in split.summary()
    opt = create_muon_optimizer(model, verbose=False)
    group = next(g for g in opt.param_groups if g["name"] == "muon_fan_in_first")
    assert group["fan_in_first"] and group["use_muon"]


@pytest.mark.parametrize("adjust_lr", ["original", "match_rms_adamw"])
def test_conv1d_step_equals_the_step_on_the_equivalent_linear(adjust_lr):
    torch.manual_seed(0)
    conv = Conv1D(24, 8)  # maps 8 -> 24, weight stored (8, 24)
    lin = nn.Linear(8, 24)
    with torch.no_grad():
        lin.weight.copy_(conv.weight.T)
        lin.bias.copy_(conv.bias)
    x = torch.randn(5, 8)
    opts = []
    for module in (conv, lin):
        wrapper = nn.Sequential(nn.Linear(8, 8, bias=False), module)  # input layer keeps the map "hidden"
        torch.manual_seed(1)
        nn.init.normal_(wrapper[0].weight)
        opts.append((wrapper, create_muon_optimizer(wrapper, lr=0.02, adjust_lr=adjust_lr, verbose=False)))
    for _ in range(3):
        for wrapper, opt in opts:
            opt.zero_grad()
            (wrapper(x) ** 2).mean().backward()
            opt.step()
    torch.testing.assert_close(conv.weight.T, lin.weight, rtol=1e-5, atol=1e-6)
    assert not torch.equal(lin.weight, conv.weight.T.new_zeros(lin.weight.shape))


def test_a_model_with_no_matrix_for_muon_is_one_clear_line():
    class OnlyEmbedding(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 4)
            self.norm = nn.LayerNorm(4)

    with pytest.raises(MuonConfigError) as err:
        create_muon_optimizer(OnlyEmbedding(), verbose=False)
    msg = str(err.value)
    assert "\n" not in msg and "OnlyEmbedding" in msg and "include=" in msg and "--optimizer adamw" in msg


def _llama():
    torch.manual_seed(0)
    return T.LlamaForCausalLM(T.LlamaConfig(vocab_size=64, hidden_size=16, num_hidden_layers=2, intermediate_size=32,
                                            num_attention_heads=2, num_key_value_heads=1))


def _data(n=16, length=12):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 64, (n, length), generator=g)
    return [{"input_ids": row, "labels": row.clone()} for row in ids]


def _args(out, steps, **kw):
    return T.TrainingArguments(out, max_steps=steps, per_device_train_batch_size=4, learning_rate=1e-2,
                               lr_scheduler_type="linear", warmup_steps=1, logging_steps=1, save_steps=2,
                               report_to="none", use_cpu=True, seed=0, data_seed=0, disable_tqdm=True,
                               dataloader_num_workers=0, **kw)


FACTORY = (MuonFactory, {"lr": 1e-2, "adamw_lr": 1e-3, "verbose": False})


@pytest.mark.integration
def test_plain_trainer_with_the_factory_trains_schedules_and_resumes_exactly(tmp_path):
    from mamba_trainer.trainer import MomentumScheduleCallback

    def run(out, steps, resume=None):
        model = _llama()
        trainer = T.Trainer(model=model, args=_args(str(out), steps), train_dataset=_data(),
                            optimizer_cls_and_kwargs=FACTORY,
                            callbacks=[MomentumScheduleCallback(0.85, 0.95, warmup_steps=4)])
        trainer.train(resume_from_checkpoint=resume)
        return trainer, {n: p.detach().clone() for n, p in model.named_parameters()}

    trainer, full = run(tmp_path / "full", 4)
    opt = getattr(trainer.optimizer, "optimizer", trainer.optimizer)  # accelerate wraps it
    assert type(opt).__name__ == "Muon"
    muon = [g for g in opt.param_groups if g["use_muon"]]
    adamw = [g for g in opt.param_groups if not g["use_muon"]]
    # the linear schedule drove both sides from their own base lr (ends at 0 after the last step)
    assert muon[0]["initial_lr"] == 1e-2 and adamw[0]["initial_lr"] == 1e-3
    assert all(g["lr"] == 0.0 for g in opt.param_groups)
    assert muon[0]["momentum"] == pytest.approx(0.95 - 0.1 / 4)  # set at the start of step 4 (global_step 3)
    start = _llama()
    assert any(not torch.equal(full[n], p) for n, p in start.named_parameters())

    # resume the same 4-step run (same schedule) from its step-2 checkpoint in a fresh process state
    assert (tmp_path / "full" / "checkpoint-2" / "optimizer.pt").is_file()
    _, resumed = run(tmp_path / "resumed", 4, resume=str(tmp_path / "full" / "checkpoint-2"))
    for name, p in full.items():
        torch.testing.assert_close(resumed[name], p, rtol=0, atol=0, msg=name)


@pytest.mark.integration
def test_trl_sft_trainer_takes_the_factory(tmp_path):
    trl = pytest.importorskip("trl")
    from datasets import Dataset

    from mamba_trainer.tokenizer import load_tokenizer

    tok = load_tokenizer()  # the bundled one: no Hub
    model = _llama()
    model.resize_token_embeddings(len(tok))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    rows = [{"text": f"{a} plus {b} is {a + b}."} for a in range(8) for b in range(2)]
    args = trl.SFTConfig(str(tmp_path), max_steps=2, per_device_train_batch_size=4, learning_rate=1e-2,
                         report_to="none", use_cpu=True, logging_steps=1, save_strategy="no", disable_tqdm=True,
                         max_length=32)
    trainer = trl.SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok,
                             optimizer_cls_and_kwargs=FACTORY)
    trainer.train()
    assert type(getattr(trainer.optimizer, "optimizer", trainer.optimizer)).__name__ == "Muon"
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert "model.layers.0.self_attn.q_proj.weight" in changed


@pytest.mark.integration  # a fresh interpreter
def test_no_bitsandbytes_import_unless_8bit_is_asked_for():
    import subprocess
    import sys

    code = ("import sys, torch; from torch import nn; from optimizers import create_muon_optimizer; "
            "from mamba_trainer.rundir import environment_info; info = environment_info('none', 1); "
            "m = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4)); o = create_muon_optimizer(m, verbose=False); "
            "m(torch.randn(2, 4)).sum().backward(); o.step(); "
            "assert 'bitsandbytes' not in sys.modules, 'bitsandbytes was imported'; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-2000:]
    assert "kernels-community" not in out.stderr


# ---- mamba_trainer.trainer.build_optimizer: the AdamW runs' groups (their end-to-end run: test_train_cli.py) ----

ADAM_ARGS = dict(learning_rate=2e-3, weight_decay=0.1, adam_beta1=0.8, adam_beta2=0.99, adam_epsilon=1e-6)


def _names_by_decay(model, optimizer) -> dict[bool, list[str]]:
    names = {id(p): n for n, p in model.named_parameters()}
    return {decay: sorted(names[id(p)] for g in optimizer.param_groups if (g["weight_decay"] > 0) == decay
                          for p in g["params"]) for decay in (True, False)}


@pytest.mark.parametrize("arch", ["hybrid-tiny", "gpt2"])
@pytest.mark.parametrize("kind", ["adamw", "adamw_8bit"])
def test_adamw_runs_decay_exactly_what_muon_runs_decay(arch, kind):
    """An AdamW run's two groups (decay, no decay) hold every trainable parameter once, split as Muon's groups
    split them (embeddings, norms, biases, SSM parameters and tagged matrices undecayed; Conv1D weights decayed),
    with the TrainingArguments' lr, weight decay and Adam settings."""
    from types import SimpleNamespace

    from mamba_trainer.models import build_model
    from mamba_trainer.trainer import build_optimizer

    model = build_model("hybrid-tiny", vocab_size=64) if arch == "hybrid-tiny" else _gpt2()
    tagged = "model.layers.0.mamba.out_proj.weight" if arch == "hybrid-tiny" else "transformer.h.0.mlp.c_proj.weight"
    dict(model.named_parameters())[tagged]._no_weight_decay = True  # what a model may tag: Muon's muon_no_decay
    args = SimpleNamespace(**ADAM_ARGS)
    adamw = build_optimizer(model, kind, args)
    muon = build_optimizer(model, "muon", args, verbose=False, fused="whole")
    assert type(adamw).__name__ == {"adamw": "AdamW", "adamw_8bit": "AdamW8bit"}[kind]
    assert [g["weight_decay"] for g in adamw.param_groups] == [0.1, 0.0]
    for g in adamw.param_groups:
        assert (g["lr"], tuple(g["betas"]), g["eps"]) == (2e-3, (0.8, 0.99), 1e-6)
    split = _names_by_decay(model, adamw)
    assert split == _names_by_decay(model, muon)
    assert sorted(split[True] + split[False]) == sorted(n for n, _ in model.named_parameters())
    assert tagged in split[False]
    if arch == "hybrid-tiny":
        for fragment in ("embed_tokens", "A_log", "dt_bias", ".D", "norm"):
            assert any(fragment in n for n in split[False]), fragment
        assert "model.layers.1.mamba.in_proj.weight" in split[True]
    else:
        assert "transformer.wte.weight" in split[False] and "transformer.h.0.attn.c_attn.bias" in split[False]
        assert "transformer.h.0.attn.c_attn.weight" in split[True]  # a Conv1D weight, decayed as on Muon


def test_unknown_optimizer_type_is_one_line():
    from types import SimpleNamespace

    from mamba_trainer.errors import UserError
    from mamba_trainer.trainer import build_optimizer

    with pytest.raises(UserError, match=r"^unknown optimizer 'sgd'; valid: muon, adamw, adamw_8bit$"):
        build_optimizer(_llama(), "sgd", SimpleNamespace(**ADAM_ARGS))
