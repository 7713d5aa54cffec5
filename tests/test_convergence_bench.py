"""bench/convergence.py's pure parts: crossing interpolation, ratios, grid extension, resume skipping. No training."""

import doctest
import json
import math
import statistics
from pathlib import Path
from types import SimpleNamespace

import pytest


@pytest.fixture(scope="module")
def conv(bench_script):
    return bench_script("convergence")


def test_doctests(conv, bench_script):
    results = [doctest.testmod(m) for m in (conv, bench_script("convergence_report"))]  # running, reporting
    assert sum(r.attempted for r in results) >= 5 and sum(r.failed for r in results) == 0


def test_crossing_is_interpolated_between_evals(conv):
    curve = [(0, 7.0), (10, 5.0), (20, 4.0), (30, 3.0)]
    assert conv.steps_to_reach(curve, 4.5) == pytest.approx(15.0)
    assert conv.steps_to_reach(curve, 4.0) == pytest.approx(20.0)
    assert conv.steps_to_reach(curve, 8.0) == 0.0  # already below at the first point
    assert conv.steps_to_reach(curve, 2.0) is None
    # a loss that dips below the target and comes back counts at its first crossing
    assert conv.steps_to_reach([(0, 5.0), (10, 3.0), (20, 4.0)], 4.0) == pytest.approx(5.0)


def _run(steps, seconds, losses):
    """A run summary as summarize_run returns it, with evals evenly spaced."""
    n = len(losses) - 1
    curve = [(steps * i // n, seconds * i / n, loss) for i, loss in enumerate(losses)]
    return {"curve": curve, "final": losses[-1], "steps": steps, "train_seconds": seconds}


def test_ratios_and_gap_against_hand_computed_values(conv):
    adamw = [_run(100, 200.0, [7.0, 5.0, 4.0, 3.5, 3.0])]  # target 3.0 at step 100, 200 s
    # Muon: evals at 0/25/50/75/100 steps, 0/75/150/225/300 s (1.5x slower per step); reaches 3.0 halfway
    # between step 25 (3.2) and 50 (2.8) -> 37.5 steps, 112.5 s
    muon = [_run(100, 300.0, [7.0, 3.2, 2.8, 2.6, 2.5])]
    c = conv.compare(adamw, muon)
    assert c["steps_ratios"] == [pytest.approx(0.375)]
    assert c["time_ratios"] == [pytest.approx(112.5 / 200.0)]
    assert c["final_gap"]["mean"] == pytest.approx(-0.5)
    assert c["steps_ratio"]["reached"] == 1 and c["steps_ratio"]["of"] == 1


def test_unreached_target_is_infinite_and_left_out_of_the_mean(conv):
    adamw = [_run(100, 100.0, [7.0, 3.0]), _run(100, 100.0, [7.0, 3.0])]
    muon = [_run(100, 100.0, [7.0, 5.0, 2.0]), _run(100, 100.0, [7.0, 3.5])]
    c = conv.compare(adamw, muon)
    assert c["steps_ratios"][0] == pytest.approx((50 + 50 * 2 / 3) / 100)
    assert math.isinf(c["steps_ratios"][1])
    assert c["steps_ratio"]["reached"] == 1 and c["steps_ratio"]["of"] == 2
    assert c["steps_ratio"]["mean"] == pytest.approx(c["steps_ratios"][0])


def test_seed_spread_is_the_sample_std(conv):
    adamw = [_run(10, 10.0, [7.0, 3.0])] * 3
    muon = [_run(10, 10.0, [7.0, loss, 2.0]) for loss in (2.0, 2.5, 2.8)]
    c = conv.compare(adamw, muon)
    assert c["steps_ratio"]["std"] == pytest.approx(statistics.stdev(c["steps_ratios"]))
    assert c["steps_ratio"]["min"] < c["steps_ratio"]["max"]


def test_grid_extends_past_the_edge_and_stops_inside(conv):
    assert conv.next_lr({1e-2: 3.0, 2e-2: 2.9, 4e-2: 2.8}, 2.0) == pytest.approx(8e-2)
    assert conv.next_lr({1e-2: 2.7, 2e-2: 2.9, 4e-2: 3.0}, 2.0) == pytest.approx(5e-3)
    assert conv.next_lr({1e-2: 3.0, 2e-2: 2.8, 4e-2: 2.9}, 2.0) is None
    # a diverged top lr is not "best": the best finite one sits inside the grid
    assert conv.next_lr({1e-2: 3.0, 2e-2: 2.8, 4e-2: math.inf}, 2.0) is None
    with pytest.raises(RuntimeError, match="every lr diverged"):
        conv.pick_best({1e-2: math.inf})


def test_tune_runs_the_extension_and_skips_nothing_twice(conv, monkeypatch):
    finals = {1e-3: 3.0, 2e-3: 2.9, 4e-3: 2.8, 8e-3: 2.7, 1.6e-2: 2.75}
    calls = []

    def fake_run(size, kind, lr, seed, cfg, adamw_lr=None):
        calls.append(lr)
        return {"size": size, "kind": kind, "lr": lr, "seed": seed, "final": finals[lr]}

    monkeypatch.setattr(conv, "train_run", fake_run)
    cfg = SimpleNamespace(extend=True, max_extend=3)
    best = conv.tune("mamba-tiny", "adamw", [1e-3, 2e-3, 4e-3], cfg, [])
    assert calls == pytest.approx([1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2])
    assert best == pytest.approx(8e-3)


def _write_metrics(run_dir: Path, records):
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_training_seconds_exclude_every_eval(conv):
    records = [{"step": 0, "elapsed_s": 3.0, "eval_loss": 7.0, "eval_runtime": 3.0},
               {"step": 5, "elapsed_s": 13.0, "loss": 6.0},
               {"step": 5, "elapsed_s": 16.0, "eval_loss": 5.0, "eval_runtime": 3.0},
               {"step": 10, "elapsed_s": 26.0, "eval_loss": 4.0, "eval_runtime": 4.0},
               {"step": 10, "event": "end", "reason": "completed"}]
    s = conv.summarize_run(records)
    assert s["curve"] == [(0, 0.0, 7.0), (5, 10.0, 5.0), (10, 16.0, 4.0)]
    assert s["final"] == 4.0 and s["steps"] == 10 and s["train_seconds"] == 16.0
    diverged = conv.summarize_run(records[:-1] + [{"step": 10, "event": "end", "reason": "diverged"}])
    assert math.isinf(diverged["final"])


def test_resume_skips_finished_runs_and_redoes_cut_short_ones(conv, tmp_path):
    done = tmp_path / "adamw_lr0.002_seed0"
    _write_metrics(done, [{"step": 4, "elapsed_s": 1.0, "eval_loss": 3.0, "eval_runtime": 0.1},
                          {"step": 4, "event": "end", "reason": "completed"}])
    (done / "final").mkdir()
    (done / "final" / "config.json").write_text("{}")
    assert conv.is_complete(done)

    no_final = tmp_path / "b"  # ended "completed" but final/ never landed: not a result
    _write_metrics(no_final, [{"step": 4, "event": "end", "reason": "completed"}])
    cut = tmp_path / "c"  # killed mid-run: no end event
    _write_metrics(cut, [{"step": 2, "elapsed_s": 1.0, "loss": 5.0}])
    stopped = tmp_path / "d"
    _write_metrics(stopped, [{"step": 2, "event": "end", "reason": "stopped"}])
    diverged = tmp_path / "e"
    _write_metrics(diverged, [{"step": 2, "event": "end", "reason": "diverged"}])
    assert not conv.is_complete(no_final) and not conv.is_complete(cut) and not conv.is_complete(stopped)
    assert conv.is_complete(diverged)
    assert not conv.is_complete(tmp_path / "missing")


def test_train_run_reuses_a_finished_folder_without_training(conv, tmp_path, monkeypatch):
    cfg = conv.parse(["--out", str(tmp_path)])
    run_dir = tmp_path / "mamba-tiny" / conv.run_name("adamw", 2e-3, 0)
    _write_metrics(run_dir, [{"step": 4, "elapsed_s": 2.0, "eval_loss": 3.0, "eval_runtime": 0.5},
                             {"step": 4, "event": "end", "reason": "completed"}])
    (run_dir / "final").mkdir()
    (run_dir / "final" / "config.json").write_text("{}")

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(conv.subprocess, "run", no_training)
    r = conv.train_run("mamba-tiny", "adamw", 2e-3, 0, cfg)
    assert r["final"] == 3.0 and r["train_seconds"] == 1.5


@pytest.mark.integration  # one real run, by the bench
@pytest.mark.timeout(300)
def test_a_finished_folder_is_reused_only_for_the_same_settings(conv, tmp_path, monkeypatch):
    """One real (2-step) mamba-train run made by the bench, then reuse decided by settings, not command text: the
    same command reuses it; the folder relabelled to a variant whose flags name what "auto" resolved to reuses it
    too; other --extra flags, another --steps, or the fused mode a default change would give are refused."""
    tiny = ["--steps", "2", "--batch", "2", "--seq_len", "32", "--eval_every", "1", "--eval_examples", "8",
            "--out", str(tmp_path)]
    cfg = conv.parse(tiny)
    r = conv.train_run("mamba-tiny", "muon", 2e-2, 0, cfg, 4e-3)
    run_dir = Path(r["run_dir"])
    assert r["status"] == "completed" and conv.is_complete(run_dir)
    assert json.loads((run_dir / "optimizer.json").read_text())["fused_blocks"] == "per_block_dt_adamw"  # auto
    monkeypatch.setattr(conv.subprocess, "run", lambda *a, **k: pytest.fail("a finished run was trained again"))
    assert conv.train_run("mamba-tiny", "muon", 2e-2, 0, cfg, 4e-3)["final"] == r["final"]

    relabelled = run_dir.with_name(conv.run_name("muon", 2e-2, 0, "dta"))
    run_dir.rename(relabelled)
    same = conv.parse([*tiny, "--variant", "dta", "--extra", "--fused_blocks per_block_dt_adamw"])
    assert conv.train_run("mamba-tiny", "muon", 2e-2, 0, same, 4e-3)["final"] == r["final"]
    for argv, diff in [(["--variant", "dta", "--extra", "--fused_blocks whole"],
                        "muon.fused_blocks: 'per_block_dt_adamw' there, 'whole' now"),
                       (["--variant", "dta", "--extra", "--fused_blocks per_block_dt_adamw --ns_steps 3"],
                        "muon.ns_steps: None there, 3 now"),
                       (["--steps", "3", "--variant", "dta", "--extra", "--fused_blocks per_block_dt_adamw"],
                        "training.max_steps: 2 there, 3 now")]:
        with pytest.raises(SystemExit, match="was made with other settings") as err:
            conv.train_run("mamba-tiny", "muon", 2e-2, 0, conv.parse([*tiny, *argv]), 4e-3)
        assert f"({diff})" in str(err.value) and "another --variant name" in str(err.value)
    # a run recorded before "auto" existed (fused_blocks whole) is not the default's any more on Mamba2
    config = json.loads((relabelled / "run_config.json").read_text())
    config["muon"]["fused_blocks"] = "whole"
    (relabelled / "run_config.json").write_text(json.dumps(config))
    relabelled.rename(run_dir)
    with pytest.raises(SystemExit, match="muon.fused_blocks: 'whole' there, 'per_block_dt_adamw' now"):
        conv.train_run("mamba-tiny", "muon", 2e-2, 0, cfg, 4e-3)


def test_variant_names_muon_runs_only_and_extra_flags_reach_muon(conv, tmp_path):
    assert conv.run_name("adamw", 2e-3, 1, "perblock") == "adamw_lr0.002_seed1"
    assert conv.run_name("muon", 2e-2, 1, "perblock") == "muon_perblock_lr0.02_seed1"
    assert conv.log_path(tmp_path / "adamw_lr0.002_seed1").name == "adamw_lr0.002_seed1.log"
    cfg = conv.parse(["--steps", "400", "--variant", "v", "--extra", "--ns_steps 3", "--out", str(tmp_path)])
    muon = conv.train_flags("hybrid-tiny", "muon", 2e-2, 0, cfg, tmp_path / "m", 2e-3)
    adamw = conv.train_flags("hybrid-tiny", "adamw", 2e-3, 0, cfg, tmp_path / "a", None)
    assert muon[-2:] == ["--ns_steps", "3"] and "--ns_steps" not in adamw
    flag = dict(zip(muon[::2], muon[1::2]))
    # the presets' 10% warmup and 15% momentum ramp (of 200 steps), scaled to 400 steps
    assert flag["--warmup_steps"] == "40" and flag["--momentum_warmup_steps"] == "60"
    assert flag["--adamw_lr"] == "0.002" and flag["--training_preset"] == "muon_demo"
    with pytest.raises(SystemExit):
        conv.parse(["--extra", "--ns_steps 3"])  # extra flags without a variant name would reuse its folders


def test_flags_are_accepted_by_the_real_parser(conv, tmp_path):
    from mamba_trainer.args import parse_args

    cfg = conv.parse(["--quick", "--out", str(tmp_path)])
    for kind, adamw_lr in (("adamw", None), ("muon", 2e-3)):
        parsed = parse_args(conv.train_flags("mamba-tiny", kind, 1e-2, 1, cfg, tmp_path / kind, adamw_lr))
        assert parsed.training.max_steps == 80 and parsed.training.seed == 1
        assert parsed.training.eval_steps == 10 and parsed.data.max_seq_length == 64


def test_prune_keeps_what_results_and_resume_read(conv, tmp_path):
    run = tmp_path / "muon_lr0.02_seed0"
    _write_metrics(run, [{"step": 4, "elapsed_s": 1.0, "eval_loss": 3.0, "eval_runtime": 0.1},
                         {"step": 4, "event": "end", "reason": "completed"}])
    for name in ("run_config.json", "optimizer.json", "environment.json", "final/config.json",
                 "final/model.safetensors", "final/tokenizer.json", "plots/training.png"):
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_text("x")
    before = conv.summarize_run(conv.read_metrics(run))
    conv.prune(run)
    left = sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file())
    assert left == sorted(conv.KEEP)
    assert not (run / "plots").exists()
    assert conv.is_complete(run) and conv.summarize_run(conv.read_metrics(run)) == before


def test_time_ratio_needs_both_runs_on_one_machine(conv):
    adamw = [{**_run(100, 200.0, [7.0, 3.0]), "machine": "A"}, {**_run(100, 200.0, [7.0, 3.0]), "machine": "A"}]
    muon = [{**_run(100, 100.0, [7.0, 2.0, 1.0]), "machine": "A"}, {**_run(100, 100.0, [7.0, 2.0, 1.0]),
                                                                    "machine": "B"}]
    c = conv.compare(adamw, muon)
    assert c["steps_ratios"][1] == pytest.approx(c["steps_ratios"][0])  # steps do not care where they ran
    assert math.isfinite(c["time_ratios"][0]) and math.isnan(c["time_ratios"][1])
    assert c["time_ratio"]["of"] == 1 and c["time_ratio"]["n"] == 1


def test_results_keep_the_sizes_another_command_measured(conv, tmp_path, monkeypatch):
    """Two invocations into one --out, one size each: the files hold both sizes, each with its own command."""
    def fake_run(size, kind, lr, seed, cfg, adamw_lr=None):
        final = {"hybrid-tiny": 3.0, "mamba-tiny": 2.0}[size] - (0.1 if kind == "muon" else 0.0) - 1e-3 * lr
        return {"size": size, "kind": kind, "lr": lr, "seed": seed, "machine": "A", "final": final, "steps": 10,
                "train_seconds": 10.0, "curve": [(0, 0.0, 7.0), (10, 10.0, final)], "status": "finished"}

    monkeypatch.setattr(conv, "train_run", fake_run)
    monkeypatch.setattr(conv, "plot", lambda summary, runs, path: None)
    common = ["--out", str(tmp_path), "--seeds", "2", "--no_extend", "--variant", "perblock",
              "--adamw_lrs", "1e-3", "--muon_lrs", "1e-2"]
    assert conv.main(["--sizes", "hybrid-tiny", *common]) == 0
    assert conv.main(["--sizes", "mamba-tiny", *common]) == 0
    results = json.loads((tmp_path / "results_perblock.json").read_text())
    assert [(s["size"], "hybrid-tiny" in s["command"]) for s in results["summary"]] == [
        ("hybrid-tiny", True), ("mamba-tiny", False)]
    assert sorted({r["size"] for r in results["runs"]}) == ["hybrid-tiny", "mamba-tiny"]
    assert len(results["runs"]) == 8  # 2 sizes x 2 optimizers x 2 seeds, none duplicated
    summary_md = (tmp_path / "summary_perblock.md").read_text()
    assert "| hybrid-tiny |" in summary_md and "| mamba-tiny |" in summary_md
    # rerunning a size replaces its rows rather than adding a second copy
    assert conv.main(["--sizes", "mamba-tiny", *common]) == 0
    again = json.loads((tmp_path / "results_perblock.json").read_text())
    assert [s["size"] for s in again["summary"]] == ["hybrid-tiny", "mamba-tiny"] and len(again["runs"]) == 8
    # no earlier file (or one cut short): this invocation's results as they are
    assert conv.read_json(tmp_path / "none.json", {}) == {}
    (tmp_path / "cut.json").write_text("{cut short")
    assert conv.keep_other_sizes(conv.read_json(tmp_path / "cut.json", {}), [{"size": "x"}], []) == (
        [{"size": "x"}], [])


@pytest.mark.integration  # real runs, by the bench
@pytest.mark.timeout(300)
def test_a_resumable_run_cut_short_continues_from_its_checkpoint(conv, tmp_path, monkeypatch):
    """cfg.resumable (the lr-transfer study): runs checkpoint and launch with --resume latest, so a run killed mid-way
    (here at step 3, after checkpoint-2) continues from its checkpoint instead of starting again, and its folder is
    still reused afterwards; the checkpoint settings do not count as a different run."""
    from kill_hook import KILL_HOOK_ENV

    tiny = ["--steps", "4", "--batch", "2", "--seq_len", "32", "--eval_every", "1", "--eval_examples", "8",
            "--out", str(tmp_path)]
    cfg = conv.parse(tiny)
    cfg.resumable = True
    monkeypatch.setenv(KILL_HOOK_ENV, "step:3")
    with pytest.raises(RuntimeError, match="failed"):
        conv.train_run("mamba-tiny", "adamw", 2e-3, 0, cfg)
    run_dir = tmp_path / "mamba-tiny" / conv.run_name("adamw", 2e-3, 0)
    assert (run_dir / "checkpoint-2").is_dir() and not conv.is_complete(run_dir)
    monkeypatch.delenv(KILL_HOOK_ENV)
    r = conv.train_run("mamba-tiny", "adamw", 2e-3, 0, cfg)
    assert r["status"] == "completed" and [s for s, _, _ in r["curve"]] == [0, 1, 2, 3, 4]
    assert "resuming from" in conv.log_path(run_dir).read_text() and not (run_dir / "checkpoint-4").exists()
    monkeypatch.setattr(conv.subprocess, "run", lambda *a, **k: pytest.fail("a finished run was trained again"))
    plain = conv.parse(tiny)  # the same run without checkpoints is the same run
    assert conv.train_run("mamba-tiny", "adamw", 2e-3, 0, plain)["final"] == r["final"]
