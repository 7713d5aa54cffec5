"""Muon across processes (CPU, gloo, loopback): DDP and FSDP2 against one process, save/resume across world
sizes, the training CLI under torchrun, a failing rank, and the setups that are refused.

The multi-process runs are started once per module (`ddp_results`) and read by several tests; their
one-process references run in this process from the same builders (tests/distributed/mlp_worker.py).
"""

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mamba_trainer.errors import UserError
from mamba_trainer.trainer import check_parallelism
from optimizers import MuonConfigError
from optimizers.distributed import assign_owners, ns_cost, shard_sizes

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORKERS = HERE / "distributed"
ATOL = 1e-5


def _load_worker():
    spec = importlib.util.spec_from_file_location("mlp_worker", WORKERS / "mlp_worker.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


worker = _load_worker()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def loopback_env(**extra) -> dict:
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **extra}
    if Path("/sys/class/net/lo").exists():
        env["GLOO_SOCKET_IFNAME"] = "lo"  # never leave the machine
    return env


def run_ranks(script: Path, world_size: int, *args, timeout: float = 240) -> None:
    """``world_size`` plain processes with RANK/WORLD_SIZE set (lighter than torchrun's agent)."""
    port = free_port()
    procs = [subprocess.Popen([sys.executable, str(script), *map(str, args)], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True,
                              env=loopback_env(RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE=str(world_size),
                                               MASTER_PORT=str(port)))
             for r in range(world_size)]
    deadline = time.monotonic() + timeout
    outputs = []
    try:
        for p in procs:
            outputs.append(p.communicate(timeout=max(1.0, deadline - time.monotonic()))[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    codes = [p.returncode for p in procs]
    assert codes == [0] * world_size, "\n".join(f"--- rank {r} (exit {c})\n{o[-3000:]}"
                                                for r, (c, o) in enumerate(zip(codes, outputs)))


def torchrun(*args, cwd, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
                           "--master_addr", "127.0.0.1", "--master_port", str(free_port()), *map(str, args)],
                          cwd=cwd, env=loopback_env(), capture_output=True, text=True, timeout=timeout)


def assert_close(actual: dict, expected: dict, atol: float = ATOL) -> None:
    assert actual.keys() == expected.keys()
    for name in expected:
        diff = (actual[name] - expected[name]).abs().max().item()
        assert diff <= atol, f"{name}: max |diff| {diff:.3g} > {atol}"


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("mlp")
    run_ranks(WORKERS / "mlp_worker.py", 2, out)
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


@pytest.fixture(scope="module")
def one_process():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        params, state = worker.reference(with_state=True)
        yield {"ddp": params, "ddp_state": state, "fsdp2": worker.reference(normuon=False),
               "ddp_per_block": worker.reference(per_block=True, with_state=True)}
    finally:
        torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------ pure functions

def test_assign_owners_balances_cost_and_is_deterministic():
    assert assign_owners([4, 3, 3, 2], 2) == [0, 1, 1, 0]
    assert assign_owners([1, 1, 1], 1) == [0, 0, 0]
    assert assign_owners([5, 5, 5], 4) == [0, 1, 2]  # more ranks than matrices: some idle
    assert assign_owners([], 3) == []
    # hybrid-like shape set: one huge matrix and many small ones
    costs = [ns_cost(s) for s in [(2048, 512)] + [(512, 512)] * 12 + [(128, 512)] * 6]
    owners = assign_owners(costs, 4)
    loads = [sum(c for c, o in zip(costs, owners) if o == r) for r in range(4)]
    assert max(loads) <= 4 / 3 * max(sum(costs) / 4, max(costs))  # the greedy's guarantee
    assert owners == assign_owners(costs, 4)
    with pytest.raises(ValueError, match="world_size"):
        assign_owners([1], 0)


def test_ns_cost_and_shard_sizes():
    assert ns_cost((64, 256)) == ns_cost((256, 64)) == 4 * 64 * 64 * 256 + 2 * 64**3
    assert ns_cost((3, 64, 256)) == 3 * ns_cost((64, 256))
    assert shard_sizes(7, 2) == [4, 3] and shard_sizes(3, 4) == [1, 1, 1, 0] and sum(shard_sizes(1000, 7)) == 1000


# ------------------------------------------------------------------------------------ DDP and FSDP2

@pytest.mark.integration  # reads the 2-process run (ddp_results)
def test_ddp_two_processes_match_one_process(ddp_results, one_process):
    """NorMuon + fp32 group, bf16-compute group, AdamW group; `skip.weight` has no gradient on odd steps."""
    ranks = [r["ddp"] for r in ddp_results]
    for result in ranks:
        assert result["context"] == "DDPMuon" and result["opt_out"] is None
        assert_close(result["params"], one_process["ddp"])
    for name, p in ranks[0]["params"].items():
        assert torch.equal(p, ranks[1]["params"][name]), f"{name} differs between ranks"


@pytest.mark.integration  # reads the 2-process run (ddp_results)
def test_ddp_optimizer_state_is_identical_on_every_rank_and_to_one_process(ddp_results, one_process):
    """Momentum and NorMuon moments of every matrix on every rank, so rank 0's optimizer.pt is complete."""
    states = [r["ddp"]["optimizer"]["state"] for r in ddp_results]
    expected = one_process["ddp_state"]["state"]
    assert states[0].keys() == states[1].keys() == expected.keys() and len(expected) == 13  # all 13 params
    for i in expected:
        assert states[0][i].keys() == states[1][i].keys() == expected[i].keys()
        for key, value in states[0][i].items():
            assert torch.equal(value, states[1][i][key]), (i, key)
            assert (value - expected[i][key]).abs().max().item() <= ATOL, (i, key)
    assert ddp_results[0]["ddp"]["optimizer"]["muon"] == {"skipped_steps": 0, "step_count": worker.STEPS}


@pytest.mark.integration  # reads the 2-process run (ddp_results)
def test_resume_two_process_checkpoint_on_two_and_on_one_process(ddp_results):
    ranks = [r["ddp"] for r in ddp_results]
    final = ranks[0]["params"]
    for result in ranks:  # both ranks loaded rank 0's checkpoint and continued under 2 processes
        assert_close(result["resumed_params"], final, atol=0.0)
    assert_close(worker.reference(resume=ranks[0]["checkpoint"]), final)  # and one process


@pytest.mark.integration  # reads the 2-process run (ddp_results)
def test_ddp_per_block_with_adamw_rows_matches_one_process(ddp_results, one_process):
    """Per-block orthogonalization (fused_blocks per_block / per_block_dt_adamw, the Mamba2 default) under DDP:
    each rank updates the fused matrix's blocks itself from the all-reduced gradient, the rest is split across
    ranks; weights and the blocks' AdamW moments agree with one process and between ranks."""
    params, state = one_process["ddp_per_block"]
    ranks = [r["ddp_per_block"] for r in ddp_results]
    for result in ranks:
        assert_close(result["params"], params)
    for name, p in ranks[0]["params"].items():
        assert torch.equal(p, ranks[1]["params"][name]), f"{name} differs between ranks"
    inp = 0  # inp.weight: the first parameter of the first group
    assert {"exp_avg_rows2", "exp_avg_sq_rows2"} <= ranks[0]["optimizer"]["state"][inp].keys()
    for key in ("momentum_buffer", "exp_avg_rows2", "exp_avg_sq_rows2"):
        assert (ranks[0]["optimizer"]["state"][inp][key] - state["state"][inp][key]).abs().max() <= ATOL, key
    # and it did act per block: the same run with inp.weight whole ends elsewhere
    assert (params["inp.weight"] - one_process["fsdp2"]["inp.weight"]).abs().max() > 1e-3


@pytest.mark.integration  # reads the 2-process run (ddp_results)
def test_per_block_on_fsdp2_shards_is_refused_on_every_rank(ddp_results):
    for result in ddp_results:
        assert "does not run under FSDP2" in result["fsdp2_per_block"]
        assert "--fused_blocks whole" in result["fsdp2_per_block"]


@pytest.mark.integration  # reads the 2-process run (ddp_results)
def test_fsdp2_two_processes_match_one_process(ddp_results, one_process):
    for result in ddp_results:
        assert_close(result["fsdp2"]["params"], one_process["fsdp2"])
    # momentum stays sharded: narrow.weight is (7, 32), rank 0 holds 4 rows and rank 1 holds 3
    assert [r["fsdp2"]["buffer_local_shape"] for r in ddp_results] == [(4, 32), (3, 32)]
    assert ddp_results[0]["fsdp2"]["buffer_global_shape"] == (7, 32)


@pytest.mark.integration  # reads the 2-process run (ddp_results)
def test_disagreeing_ranks_raise_or_skip_together_instead_of_hanging(ddp_results):
    for result in ddp_results:
        errors = result["mismatch"]
        assert "'skip.weight' has a gradient on some ranks and not on others" in errors["participation"]
        assert "gradients differ across ranks" in errors["gradients"]
        assert errors["nan_skip"] == 1  # both ranks skipped the step
    assert "non-finite gradient (nan/inf) in parameter 'narrow.weight'" in ddp_results[0]["mismatch"]["nan"]
    assert "non-finite gradient (nan/inf) on another rank" in ddp_results[1]["mismatch"]["nan"]


@pytest.mark.integration  # reads the 2-process run (ddp_results)
def test_ranks_agree_on_the_auto_dtype_when_their_speed_probes_differ(ddp_results):
    runs = [r["auto_dtype"] for r in ddp_results]
    assert [r["before"] for r in runs] == [torch.bfloat16, torch.float32]  # each rank alone would differ
    assert [r["after"] for r in runs] == [torch.float32, torch.float32]  # the slowest rank's ratio won
    assert all("measured 0.50x" in r["described"] for r in runs)
    for name, value in runs[0]["params"].items():  # same updates on both ranks, bit for bit
        assert torch.equal(value, runs[1]["params"][name]), name


def test_bad_distributed_mode_is_refused():
    with pytest.raises(MuonConfigError, match="unknown distributed='ddp'; valid: auto, off"):
        worker.build_optimizer(worker.build_model(), distributed="ddp")


@pytest.mark.integration
@pytest.mark.timeout(150)
def test_failing_rank_ends_the_job_with_its_error():
    started = time.monotonic()
    proc = torchrun(WORKERS / "crash_worker.py", cwd=ROOT, timeout=120)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output[-3000:]
    assert "rank 1 failed on purpose" in output, output[-3000:]
    assert time.monotonic() - started < 110  # ended by torchrun, not by the 60 s collective timeout x2


# ---------------------------------------------------------------------------- training CLI, torchrun

CLI = ["--training_preset", "muon_smoke", "--model_size", "hybrid-tiny", "--max_steps", "3", "--logging_steps", "1",
       "--eval_strategy", "no", "--save_strategy", "no", "--max_train_examples", "64", "--max_eval_examples", "8",
       "--seed", "7", "--dataloader_num_workers", "0",
       # fp32 orthogonalization: the gradients differ from one process's in summation order, which in bf16 can
       # flip a rounding of an update (measured 8e-4 after 3 steps); in fp32 the runs agree to 1e-5
       "--muon_compute_dtype", "float32"]


def train_losses(run_dir: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {row["step"]: row["loss"] for row in rows if "loss" in row}


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(400)
def test_cli_under_torchrun_matches_one_process(tmp_path, monkeypatch):
    """2 processes x batch 2 (torchrun, DDP over gloo) vs 1 process x batch 4, run side by side: HF hands each
    rank its half of the same global batch and weights the loss by tokens across ranks, so the gradients
    are the same up to summation order. Final weights are compared (to 1e-5), not just the loss curve: a
    wrong update on a matrix that barely moves the loss in 3 steps would hide in the curve."""
    port = free_port()
    two = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
                            "--master_addr", "127.0.0.1", "--master_port", str(port), "-m", "mamba_trainer.train", *CLI,
                            "--per_device_train_batch_size", "2", "--output_dir", str(tmp_path / "two")],
                           cwd=tmp_path, env=loopback_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True)
    try:
        monkeypatch.chdir(tmp_path)
        from mamba_trainer.train import main

        assert main([*CLI, "--per_device_train_batch_size", "4", "--output_dir", str(tmp_path / "one")]) == 0
        output = two.communicate(timeout=300)[0]
    finally:
        if two.poll() is None:
            two.kill()
    assert two.returncode == 0, output[-4000:]

    env = json.loads((tmp_path / "two" / "environment.json").read_text())
    assert env["world_size"] == 2
    assert "is initialized, but parallel_mode" not in output  # HF really ran DDP (see train.py: ACCELERATE_USE_CPU)
    losses = [train_losses(tmp_path / run) for run in ("two", "one")]
    assert losses[0].keys() == losses[1].keys() == {1, 2, 3}
    for step in losses[1]:
        assert losses[0][step] == pytest.approx(losses[1][step], rel=1e-4)
    assert_close(load_file(tmp_path / "two" / "final" / "model.safetensors"),
                 load_file(tmp_path / "one" / "final" / "model.safetensors"))


# ------------------------------------------------------------------------------------ refusals

@pytest.mark.parametrize("kwargs, message", [
    ({"fsdp_version": 1}, "cannot run under FSDP1"),
    ({"deepspeed_config": {"optimizer": {"type": "AdamW"}}}, "replaces Muon with DeepSpeed's own optimizer"),
    ({"deepspeed_config": {"zero_optimization": {"stage": 2}}}, "ZeRO stage 2"),
    ({"deepspeed_config": {"zero_optimization": {"stage": "auto"}}}, "ZeRO stage auto"),
], ids=["fsdp1", "deepspeed-optimizer", "zero2", "zero-auto"])
def test_unsupported_sharding_is_refused_in_one_line(kwargs, message):
    with pytest.raises(UserError, match=message) as info:
        check_parallelism("muon", **kwargs)
    assert "\n" not in str(info.value)
    check_parallelism("adamw", **kwargs)  # AdamW runs under all of them


def test_supported_setups_pass():
    check_parallelism("muon")
    check_parallelism("muon", fsdp_version=2)
    check_parallelism("muon", deepspeed_config={"zero_optimization": {"stage": 0}})
