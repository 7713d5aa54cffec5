"""bench/lr_transfer.py and its report: the proxies are the named sizes' shapes at their widths, and the pure parts
(2x grids, refined best lr, power-law fit, run scheduling by priority, the report's fitted rule). No training."""

import doctest
import json
import math
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml

from configs.model_configs import MODEL_CONFIGS
from configs.model_sizes import proxy_size

WIDTH_OF = {640: "small-standard", 768: "small-pro", 1024: "medium"}


@pytest.fixture(scope="module")
def lt(bench_script):
    return bench_script("lr_transfer")


@pytest.fixture(scope="module")
def report(bench_script, lt):
    return bench_script("lr_transfer_report")


@pytest.fixture(scope="module")
def proxies(lt):
    return yaml.safe_load(lt.PROXIES.read_text())["models"]


def test_doctests(lt, report):
    result = doctest.testmod(lt)
    assert result.failed == 0 and result.attempted >= 3


@pytest.mark.parametrize("family", ["hybrid", "mamba"])
@pytest.mark.parametrize("width", [192, 512, 640, 768, 1024])
def test_proxy_is_the_named_size_at_its_width(proxies, family, width):
    """Each proxy in proxies.yaml is ``proxy_size`` of its named size: 3 layers, the named size's head widths,
    state and expansion, the hybrid's shared block used once; built, it has those shapes."""
    from mamba_trainer.models import build_config

    named = f"{family}-{WIDTH_OF.get(width, 'small')}"
    entry = proxies[f"proxy-{family}-{width}"]
    expected = proxy_size(named, 3, width=width if width == 192 else None, tokenizer="bundled")
    assert entry["base"] == named and entry["tokenizer"] == "bundled" and entry["config"] == expected["config"]

    from configs.model_configs import load_presets_file

    load_presets_file_once(load_presets_file, proxies)
    config = build_config(f"proxy-{family}-{width}", vocab_size=1024)
    base = build_config(named, vocab_size=1024)
    assert config.hidden_size == width and config.num_hidden_layers == 3
    if family == "hybrid":
        assert config.layers_block_type == ["linear_attention", "linear_attention", "hybrid"]
        assert (config.mamba_headdim, config.attention_head_dim, config.mamba_d_state, config.mamba_expand) == (
            base.mamba_headdim, base.attention_head_dim, base.mamba_d_state, base.mamba_expand)
    else:
        assert (config.head_dim, config.state_size, config.expand, config.n_groups) == (
            base.head_dim, base.state_size, base.expand, base.n_groups)
        assert config.num_heads * config.head_dim == config.expand * width


_LOADED = []


def load_presets_file_once(load, proxies):
    """Register the proxies once per session (a later file may redefine them; built-ins never change)."""
    if not _LOADED:
        from pathlib import Path

        load(Path(__file__).resolve().parents[1] / "bench" / "lr_transfer" / "proxies.yaml")
        _LOADED.append(True)
    assert all(name in MODEL_CONFIGS for name in proxies)


def test_grid_and_fit(lt):
    for kind in ("adamw", "muon"):
        for k in range(-4, 6):
            assert lt.grid_index(kind, lt.grid_lr(kind, k)) == k
    assert lt.grid_lr("muon", 3) == 0.08 and lt.grid_lr("adamw", -1) == 0.0005
    c, alpha = lt.fit_power({192: 4e-3, 384: 2e-3, 768: 1e-3})
    assert c == pytest.approx(4e-3) and alpha == pytest.approx(-1.0)
    assert lt.fit_power({512: 3e-3}) == (pytest.approx(3e-3), 0.0)
    # the edge best is not refined past the grid; a diverged neighbour keeps the grid point
    assert lt.best_lr({1e-3: 2.0, 2e-3: 2.5, 4e-3: 3.0}) == (1e-3, 1e-3)
    assert lt.best_lr({1e-3: math.inf, 2e-3: 2.0, 4e-3: 3.0}) == (2e-3, 2e-3)
    assert lt.best_lr({1e-3: math.inf}) == (None, None)
    grid, fine = lt.best_lr({1e-3: 2.2, 2e-3: 2.0, 4e-3: 2.1})
    assert grid == 2e-3 and 2e-3 < fine < 4e-3  # the vertex leans to the better neighbour


def test_stage_3_runs_at_the_presets_rule(lt, monkeypatch):
    """Stage 3's second seed at 1,024 takes the lr the presets' rule gives there: the fit through the widths
    configs/lr_rule.py names for that side (192/512, or 192/512/1,024 once refitted), not always the 192/512 fit."""
    from configs import lr_rule

    bests = {192: 4e-3, 512: 1.5e-3, 1024: 2.5e-4}
    monkeypatch.setattr(lr_rule, "FIT_WIDTHS", {**lr_rule.FIT_WIDTHS, ("mamba2", "adamw"): (192, 512)})
    assert lt.preset_rule_lr("mamba", "adamw", bests, 1024) == pytest.approx(4e-3 * (1024 / 192) ** -1.0, rel=0.01)
    assert lt.grid_lr("adamw", lt.grid_index("adamw", lt.preset_rule_lr("mamba", "adamw", bests, 1024))) == 1e-3
    monkeypatch.setattr(lr_rule, "FIT_WIDTHS", {**lr_rule.FIT_WIDTHS, ("mamba2", "adamw"): (192, 512, 1024)})
    c, alpha = lt.fit_power(bests)
    assert lt.preset_rule_lr("mamba", "adamw", bests, 1024) == pytest.approx(c * (1024 / 192) ** alpha)
    assert lt.grid_lr("adamw", lt.grid_index("adamw", lt.preset_rule_lr("mamba", "adamw", bests, 1024))) == 2.5e-4


def test_adamw_second_seed_runs_beside_muons_sweep_at_1024(lt, monkeypatch, tmp_path):
    """The whole study on fake runs (a bowl in log2(lr) around a width-dependent best): stage 3's AdamW second
    seed starts while stage 2's Muon sweep at 1,024 is still running (it needs only AdamW's sweep), and Muon's
    second seed runs at the presets' rule's point with seed 0's AdamW side, after Muon's sweep."""
    monkeypatch.setenv("MAMBA_TRAINER_PRESETS", "")
    study = lt.Study(lt.parse(["--out", str(tmp_path), "--families", "hybrid"]))
    optimum = {"adamw": {192: 8e-3, 512: 2e-3, 640: 1.5e-3, 1024: 5e-4}, "muon": {192: 2e-2, 512: 1e-2, 640: 1e-2,
                                                                                1024: 5e-3}}
    calls, lock, adamw_seed1_started = [], threading.Lock(), threading.Event()

    def fake_run(priority, size, kind, lr, seed, cfg, adamw_lr=None):
        width, key = int(size.rsplit("-", 1)[1]), (Path(cfg.out).name, cfg.variant)
        with lock:
            calls.append((priority, width, kind, lr, seed, adamw_lr, key))
        if (width, kind, seed) == (1024, "adamw", 1):
            adamw_seed1_started.set()
        if (width, kind, seed, key) == (1024, "muon", 0, ("s300_b4", "")):
            with lock:
                calls.append(("seed 1 AdamW already started", adamw_seed1_started.wait(5)))
        return 0.3 + 0.01 * math.log2(lr / optimum[kind][width]) ** 2

    monkeypatch.setattr(study, "run", fake_run)
    study.family("hybrid")
    waited = [c[1] for c in calls if c[0] == "seed 1 AdamW already started"]
    assert waited and all(waited)
    seed1 = [c for c in calls if c[0] == 3]
    adamw_lr = lt.grid_lr("adamw", lt.grid_index("adamw", lt.preset_rule_lr("hybrid", "adamw", {
        w: optimum["adamw"][w] for w in (192, 512, 1024)}, 1024)))
    assert (3, 1024, "adamw", adamw_lr, 1, None) in [c[:6] for c in seed1]
    muon1 = [c for c in seed1 if c[2] == "muon"]
    assert len(muon1) == 1 and muon1[0][5] == optimum["adamw"][1024]  # seed 0's AdamW side: AdamW's grid best
    assert calls.index(muon1[0]) > max(i for i, c in enumerate(calls) if c[:3] == (2, 1024, "muon"))


def test_held_out_width_runs_before_match_rms_and_horizon_yields_to_both(lt, monkeypatch, tmp_path):
    """The stages' priorities follow the issue's order of importance: the held-out width 640 (the width rule's
    test where it was not fitted) is stage 4 and starts before stage 5's ``match_rms_adamw`` and side runs; the
    192-wide horizon/batch runs (stage 6) start beside them but take a slot only after every earlier stage's."""
    monkeypatch.setenv("MAMBA_TRAINER_PRESETS", "")
    study = lt.Study(lt.parse(["--out", str(tmp_path), "--families", "mamba"]))
    optimum = {"adamw": 4e-3, "muon": 2e-2}
    calls, lock = [], threading.Lock()

    def fake_run(priority, size, kind, lr, seed, cfg, adamw_lr=None):
        with lock:
            calls.append((priority, int(size.rsplit("-", 1)[1]), kind, cfg.variant, Path(cfg.out).name, adamw_lr))
        return 0.3 + 0.01 * math.log2(lr / optimum[kind]) ** 2

    monkeypatch.setattr(study, "run", fake_run)
    study.family("mamba")
    by_stage = {p: [c for c in calls if c[0] == p] for p in range(1, 8)}
    assert {c[1] for c in by_stage[4]} == {640} and {c[2] for c in by_stage[4]} == {"adamw", "muon"}
    assert {c[3] for c in by_stage[5]} == {"rms", "side_x0.5", "side_x2"}
    assert {c[4] for c in by_stage[6]} == {"s1200_b4", "s300_b16"} and {c[1] for c in by_stage[6]} == {192}
    assert max(calls.index(c) for c in by_stage[4]) < min(calls.index(c) for c in by_stage[5])
    # the held-out Muon runs take the AdamW lr the fit predicts at 640 (a flat optimum: the fit's own lr)
    assert {c[5] for c in by_stage[4] if c[2] == "muon"} == {lt.grid_lr("adamw", lt.grid_index("adamw", 4e-3))}


def test_dry_run_follows_a_finished_extension(lt, monkeypatch, tmp_path):
    """A dry run lists what a real one would launch: past a grid whose best sat on an edge, the finished
    extension is read too (so later stages are centred on the same best), and the first unfinished point is
    listed, not run."""
    monkeypatch.setenv("MAMBA_TRAINER_PRESETS", "")
    study = lt.Study(lt.parse(["--out", str(tmp_path), "--dry_run"]))
    finished = {4e-3: 0.40, 8e-3: 0.35, 1.6e-2: 0.30, 3.2e-2: 0.32}  # 3.2e-2 is the finished extension
    asked = []

    def fake_run(priority, size, kind, lr, seed, cfg, adamw_lr=None):
        asked.append(lr)
        return finished.get(lr, math.nan)

    monkeypatch.setattr(study, "run", fake_run)
    got = study.tune(1, "proxy-mamba-192", "adamw", [2, 3, 4], study.cfg(300, 4))
    assert got == finished and lt.best_lr(got)[0] == 1.6e-2
    finished.pop(3.2e-2)
    got = study.tune(1, "proxy-mamba-192", "adamw", [2, 3, 4], study.cfg(300, 4))
    assert math.isnan(got[3.2e-2]) and asked.count(3.2e-2) == 2 and 6.4e-2 not in asked


def test_slots_start_waiting_runs_in_priority_order(lt):
    slots, order, gate = lt.Slots(1), [], threading.Event()
    holder = threading.Thread(target=slots.run, args=(0, gate.wait))
    holder.start()
    time.sleep(0.05)
    waiting = [threading.Thread(target=slots.run, args=(p, order.append, p)) for p in (3, 1, 2, 1)]
    for t in waiting:
        t.start()
        time.sleep(0.02)
    gate.set()
    for t in [holder, *waiting]:
        t.join(5)
    assert order == [1, 1, 2, 3]


def test_slots_hold_lets_every_stage_queue_before_a_run_starts(lt):
    """A resumed study: a later stage's thread reaches its first new run a moment before an earlier stage's.
    Without the hold it would take a slot; with it, the runs start in stage order."""
    slots, order = lt.Slots(2, hold=0.3), []
    threads = [threading.Thread(target=slots.run, args=(p, order.append, p)) for p in (4, 4, 2, 3)]
    for t in threads:
        t.start()
        time.sleep(0.02)
    for t in threads:
        t.join(5)
    assert order[:2] == [2, 3] and sorted(order[2:]) == [4, 4]


def test_slots_stay_closed_while_finished_runs_are_still_being_reused(lt):
    """Past the hold, a reuse (`touch`) keeps the slots closed for ``quiet`` more seconds, so a stage whose walk
    through its finished runs takes longer still gets its new run queued before a later stage's starts."""
    slots, order = lt.Slots(1, hold=0.1, quiet=0.4), []
    late = threading.Thread(target=slots.run, args=(4, order.append, 4))
    late.start()
    for _ in range(3):  # an earlier stage reusing finished runs, past the hold
        time.sleep(0.15)
        slots.touch()
    early = threading.Thread(target=slots.run, args=(2, order.append, 2))
    early.start()
    for t in (late, early):
        t.join(5)
    assert order == [2, 4]


def test_a_freed_slot_goes_to_the_next_run_of_an_earlier_stage_queued_just_after(lt):
    """A run of stage 4 ends; its thread queues stage 5's first run a moment later. A stage-6 run has been waiting
    all along: without the quiet period after a release it takes the freed slot first (seen in the study's log)."""
    slots, order, gate = lt.Slots(1, quiet=0.3), [], threading.Event()
    slots.opened = True  # past the start: only the release's quiet period is under test

    def stage_4_then_5():
        slots.run(4, gate.wait)
        time.sleep(0.05)  # the thread's own work between its runs
        slots.run(5, order.append, 5)

    first = threading.Thread(target=stage_4_then_5)
    first.start()
    time.sleep(0.05)
    late = threading.Thread(target=slots.run, args=(6, order.append, 6))
    late.start()
    time.sleep(0.05)
    gate.set()
    for t in (first, late):
        t.join(5)
    assert order == [5, 6]


def test_a_finished_run_is_reused_without_waiting_for_a_slot(lt, monkeypatch, tmp_path):
    monkeypatch.setenv("MAMBA_TRAINER_PRESETS", "")  # Study sets it; restored after the test
    args = lt.parse(["--out", str(tmp_path), "--workers", "1"])
    study = lt.Study(args)

    def no_slot(*a):
        raise AssertionError("a finished run asked for a slot")

    monkeypatch.setattr(study.slots, "run", no_slot)
    monkeypatch.setattr(lt.convergence, "is_complete", lambda run_dir: True)
    summary = {"size": "proxy-hybrid-192", "kind": "adamw", "lr": 1e-3, "seed": 0, "adamw_lr": None, "final": 0.25,
               "status": "completed", "steps": 300, "train_seconds": 1.0, "machine": {}, "fused_blocks": None}
    monkeypatch.setattr(lt.convergence, "train_run", lambda *a: summary)
    assert study.run(1, "proxy-hybrid-192", "adamw", 1e-3, 0, study.cfg(300, 4)) == 0.25
    assert json.loads((tmp_path / "study.json").read_text())["s300_b4/proxy-hybrid-192/adamw_lr0.001_seed0"][
        "final"] == 0.25


def fake_run(root, condition, size, name, final, steps=300):
    run = root / condition / size / name
    (run / "final").mkdir(parents=True)
    (run / "final" / "config.json").write_text("{}")
    (run / "run_config.json").write_text(json.dumps({"model": {"num_parameters": 1}, "muon": {"adamw_lr": None}}))
    records = [{"step": 0, "elapsed_s": 1, "eval_loss": 7.0, "eval_runtime": 1},
               {"step": steps, "elapsed_s": 10, "eval_loss": final, "eval_runtime": 1},
               {"step": steps, "event": "end", "reason": "completed"}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_report_fits_the_rule_and_checks_each_width(report, tmp_path):
    """Synthetic sweeps whose minima move as 1/width for AdamW and stay put for Muon: the fit finds exponents
    -1 and 0 from widths 192/512, and the 1,024 check passes; an unfinished run is not read."""
    best = {"adamw": {192: 4e-3, 512: 1.5e-3, 1024: 0.75e-3}, "muon": {192: 2e-2, 512: 2e-2, 1024: 2e-2}}
    for kind, widths in best.items():
        for width, lr_star in widths.items():
            for k in range(-3, 4):
                lr = float(f"{(1e-3 if kind == 'adamw' else 1e-2) * 2.0 ** k:.6g}")
                fake_run(tmp_path, "s300_b4", f"proxy-hybrid-{width}", f"{kind}_lr{lr:g}_seed0",
                         2.0 + 0.1 * math.log2(lr / lr_star) ** 2)
    (tmp_path / "s300_b4" / "proxy-hybrid-192" / "muon_lr0.02_seed0" / "final" / "config.json").unlink()
    runs = report.collect(tmp_path)
    assert len(runs) == 2 * 3 * 7 - 1
    rule = report.rule_from(report.sweeps(runs))["hybrid/adamw"]
    assert rule["fit"]["width_exponent"] == pytest.approx(-1.0, abs=0.15)
    assert all(check["within_2x"] for check in rule["checks"].values())
    muon = report.rule_from(report.sweeps(runs))["hybrid/muon"]
    assert abs(muon["fit"]["width_exponent"]) < 0.3 and muon["checks"][1024]["within_2x"]
    assert report.within(1e-3, 2e-3) and not report.within(1e-3, 2.1e-3)
    # 1,024 is settled, so the presets' rule is refitted through all three widths and checked at the held-out 640 only
    for kind, key in (("adamw", "hybrid/adamw"), ("muon", "hybrid/muon")):
        refit = report.rule_from(report.sweeps(runs))[key]
        assert refit["fit_all"]["fit_widths"] == [192, 512, 1024] and refit["checks_all"] == {}
    assert rule["fit_all"]["width_exponent"] == pytest.approx(-1.0, abs=0.15)
    for k in (-1, 0, 1):  # held-out width 640: minimum at 1e-3, the 1/width rule says 4e-3 x 192/640 = 1.2e-3
        lr = float(f"{1e-3 * 2.0 ** k:.6g}")
        fake_run(tmp_path, "s300_b4", "proxy-hybrid-640", f"adamw_lr{lr:g}_seed0", 2.0 + 0.1 * math.log2(lr / 1e-3) ** 2)
    table = report.sweeps(report.collect(tmp_path))
    refit = report.rule_from(table)["hybrid/adamw"]
    assert refit["fit_all"]["fit_widths"] == [192, 512, 1024] and list(refit["checks_all"]) == [640]
    assert refit["checks_all"][640]["measured"] == pytest.approx(1e-3) and refit["checks_all"][640]["within_2x"]
    # what the rule costs at 640: the bowl at 1.2e-3, read linearly in log2(lr) between 1e-3 and 2e-3
    assert refit["checks_all"][640]["loss_cost"] == pytest.approx(0.1 * math.log2(1.2e-3 / 1e-3), abs=2e-3)
    assert refit["checks"][192]["loss_cost"] is not None and refit["checks"][192]["loss_cost"] >= 0
    assert "held-out width" in report.tables_md(table, report.rule_from(table))


def test_stage_5_tables_compare_the_scales_width_exponents_and_the_adamw_side(report):
    """match_rms_adamw's best halving from 192 to 512 is an exponent of log(0.5)/log(512/192) against original's 0;
    the side table lines up x0.5 / x1 / x2 at Muon's lr, x1 from the plain sweep."""
    base = report.BASE_CONDITION
    bowl = lambda c: {c / 2: 0.5, c: 0.4, c * 2: 0.5}  # noqa: E731  (best exactly at c)
    table = {(base, "hybrid", "muon", "", 192): bowl(0.01), (base, "hybrid", "muon", "", 512): bowl(0.01),
             (base, "hybrid", "muon", "rms", 192): bowl(0.004), (base, "hybrid", "muon", "rms", 512): bowl(0.002),
             (base, "hybrid", "muon", "side_x0.5", 512): {0.01: 0.45}, (base, "hybrid", "muon", "side_x2", 512): {0.01: 0.35}}
    md = report.variants_md(table)
    exp = math.log(0.5) / math.log(512 / 192)
    assert "| hybrid | `original` | 0.01 | 0.01 | +0.00 |" in md
    assert f"| hybrid | `match_rms_adamw` | 0.004 | 0.002 | {exp:+.2f} |" in md
    assert "| hybrid | 0.01 | 0.4500 | 0.4000 | 0.3500 |" in md
    assert "mamba" not in md and report.variants_md({}) == ""


@pytest.mark.parametrize("adamw_widths", [(192, 512), (192, 512, 1024)], ids=["fit", "refit"])
def test_steps_ratio_at_1024_pairs_the_preset_rules_grid_points_by_seed(report, tmp_path, monkeypatch, adamw_widths):
    """The 0.65 target's table: at width 1,024, the grid point nearest the presets' rule on each side (the fit
    through the widths configs/lr_rule.py names), paired by seed; Muon's steps to AdamW's final loss over AdamW's
    steps (seconds are not compared: the study shares its CPU). AdamW's best at 1,024 (2.5e-4) sits below the
    192/512 fit's 7.5e-4 (nearest grid point 1e-3): the refit through 1,024 predicts 3.2e-4 (grid 2.5e-4)."""
    from configs import lr_rule

    monkeypatch.setattr(lr_rule, "FIT_WIDTHS", {**lr_rule.FIT_WIDTHS, ("mamba2", "adamw"): adamw_widths,
                                                ("mamba2", "muon"): (192, 512)})
    sweeps = {("adamw", 192): 4e-3, ("adamw", 512): 1.5e-3, ("adamw", 1024): 2.5e-4,
              ("muon", 192): 2e-2, ("muon", 512): 2e-2}
    for (kind, width), star in sweeps.items():
        for k in range(-3, 4 if width < 1024 else 1):
            lr = float(f"{(1e-3 if kind == 'adamw' else 1e-2) * 2.0 ** k:.6g}")
            fake_run(tmp_path, "s300_b4", f"proxy-mamba-{width}", f"{kind}_lr{lr:g}_seed0",
                     2.0 + 0.1 * math.log2(lr / star) ** 2)
    # seed 0 at 1,024: AdamW 2.0 at 2.5e-4 and 2.4 at 1e-3 (the sweep above); seed 1 written here
    fake_run(tmp_path, "s300_b4", "proxy-mamba-1024", "adamw_lr0.00025_seed1", 2.1)
    fake_run(tmp_path, "s300_b4", "proxy-mamba-1024", "adamw_lr0.001_seed1", 2.5)
    muon = {0: 1.5, 1: 1.6}
    for seed, final in muon.items():
        fake_run(tmp_path, "s300_b4", "proxy-mamba-1024", f"muon_lr0.02_seed{seed}", final)
    runs = report.collect(tmp_path)
    text = report.seeds_md(runs, report.rule_from(report.sweeps(runs)))
    refit = adamw_widths == (192, 512, 1024)
    adamw = {0: 2.0, 1: 2.1} if refit else {0: 2.4, 1: 2.5}
    # Muon's curve (7.0 at step 0, its final at 300) crosses AdamW's final at 300 x (7 - a) / (7 - m)
    expected = [(7 - adamw[seed]) / (7 - muon[seed]) for seed in (0, 1)]
    line = next(line for line in text.splitlines() if line.startswith("- mamba:"))
    assert f"AdamW lr {'0.00025' if refit else '0.001'}, Muon lr 0.02, seeds [0, 1]" in line
    assert f"per seed {expected[0]:.2f}, {expected[1]:.2f}" in line and "- hybrid: not run yet" in text


def test_stage_8_runs_the_hybrids_muon_at_4800_steps_around_its_2400_step_best(lt, monkeypatch, tmp_path):
    """Stage 8 reads the finished 2,400-step runs at width 192: the hybrid's Muon at 4,800 steps, at the 2,400-step
    best and half of it (then past an edge best), its AdamW side at AdamW's 2,400-step best; Mamba2 runs nothing."""
    monkeypatch.setenv("MAMBA_TRAINER_PRESETS", "")
    study = lt.Study(lt.parse(["--out", str(tmp_path)]))
    for family in ("hybrid", "mamba"):
        for kind, finals in (("adamw", {2e-3: 0.17, 4e-3: 0.15, 8e-3: 0.16}),
                             ("muon", {6.25e-4: 0.14, 1.25e-3: 0.12, 2.5e-3: 0.13})):
            for lr, final in finals.items():
                study.results[f"s2400_b4/{lt.size_name(family, 192)}/{kind}_{lr}"] = {
                    "size": lt.size_name(family, 192), "kind": kind, "lr": lr, "seed": 0, "final": final,
                    "condition": "s2400_b4", "variant": ""}
    calls = []

    def fake_run(priority, size, kind, lr, seed, cfg, adamw_lr=None):
        calls.append((priority, size, kind, lr, Path(cfg.out).name, cfg.steps, adamw_lr))
        return {6.25e-4: 0.13, 1.25e-3: 0.12, 3.125e-4: 0.15}.get(lr, 0.2)

    monkeypatch.setattr(study, "run", fake_run)
    study.longer_horizon("mamba")
    assert calls == []
    study.longer_horizon("hybrid")
    # 1.25e-3 ends lowest, on the grid's high edge: one point past it, which ends higher
    assert sorted(calls) == sorted((8, "proxy-hybrid-192", "muon", lr, "s4800_b4", 4800, 4e-3)
                                   for lr in (6.25e-4, 1.25e-3, 2.5e-3))
    calls.clear()
    # the 4,800-step best on its low edge: one point past it
    monkeypatch.setattr(study, "run", lambda p, size, kind, lr, seed, cfg, adamw_lr=None:
                        calls.append(lr) or {6.25e-4: 0.11, 1.25e-3: 0.12}.get(lr, 0.13))
    study.longer_horizon("hybrid")
    assert sorted(calls) == [3.125e-4, 6.25e-4, 1.25e-3]
