"""End-to-end runs of the training CLI on a *-tiny model (CPU, a few steps each), and its one-line refusals.

The CLI runs in-process (``main(argv)``) from a temporary working directory, so ``checkpoints/`` lands there.
Elsewhere, end to end: fine-tuning from a final/ (test_finetune_path.py); bit-exact resumes of hybrid-tiny and
``--resume latest`` past a checkpoint cut short (test_kill_resume.py); the time budget (test_schedule_by_time.py); a
divergence (test_ablate.py's sweep). How a run ends, without training: test_run_endings.py.
"""

import json
import os
import shutil
from pathlib import Path
from unittest import mock

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from mamba_trainer.train import main

FIXTURES = Path(__file__).parent / "fixtures"
SMOKE = ["--model_size", "hybrid-tiny", "--max_steps", "6", "--save_steps", "3", "--eval_steps", "3",
         "--logging_steps", "1", "--max_train_examples", "400", "--max_eval_examples", "16", "--seed", "7"]


def train(tmp_path, *extra, preset="muon_smoke"):
    return main(["--training_preset", preset, *SMOKE, *extra])


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def train_losses(run_dir: Path) -> dict[int, float]:
    return {m["step"]: m["loss"] for m in metrics(run_dir) if "loss" in m}


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def scheduled_lrs(config: dict, steps: int) -> list[tuple[float, float]]:
    """(Muon lr, AdamW lr) that steps 1..``steps`` use, from ``transformers.get_scheduler`` on the run's recorded
    settings (an optimizer step uses the lr the scheduler holds before it steps)."""
    from transformers import get_scheduler

    t = config["training_arguments"]
    groups = [{"params": [torch.zeros(1)], "lr": t["learning_rate"]},
              {"params": [torch.zeros(1)], "lr": config["muon"]["adamw_lr"]}]
    optimizer = torch.optim.SGD(groups, lr=t["learning_rate"])
    scheduler = get_scheduler(t["lr_scheduler_type"], optimizer, num_warmup_steps=int(t["warmup_steps"]),
                              num_training_steps=t["max_steps"], scheduler_specific_kwargs=t["lr_scheduler_kwargs"])
    lrs = []
    for _ in range(steps):
        lrs.append(tuple(scheduler.get_last_lr()))
        optimizer.step()
        scheduler.step()
    return lrs


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="module")
def muon_run(tmp_path_factory):
    """One 6-step Muon run shared by the tests that only read it."""
    root = tmp_path_factory.mktemp("muon_run")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        assert main(["--training_preset", "muon_smoke", *SMOKE, "--output_dir", "checkpoints/run"]) == 0
    return root / "checkpoints" / "run"


@pytest.mark.integration
def test_muon_run_trains_and_leaves_a_complete_run_dir(muon_run):
    for name in ("run_config.json", "optimizer.json", "environment.json", "metrics.jsonl",
                 "checkpoint-3", "checkpoint-6", "final"):
        assert (muon_run / name).exists(), name
    config = json.loads((muon_run / "run_config.json").read_text())
    assert config["optimizer_type"] == "muon" and config["model"]["model_size"] == "hybrid-tiny"
    assert config["preset"]["learning_rate"] > 0 and "Question:" in config["prompt_template"]
    optimizer = json.loads((muon_run / "optimizer.json").read_text())
    assert optimizer["fused_blocks"] == "whole" and optimizer["fused_blocks_reason"] == "auto: zamba2"
    muon_names = [n for g in optimizer["groups"] if g.get("use_muon") for n in g["param_names"]]
    assert any("in_proj" in n for n in muon_names) and not any("embed" in n for n in muon_names)

    logs = metrics(muon_run)
    steps = [m for m in logs if "loss" in m]
    assert [m["step"] for m in steps] == [1, 2, 3, 4, 5, 6]
    for m in steps:
        assert 0 < m["momentum"] < 1 and m["tokens_per_second"] > 0
    # each step logs the lr it used: the preset's cosine schedule with warmup, on both sides (Muon at
    # --learning_rate, AdamW at --adamw_lr); warmup starts from 0. Momentum ramps up.
    expected = scheduled_lrs(config, len(steps))
    got = [value for m in steps for value in (m["lr_muon"], m["lr_adamw"])]  # flat: approx() takes no nesting
    assert got == pytest.approx([value for pair in expected for value in pair], rel=1e-9, abs=0)
    assert expected[0] == (0.0, 0.0) and expected[2] == (2e-2, 1e-3)  # muon_smoke: 2e-2 / 1e-3, 2 warmup steps
    assert steps[0]["momentum"] < steps[-1]["momentum"]
    evals = [m for m in logs if "eval_loss" in m]
    assert len(evals) == 2 and all("eval_perplexity" in m and "eval_accuracy" in m for m in evals)
    assert evals[-1]["eval_loss"] < evals[0]["eval_loss"] or steps[-1]["loss"] < steps[0]["loss"]


@pytest.mark.integration
def test_final_model_loads_with_auto_classes_and_generates(muon_run):
    model = AutoModelForCausalLM.from_pretrained(muon_run / "final").eval()
    tokenizer = AutoTokenizer.from_pretrained(muon_run / "final")
    ids = tokenizer("Question: 2 + 3?\nAnswer: ", return_tensors="pt").input_ids
    # min_new_tokens=5 keeps eos from ending it early: exactly 5 new tokens after the unchanged prompt
    out = model.generate(ids, max_new_tokens=5, min_new_tokens=5, do_sample=False)
    assert out.shape == (1, ids.shape[1] + 5) and torch.equal(out[:, :ids.shape[1]], ids)
    # and they are the greedy tokens: the cached generation equals argmax over full forward passes (eos masked)
    eos = model.generation_config.eos_token_id
    eos = [eos] if isinstance(eos, int) else list(eos or [])
    reference = ids
    with torch.no_grad():
        for _ in range(5):
            logits = model(reference).logits[0, -1]
            logits[eos] = float("-inf")
            reference = torch.cat([reference, logits.argmax().view(1, 1)], dim=1)
    assert torch.equal(out, reference)


def initial_weights(argv: list[str]) -> dict[str, torch.Tensor]:
    """The weights a fresh run of ``argv`` starts from, built by the CLI's own steps (same tokenizer, size, seed)."""
    from mamba_trainer.args import parse_args
    from mamba_trainer.train import Resolved, build_run_model, build_tokenizer

    parsed = parse_args(argv)
    resolved = Resolved(parsed.model.model_size, "muon", Path("unused"), None)
    tokenizer, _ = build_tokenizer(parsed, resolved, None)
    return build_run_model(parsed, resolved, tokenizer, None).state_dict()


@pytest.mark.integration
def test_params_changed_from_init(muon_run):
    before, after = initial_weights(["--training_preset", "muon_smoke", *SMOKE]), weights(muon_run / "final")
    assert after.keys() <= before.keys()  # final/ stores tied weights once
    changed = [k for k in after if not torch.equal(before[k], after[k])]
    assert len(changed) > len(after) // 2


@pytest.mark.integration
def test_adamw_run_loss_falls(workdir):
    assert train(workdir, "--output_dir", "adamw", "--max_steps", "8", preset="smoke") == 0
    losses = train_losses(Path("adamw"))
    config = json.loads(Path("adamw/run_config.json").read_text())
    assert config["optimizer_type"] == "adamw"
    assert sum(list(losses.values())[-3:]) < sum(list(losses.values())[:3])


@pytest.mark.integration
def test_mamba2_run_started_whole_resumes_whole_under_the_auto_default(workdir):
    """``--resume checkpoint-N`` continues bit-exactly, in the fused mode the run started with: a Mamba2 run made
    with --fused_blocks whole (the default before "auto") and resumed with the default flags continues whole-matrix:
    losses and weights equal the uninterrupted run's, and optimizer.json still says whole. (The same resume in one
    process: test_per_block.py; a new Mamba2 run under the default is per-block: test_run_settings.py.)"""
    flags = ["--training_preset", "muon_smoke", *SMOKE, "--model_size", "mamba-tiny"]
    assert main([*flags, "--fused_blocks", "whole", "--output_dir", "straight"]) == 0
    shutil.copytree("straight", "resumed")
    for name in ("checkpoint-6", "final"):
        shutil.rmtree(Path("resumed") / name)
    assert main([*flags, "--resume", "resumed/checkpoint-3"]) == 0
    assert train_losses(Path("resumed")) == train_losses(Path("straight"))
    a, b = weights(Path("straight") / "final"), weights(Path("resumed") / "final")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    optimizer = json.loads((Path("resumed") / "optimizer.json").read_text())
    assert optimizer["fused_blocks"] == "whole" and not any(g.get("row_blocks") for g in optimizer["groups"])
    config = json.loads((Path("resumed") / "run_config.json").read_text())
    assert len(config["resumes"]) == 1 and config["resumes"][0]["checkpoint"].endswith("checkpoint-3")


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--model_size", "hybrid-huge"], "hybrid-tiny"),
        (["--training_preset", "muon_defualt"], "muon_default"),
        (["--optimizer", "sgd"], "muon"),
        (["--data_dir", "/nonexistent/data"], "/nonexistent/data"),
        (["--resume", "/nonexistent/ckpt"], "--resume"),
        (["--bogus_flag", "1"], "--bogus_flag"),
        (["--text_column", "question,nonexistent", "--data_dir", str(FIXTURES / "data" / "gsm8k_sample.jsonl")],
         "question"),
        (["--packing", "best"], "bfd, bfd_leaky, stream, none"),
        (["--eval_packing", "leaky"], "bfd, none, same"),
    ],
    ids=["size", "preset", "optimizer", "data_dir", "resume", "flag", "column", "packing", "eval_packing"],
)
def test_bad_input_is_one_line_and_nonzero(argv, expected, workdir, capsys):
    try:
        code = main(["--training_preset", "muon_smoke", "--max_steps", "1", *argv])
    except SystemExit as exc:  # argparse's own checks (bad choice) exit from inside the parser
        code = exc.code
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert expected in err and len(err.splitlines()) == 1 and err.startswith("error:")


@pytest.mark.parametrize("extra, why", [([], "no CUDA GPU is visible"), (["--use_cpu"], "--use_cpu is set")],
                         ids=["no-gpu", "use-cpu"])
def test_fsdp_without_cuda_is_refused(extra, why, workdir, capsys):
    # accelerate applies FSDP only on GPU-class devices: on the CPU the run would silently be plain DDP
    if not extra and torch.cuda.is_available():
        pytest.skip("needs a machine without a CUDA GPU")
    with mock.patch.dict(os.environ):  # TrainingArguments(fsdp=...) exports FSDP_* variables
        code = main(["--training_preset", "muon_smoke", "--max_steps", "1", "--output_dir", "fsdp", "--fsdp",
                     "full_shard", "--fsdp_config", '{"fsdp_version": 2}', *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error: --fsdp needs CUDA GPUs and " + why)
    assert "drop --fsdp" in err[-1] and "torchrun" in err[-1]
    assert not Path("fsdp").exists()  # refused while resolving, before the run folder is made


def test_fsdp_check_passes_with_a_gpu_or_without_fsdp(monkeypatch):
    from mamba_trainer.args import parse_args
    from mamba_trainer.train import check_fsdp_device

    with mock.patch.dict(os.environ):
        fsdp = parse_args(["--training_preset", "muon_smoke", "--fsdp", "full_shard"]).training
    check_fsdp_device(parse_args(["--training_preset", "muon_smoke"]).training)  # no --fsdp: nothing to check
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    check_fsdp_device(fsdp)


@pytest.mark.integration
def test_resume_with_changed_size_is_refused(muon_run, workdir, capsys):
    code = main(["--training_preset", "muon_smoke", "--model_size", "mamba-tiny", "--resume", str(muon_run)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "hybrid-tiny" in err


@pytest.mark.integration
def test_resume_with_other_optimizer_is_refused(muon_run, workdir, capsys):
    code = main(["--training_preset", "muon_smoke", "--optimizer", "adamw", "--resume", str(muon_run)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "final" in err


@pytest.mark.integration
def test_output_dir_of_another_run_is_refused(muon_run, workdir, capsys):
    code = main(["--training_preset", "muon_smoke", "--max_steps", "1", "--output_dir", str(muon_run)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--resume latest" in err


@pytest.mark.parametrize("preset", ["muon_default", "smoke"])
def test_help_shows_the_values_the_preset_will_use(preset, capsys):
    from configs.model_configs import get_training_config

    with pytest.raises(SystemExit):
        main(["--training_preset", preset, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    values = get_training_config(preset)
    for flag in ("max_seq_length", "momentum_warmup_steps", "learning_rate"):
        shown = text.split(f"--{flag} ")[-1].split("(default: ")[1].split(")")[0]
        assert float(shown) == float(values[flag]), (flag, shown)


def test_tokens_per_second_leaves_evaluation_time_out():
    """The logged tokens/s is training throughput: an evaluation between two logs starts the next interval after
    it, so a run that evaluates often does not look slower (and packing modes compare on training alone)."""
    import time
    from types import SimpleNamespace

    from mamba_trainer.trainer import _StepStats

    trainer = SimpleNamespace(_throughput_mark=None)
    stats, state = _StepStats(trainer), SimpleNamespace(num_input_tokens_seen=0)
    stats.on_train_begin(None, state, None)
    state.num_input_tokens_seen = 512
    time.sleep(0.02)  # an evaluation's time
    after_eval = time.perf_counter()
    stats.on_evaluate(None, state, None)
    assert trainer._throughput_mark[1] == 512 and trainer._throughput_mark[0] >= after_eval
