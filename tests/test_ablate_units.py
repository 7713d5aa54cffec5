"""Muon ablation sweeps without training: values, grids, spec files and variants, worker planning, a variant's
status from its folder, ranking, and the command line's checks of bad input. The real sweeps are in test_ablate.py.
"""

import json
import signal
import subprocess
from pathlib import Path

import pytest

from mamba_trainer.ablate import main, runner
from mamba_trainer.ablate.plots import choose_axes
from mamba_trainer.ablate.factors import BACKEND_NAMES, FACTORS, Value, expand_grid, parse_number, parse_value
from mamba_trainer.ablate.spec import SweepSpec, build_variants, load_spec_file, normalize, parse_variant_arg
from mamba_trainer.errors import UserError


# ---- values and grids ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [("1/32", 0.03125), ("7/8", 0.875), ("15/16", 0.9375), ("2^-5", 0.03125),
                                            ("2**-6", 1 / 64), (" 0.02 ", 0.02), ("2e-2", 0.02), ("3", 3.0),
                                            (0.875, 0.875), (4, 4.0)])
def test_fractions_parse_exactly(text, expected):
    assert parse_number(text) == expected


@pytest.mark.parametrize("text", ["1/0", "abc", "nan", "1.5/3", "", "2^x"])
def test_bad_numbers_are_one_line_errors(text):
    with pytest.raises(UserError, match="cannot read|not a"):
        parse_number(text)


def test_values_by_factor_kind():
    assert parse_value(FACTORS["ns_steps"], "8").value == 8
    assert parse_value(FACTORS["nesterov"], "off").value is False and parse_value(FACTORS["nesterov"], True).value
    assert parse_value(FACTORS["beta2"], "off").value is None and parse_value(FACTORS["beta2"], "0.95").value == 0.95
    assert parse_value(FACTORS["momentum"], "15/16").flag_text() == "0.9375"
    for name, bad in [("ns_steps", "4.5"), ("momentum", "1"), ("lr", "0"), ("lr", "-1/32"), ("nesterov", "maybe"),
                      ("backend", "newtonschulz7"), ("adjust_lr", "spectral")]:
        with pytest.raises(UserError, match=name):
            parse_value(FACTORS[name], bad)


def test_backend_factor_knows_every_registered_backend_and_refuses_coefficients():
    from optimizers.orthogonalize import BACKENDS

    assert set(BACKEND_NAMES) == set(BACKENDS)
    with pytest.raises(UserError, match="not NS coefficients"):
        parse_value(FACTORS["backend"], "(3.4, -4.7, 2.0)")


def test_grid_expands_in_order_first_factor_slowest():
    points = expand_grid({"lr": "1/64,1/32,1/16", "momentum": "7/8,15/16", "ns_steps": "4,8,16"})
    assert len(points) == 18
    assert [p["lr"].text for p in points[:6]] == ["1/64"] * 6
    assert [p["ns_steps"].value for p in points[:3]] == [4, 8, 16]
    assert points[0] == {"lr": Value("1/64", 1 / 64), "momentum": Value("7/8", 0.875), "ns_steps": Value("4", 4)}


def test_variants_names_folders_and_flags():
    named = ["no_nesterov", {"name": "Short ramp", "momentum_ramp": 10, "max_grad_norm": 0}]
    spec = normalize(SweepSpec(preset="muon_smoke", grid={"learning_rate": ["1/64", "1/32"], "momentum": ["7/8"]},
                               variants=named, baselines=True))
    assert spec.base_flags == ["--momentum", "0.875"] and list(spec.grid) == ["lr"]
    variants = build_variants(spec, known_flags={"max_grad_norm"}, base_values={"base_lr": 0.02, "base_adamw_lr": 1e-3})
    assert [v.slug for v in variants] == ["base", "lr_1-64", "lr_1-32", "no_nesterov", "short_ramp",
                                          "adamw_at_muon_lr", "adamw_standard"]
    assert variants[0].is_base and sum(v.is_base for v in variants) == 1
    assert variants[1].flags() == ["--learning_rate", "0.015625"]
    assert variants[4].flags() == ["--momentum_warmup_steps", "10", "--max_grad_norm", "0"]
    assert variants[5].flags() == ["--optimizer", "adamw", "--learning_rate", "0.02"]
    assert variants[6].name == "AdamW (all params) @ lr 0.001"


@pytest.mark.parametrize(
    "spec, expected",
    [
        (SweepSpec(grid={"learning_rat": ["1/32", "1/16"]}), "unknown factor 'learning_rat'"),
        (SweepSpec(grid={"lr": []}), "empty grid for factor lr"),
        (SweepSpec(grid={"lr": ["1/32", "0.03125"]}), "repeats"),
        (SweepSpec(), "nothing to sweep"),
        (SweepSpec(grid={"lr": ["1/32"]}), "nothing to sweep"),
        (SweepSpec(variants=[{"name": "x", "bogus": 1}]), "unknown factor 'bogus' in variant 'x'"),
        (SweepSpec(variants=["turbo"]), "unknown named variant 'turbo'"),
        (SweepSpec(grid={"lr": ["1/32", "1/16"]}, heatmap=["momentum"]), "--heatmap momentum"),
        (SweepSpec(grid={"lr": ["1/32", "1/16"]}, base_variant="nope"), "--base_variant 'nope'"),
    ],
    ids=["unknown", "empty", "repeat", "nothing", "one-value", "variant-key", "builtin", "heatmap", "base"],
)
def test_bad_sweeps_are_one_line_errors(spec, expected):
    with pytest.raises(UserError, match=expected) as info:
        build_variants(normalize(spec), known_flags={"max_grad_norm"})
    assert "\n" not in str(info.value)
    if "factor" in expected or "sweep" in expected:
        assert "valid factors: lr, adamw_lr, momentum" in str(info.value)


def test_spec_file_yaml(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text("name: focused\npreset: muon_demo\nbase_flags: {model_size: mamba-tiny}\nmax_steps: 50\n"
                    "grid:\n  lr: [1/64, 1/32]\n  momentum: 7/8, 15/16\nvariants:\n  - no_nesterov\n"
                    "  - {name: NS-1, ns_steps: 3}\n")
    spec = load_spec_file(path)
    assert spec.base_argv()[:6] == ["--training_preset", "muon_demo", "--model_size", "mamba-tiny", "--max_steps", "50"]
    assert len(build_variants(normalize(spec))) == 1 + 4 + 2
    path.write_text("name: x\nlearning_rate: [1/64]\n")
    with pytest.raises(UserError, match="unknown key 'learning_rate'.*valid factors"):
        load_spec_file(path)


def test_variant_argument_syntax():
    assert parse_variant_arg("No ramp: momentum_ramp=0, max_grad_norm=0") == \
        {"name": "No ramp", "momentum_ramp": "0", "max_grad_norm": "0"}
    assert parse_variant_arg("no_nesterov") == "no_nesterov"
    with pytest.raises(UserError, match="key=value"):
        parse_variant_arg("x: momentum")


def test_heatmap_axes_choice():
    grid = {"ns_steps": ["4", "8", "16"], "lr": ["1/64", "1/32"], "momentum": ["7/8", "15/16"]}
    assert choose_axes(grid) == (["lr", "momentum"], "ns_steps")
    assert choose_axes({"backend": ["a", "b"], "ns_steps": ["1", "2", "3"]}) == (["ns_steps", "backend"], None)
    assert choose_axes(grid, ["momentum", "ns_steps"]) == (["momentum", "ns_steps"], None)
    assert choose_axes({}) == ([], None)


# ---- workers and resumption (pure) ------------------------------------------------------------------------------
def test_worker_assignment():
    assert runner.visible_gpus({"CUDA_VISIBLE_DEVICES": "3,5"}) == ["3", "5"]
    assert runner.visible_gpus({"CUDA_VISIBLE_DEVICES": "0,-1,2"}) == ["0"]
    assert runner.visible_gpus({}, device_count=0) == []
    assert runner.worker_devices([]) == [None]
    assert runner.worker_devices(["3", "5"]) == ["3", "5"]
    assert runner.worker_devices(["0", "1", "2", "3"], gpus_per_variant=2) == ["0,1", "2,3"]
    assert runner.worker_devices(["0", "1", "2", "3"], max_workers=3) == ["0", "1", "2"]
    with pytest.raises(UserError, match="only 2 GPU"):
        runner.worker_devices(["0", "1"], gpus_per_variant=3)
    assert runner.assign([7, 8, 9], [2, 0]) == [(0, 7), (2, 8)]
    assert runner.assign([7], [0, 1]) == [(0, 7)] and runner.assign([], [0]) == []


class _FakeProcess:
    """Finishes after ``polls`` calls to poll(); records how many were alive at once."""

    alive = 0
    most = 0

    def __init__(self, polls):
        self.left = polls
        _FakeProcess.alive += 1
        _FakeProcess.most = max(_FakeProcess.most, _FakeProcess.alive)

    def poll(self):
        self.left -= 1
        if self.left > 0:
            return None
        if self.left == 0:
            _FakeProcess.alive -= 1
        return 0

    def send_signal(self, sig):
        pass


def test_jobs_spread_over_gpu_workers(tmp_path, monkeypatch):
    started = []

    def fake_start(cmd, env, log_path):
        started.append((Path(cmd[cmd.index("--output_dir") + 1]).name, env.get("CUDA_VISIBLE_DEVICES")))
        return _FakeProcess(polls=2)

    monkeypatch.setattr(runner, "start_process", fake_start)
    jobs = [runner.Job({"name": f"v{i}", "slug": f"v{i}"}, tmp_path / f"v{i}", ["--seed", str(i)], "fresh")
            for i in range(5)]
    assert runner.run_jobs(jobs, ["0,1", "2,3"], poll_s=0)
    assert started[:2] == [("v0", "0,1"), ("v1", "2,3")] and len(started) == 5
    assert _FakeProcess.most == 2
    assert all(json.loads((tmp_path / f"v{i}" / "variant.json").read_text())["launches"] == 1 for i in range(5))


def _write_run(folder: Path, records: list[dict], variant_status=None, checkpoint=False):
    folder.mkdir(parents=True)
    (folder / "run_config.json").write_text("{}")
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if variant_status:
        (folder / "variant.json").write_text(json.dumps({"status": variant_status}))
    if checkpoint:
        (folder / "checkpoint-2").mkdir()
        (folder / "checkpoint-2" / "trainer_state.json").write_text("{}")


def test_variant_status_and_next_action(tmp_path):
    _write_run(tmp_path / "done", [{"step": 2, "eval_loss": 5.0}, {"step": 2, "event": "end", "reason": "completed"}])
    _write_run(tmp_path / "nan", [{"step": 2, "eval_loss": float("nan")},
                                  {"step": 2, "event": "end", "reason": "completed"}])
    _write_run(tmp_path / "stopped", [{"step": 2, "event": "end", "reason": "stopped"}], checkpoint=True)
    _write_run(tmp_path / "cut", [{"step": 1, "loss": 5.0}], variant_status="running")
    _write_run(tmp_path / "crashed", [{"step": 1, "loss": 5.0}], variant_status="diverged")
    status = {p.name: runner.variant_status(p) for p in tmp_path.iterdir()}
    assert status == {"done": "completed", "nan": "diverged", "stopped": "stopped", "cut": "incomplete",
                      "crashed": "diverged"}
    assert runner.variant_status(tmp_path / "absent") == "new"
    act = runner.next_action
    assert act("stopped", has_checkpoint=True, wall_clock_budget=False) == "resume"
    assert act("incomplete", has_checkpoint=False, wall_clock_budget=False) == "fresh"
    assert act("diverged", has_checkpoint=False, wall_clock_budget=False) == "skip"
    assert act("diverged", has_checkpoint=False, wall_clock_budget=False, retry_failed=True) == "fresh"
    assert runner.classify(-9, [], "step 3\n")[1].startswith("crashed (signal SIGKILL)")
    # killed from outside before it could save (a second Ctrl-C, kill, a closed terminal): unfinished, so a rerun
    # trains it again rather than ranking a cut-short run as diverged
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        status, detail = runner.classify(-sig, [{"step": 1, "loss": 5.0}], "KeyboardInterrupt\n")
        assert status == "stopped" and signal.Signals(sig).name in detail
        assert act(status, has_checkpoint=False, wall_clock_budget=True) == "fresh"
    assert runner.classify(2, [], "x\nerror: --data_dir nope: no such folder\n") == \
        ("failed", "error: --data_dir nope: no such folder")


def test_only_finished_runs_are_ranked():
    """A run stopped partway (lower loss or not) is listed unranked; it would otherwise win on fewer steps' noise
    or lose for having trained less."""
    from mamba_trainer.ablate import report

    rows = [{"variant": n, "is_base": n == "base", "status": st, "val_loss": loss}
            for n, st, loss in [("base", "completed", 2.0), ("cut", "stopped", 1.5), ("better", "time_budget", 1.8),
                                ("nan", "diverged", float("nan"))]]
    ranked = report.rank_rows(rows)
    assert [(r["variant"], r["rank"]) for r in ranked] == [("better", 1), ("base", 2), ("cut", None), ("nan", None)]
    assert ranked[0]["improvement_vs_base_pct"] == pytest.approx(10.0) and ranked[2]["improvement_vs_base_pct"] is None


# ---- command line: bad input ------------------------------------------------------------------------------------
@pytest.fixture
def no_subprocess(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("a bad sweep must not start any run")

    monkeypatch.setattr(runner, "start_process", refuse)
    monkeypatch.setattr(subprocess, "Popen", refuse)


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--lrr", "1/64,1/32"], "unknown option --lrr"),
        (["--lr", ""], "empty grid for factor lr"),
        (["--lr", "1/64,1/32", "--variant", "x: warp=9"], "unknown factor 'warp'"),
        (["--training_preset", "muon_smoke", "--lr", "1/64,1/32", "--model_size", "hybrid-huge"], "hybrid-tiny"),
        (["--lr", "1/64,1/32", "--output_dir", "x"], "--output_dir"),
        (["--backend", "newtonschulz5,(3.4,-4.8,2.0)"], "not NS coefficients"),
        (["--resume_sweep", "nowhere"], "sweep.json"),
        (["--report", "nowhere"], "runs/"),
        (["--variant", "NS-1: ns_steps=3", "--variant", "MM-5: momentum_ramp=0", "--only", "ns-1,ns-9"],
         "--only ns-9: not a variant of this sweep; valid: ns-1, mm-5"),
    ],
    ids=["option", "empty", "variant", "size", "output_dir", "coefficients", "resume", "report", "only"],
)
def test_bad_input_exits_2_with_one_line(argv, expected, tmp_path, monkeypatch, capsys, no_subprocess):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1 and expected in err


def test_only_selects_variants_of_a_spec_file_and_keeps_the_base(tmp_path, monkeypatch, capsys, no_subprocess):
    """A second seed for the best few of a spec: --only picks them by name or folder; the sweep records it."""
    import yaml

    from mamba_trainer.ablate import cli

    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({"name": "s", "preset": "muon_smoke", "max_steps": 3, "variants": [
        {"name": "NS-1 ns_steps 3", "ns_steps": 3}, {"name": "MM-5 constant", "momentum_ramp": 0},
        {"name": "MM-1 from 0.9", "momentum_start": 0.9}], "baselines": True}))
    monkeypatch.chdir(tmp_path)
    argv = ["--spec", str(spec), "--only", "NS-1 ns_steps 3, adamw_standard", "--seed", "1", "--output", "o",
            "--dry_run"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    listed = [line for line in out.splitlines() if ": mamba-train " in line]
    assert len(listed) == 3, out  # the base, NS-1, and the AdamW baseline, each with the new seed
    assert all("--seed 1" in line for line in listed)
    assert any("--ns_steps 3" in line for line in listed) and not any("--momentum_warmup_steps 0" in l for l in listed)
    ns, rest = cli.make_parser().parse_known_args(argv)
    recorded = cli.spec_from_args(ns, rest).to_json()  # what sweep.json keeps, so --resume_sweep reruns the same
    assert recorded["only"] == ["NS-1 ns_steps 3", "adamw_standard"]


def test_adamw_baseline_uses_the_adamw_lr_training_uses(monkeypatch):
    """No adamw_lr in the base (smoke + --optimizer muon): the baselines' AdamW lr is the one
    create_muon_optimizer gives the AdamW side (lr / 10), not lr itself."""
    import torch

    from mamba_trainer.ablate import cli
    from optimizers import create_muon_optimizer

    seen = {}
    real = cli.build_variants
    monkeypatch.setattr(cli, "build_variants", lambda spec, **kw: seen.update(kw["base_values"]) or real(spec, **kw))
    ns, rest = cli.make_parser().parse_known_args(["--training_preset", "smoke", "--optimizer", "muon", "--baselines"])
    cli.resolve_variants(normalize(cli.spec_from_args(ns, cli.check_base_flags(rest, cli.training_flag_names()))))
    model = torch.nn.Sequential(torch.nn.Embedding(8, 4), torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    opt = create_muon_optimizer(model, lr=seen["base_lr"], adamw_lr=None, verbose=False)
    assert {g["lr"] for g in opt.param_groups if not g["use_muon"]} == {seen["base_adamw_lr"]}
    assert seen["base_adamw_lr"] != seen["base_lr"]


@pytest.mark.parametrize("flags, message", [
    (["--proxy_layers", "2"], "--proxy_layers needs --model_size"),
    (["--proxy_layers", "0", "--model_size", "hybrid-tiny"], "must be at least 1"),
    (["--write_preset", "x"], "needs --presets_file FILE"),
])
def test_proxy_and_write_preset_mistakes_are_one_line(tmp_path, monkeypatch, capsys, flags, message):
    from mamba_trainer.ablate import main

    monkeypatch.chdir(tmp_path)
    assert main(["--training_preset", "muon_smoke", "--lr", "0.01", "--output", "x", "--dry_run", *flags]) == 2
    assert message in capsys.readouterr().err
