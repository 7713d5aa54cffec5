"""Muon ablation sweeps, for real: sweeps of hybrid-tiny on the CPU (the parts without training: test_ablate_units.py).

The end-to-end sweep runs each variant as a ``python -m mamba_trainer.train`` subprocess (about 30 s each on
two loaded CPU cores); the module shares one 4-variant sweep and adds one 1-variant time-budget sweep.
"""

import json
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from mamba_trainer.ablate import main, runner
from mamba_trainer.ablate.report import GENERATED_PREFIX
from mamba_trainer.rundir import running_pid

pytestmark = pytest.mark.integration  # every test reads a real sweep of subprocess trainings

BASE = ["--training_preset", "muon_smoke", "--model_size", "hybrid-tiny", "--max_steps", "2", "--eval_steps", "2",
        "--save_steps", "100", "--logging_steps", "1", "--warmup_steps", "0", "--max_grad_norm", "0",
        "--max_train_examples", "200", "--max_eval_examples", "8", "--seed", "7"]
# base + 3 grid points; an AdamW-side lr of 1e4 (no warmup, no clipping) blows up at step 2, mid-sweep
SWEEP = [*BASE, "--name", "t", "--adamw_lr", "1/2000,1e4,1/500"]


# ---- a real sweep -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("ablate")
    launched: list[list[str]] = []
    real = runner.start_process
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("OMP_NUM_THREADS", "1")  # on a shared 2-core box, 2 threads per run are several times slower
        mp.setattr(runner, "start_process", lambda cmd, env, log: launched.append(cmd) or real(cmd, env, log))
        code = main([*SWEEP, "--output", "sweep"])
    return {"dir": root / "sweep", "code": code, "launched": launched, "root": root}


def _table(readme: str) -> list[list[str]]:
    lines = readme.split("## Detailed Results")[1].split("## Key Insights")[0].strip().splitlines()
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:] if line.startswith("|")]


def test_sweep_writes_report_and_plots(sweep):
    d = sweep["dir"]
    assert sweep["code"] == 0 and len(sweep["launched"]) == 4
    for name in ("README.md", "results.json", "results.csv", "sweep.json"):
        assert (d / name).is_file(), name
    import matplotlib.image

    for name in ("performance_comparison.png", "training_curves.png", "performance_heatmap.png"):
        path = d / "plots" / name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        image = matplotlib.image.imread(path)
        assert image.shape[0] > 200 and image.shape[1] > 300, name
    readme = (d / "README.md").read_text()
    for needle in ("## Experiment Configuration", "hybrid-tiny", "## Best Performing Variant", "## Key Insights",
                   "**AdamW-side LR:**", "Improvement vs Base", "plots/performance_heatmap.png"):
        assert needle in readme, needle
    for run in (d / "runs").iterdir():  # each variant is a normal, self-describing run folder
        assert (run / "run_config.json").is_file() and (run / "metrics.jsonl").is_file()


def test_table_is_ranked_by_val_loss(sweep):
    rows = _table((sweep["dir"] / "README.md").read_text())
    assert len(rows) == 4
    ranked = [r for r in rows if r[0] != "—"]
    assert [r[0] for r in ranked] == ["1", "2", "3"]
    losses = [float(r[2]) for r in ranked]
    assert losses == sorted(losses)
    data = json.loads((sweep["dir"] / "results.json").read_text())
    assert data["best_variant"] == data["variants"][0]["variant"] == ranked[0][1].replace(" (base)", "")
    base = next(v for v in data["variants"] if v["is_base"])
    assert base["improvement_vs_base_pct"] == 0.0 and base["slug"] == "base"
    csv_lines = (sweep["dir"] / "results.csv").read_text().splitlines()
    assert csv_lines[0].startswith("rank,variant,slug") and len(csv_lines) == 5


def test_divergent_variant_is_recorded_and_the_sweep_goes_on(sweep):
    data = json.loads((sweep["dir"] / "results.json").read_text())
    status = {v["slug"]: v["status"] for v in data["variants"]}
    assert status == {"base": "completed", "adamw_lr_1-2000": "completed", "adamw_lr_1e4": "diverged",
                      "adamw_lr_1-500": "completed"}
    order = [Path(cmd[cmd.index("--output_dir") + 1]).name for cmd in sweep["launched"]]
    assert order.index("adamw_lr_1e4") < order.index("adamw_lr_1-500")  # the run after the divergent one still ran
    boom = next(v for v in data["variants"] if v["slug"] == "adamw_lr_1e4")
    assert boom["rank"] is None and boom["steps"] <= 2 and boom["detail"]
    assert boom["train_loss"] is not None  # its last good metrics are kept
    assert data["variants"][-1]["slug"] == "adamw_lr_1e4"
    assert "diverged" in _table((sweep["dir"] / "README.md").read_text())[-1][1]


def test_rerun_skips_finished_variants(sweep, monkeypatch, capsys):
    def refuse(cmd, env, log):
        raise AssertionError(f"finished variant started again: {cmd}")

    monkeypatch.chdir(sweep["root"])
    monkeypatch.setattr(runner, "start_process", refuse)
    assert main([*SWEEP, "--output", "sweep"]) == 0
    assert main(["--resume_sweep", "sweep"]) == 0
    assert "(0 to run, 4 finished)" in capsys.readouterr().out


def test_a_finished_variant_made_under_other_settings_is_refused(sweep, monkeypatch, capsys):
    """Same flags, other settings (as when a preset or a default changes between two launches): the finished run
    is not silently reused as if it were today's, and nothing is started."""
    monkeypatch.chdir(sweep["root"])
    shutil.copytree("sweep", "changed")
    config_path = sorted(Path("changed/runs").glob("*/run_config.json"))[0]
    config = json.loads(config_path.read_text())
    assert config["muon"]["momentum"] == 0.95
    config["muon"]["momentum"] = 0.9
    config_path.write_text(json.dumps(config))
    monkeypatch.setattr(runner, "start_process", lambda cmd, env, log: pytest.fail(f"started {cmd}"))
    assert main([*SWEEP, "--output", "changed"]) == 2
    err = capsys.readouterr().err
    assert "run with other settings (muon.momentum: 0.9 there, 0.95 now" in err and "another --output" in err
    assert len(err.strip().splitlines()) == 1


def test_report_rebuilds_identically(sweep, monkeypatch):
    d = sweep["dir"]
    before = {name: (d / name).read_bytes() for name in ("README.md", "results.json", "results.csv")}
    for name in before:
        (d / name).unlink()
    shutil.rmtree(d / "plots")
    monkeypatch.chdir(sweep["root"])
    assert main(["--report", "sweep"]) == 0

    def strip(text: bytes):
        return [line for line in text.decode().splitlines() if not line.startswith(GENERATED_PREFIX)]

    assert (d / "results.json").read_bytes() == before["results.json"]
    assert (d / "results.csv").read_bytes() == before["results.csv"]
    assert strip((d / "README.md").read_bytes()) == strip(before["README.md"])
    assert all((d / "plots" / n).is_file() for n in ("performance_comparison.png", "training_curves.png",
                                                      "performance_heatmap.png"))


def test_time_budget_stops_variants_on_time(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    argv = [*BASE, "--max_steps", "500", "--time_budget", "1s", "--no_base", "--variant", "v: momentum=0.9"]
    assert main([*argv, "--output", "budget"]) == 0
    data = json.loads(Path("budget/results.json").read_text())
    (row,) = data["variants"]
    assert row["status"] == "time_budget" and 1 <= row["steps"] < 500 and row["val_loss"] is not None
    assert "1s of wall-clock per variant" in Path("budget/README.md").read_text()


def test_report_from_run_folders_alone(sweep, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(sweep["dir"], copy, ignore=shutil.ignore_patterns("final", "checkpoint-*", "plots", "*.md",
                                                                      "results.*", "sweep.json"))
    assert main(["--report", str(copy)]) == 0
    data = json.loads((copy / "results.json").read_text())
    original = json.loads((sweep["dir"] / "results.json").read_text())
    assert [v["slug"] for v in data["variants"]] == [v["slug"] for v in original["variants"]]
    assert data["best_variant"] == original["best_variant"] and "**AdamW-side LR:**" in (copy / "README.md").read_text()


def test_sweep_killed_mid_variant_reruns_only_that_variant(tmp_path):
    """kill -9 on muon-ablate while its second variant trains: that training dies with it, and the rerun skips
    the finished variant and runs only the unfinished one."""
    import os
    import signal
    import sys
    import time

    root = Path(__file__).resolve().parent.parent
    argv = [sys.executable, "-m", "mamba_trainer.ablate", *BASE, "--max_seq_length", "64", "--max_train_examples",
            "40", "--max_eval_examples", "2", "--name", "k", "--no_base", "--adamw_lr", "1/2000,1/500", "--output", str(tmp_path / "s")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    sweep = subprocess.Popen(argv, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    runs = tmp_path / "s" / "runs"
    deadline = time.monotonic() + 300
    while len(list(runs.glob("*/run_config.json"))) < 2 and sweep.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    sweep.send_signal(signal.SIGKILL)
    sweep.wait()
    statuses = {d.name: runner.variant_status(d) for d in runs.iterdir()}
    assert sorted(statuses.values()) == ["completed", "incomplete"], statuses
    unfinished = next(name for name, status in statuses.items() if status == "incomplete")
    time.sleep(0.5)  # the orphaned training got SIGKILL from the kernel; its lock is gone with it
    assert running_pid(runs / unfinished) is None
    rerun = subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-2000:]
    assert "(1 to run, 1 finished)" in rerun.stdout
    started = [line for line in rerun.stdout.splitlines() if ": starting" in line or ": resuming" in line]
    assert len(started) == 1
    assert {runner.variant_status(d) for d in runs.iterdir()} == {"completed"}


# ---- a proxy sweep that writes a preset ---------------------------------------------------------------------------
def test_proxy_sweep_trains_the_shallow_model_and_writes_a_preset(tmp_path, monkeypatch):
    """--proxy_layers 2 trains hybrid-tiny's width, heads and state with 2 layers; --write_preset adds the best
    variant's lrs to the user's presets file (its other entries kept), stated at that width, and mamba-train takes it."""
    import yaml

    from configs.model_configs import TRAINING_CONFIGS
    from mamba_trainer.args import parse_args

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    user = tmp_path / "mine.yaml"
    user.write_text("training:\n  keep_me:\n    base: smoke\n    max_steps: 9\n")
    flags = [*BASE, "--name", "p", "--lr", "0.005,0.05", "--proxy_layers", "2", "--no_base",
             "--write_preset", "tuned", "--presets_file", str(user), "--output", "proxy"]
    assert main(flags) == 0
    runs = sorted((tmp_path / "proxy" / "runs").iterdir())
    assert len(runs) == 2
    for run in runs:
        config = json.loads((run / "run_config.json").read_text())
        assert config["model"]["model_size"] == "hybrid-tiny-proxy2"
        shape = json.loads((run / "final" / "config.json").read_text())
        assert (shape["hidden_size"], shape["num_hidden_layers"]) == (192, 2)
        assert shape["layers_block_type"] == ["linear_attention", "hybrid"]
    written = yaml.safe_load(user.read_text())["training"]
    assert written["keep_me"] == {"base": "smoke", "max_steps": 9}
    results = json.loads((tmp_path / "proxy" / "results.json").read_text())
    best = next(r for r in results["variants"] if r["rank"] == 1)
    assert written["tuned"] == {"base": "muon_smoke", "learning_rate": best["values"]["lr"], "lr_width": 192,
                                "adamw_lr": 1e-3, "optimizer": "muon"}
    written_line = (tmp_path / "proxy" / "README.md").read_text().split("## Written preset")[1]
    # the sweep ran 2 steps, muon_smoke runs 6: the line says the lrs are an upper bound for the longer run
    assert "The sweep ran 2 steps, the preset runs 6: the best lr fell with the horizon" in written_line
    parsed = parse_args(["--presets_file", str(user), "--training_preset", "tuned"])
    assert parsed.muon.lr_width == 192 and TRAINING_CONFIGS["tuned"]["learning_rate"] == best["values"]["lr"]
