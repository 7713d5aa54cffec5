"""bench/lr_transfer_horizon.py: the lr study's horizon and batch trends, carried to the presets and read as a
bound on them, from hand-made bests. No training."""

import pytest


@pytest.fixture(scope="module")
def horizon(bench_script):
    return bench_script("lr_transfer_horizon")


def test_horizon_and_batch_exponents_come_from_settled_bests_only(horizon):
    """best lr halving per 4x steps is h = -0.5, doubling per 4x batch is b = +0.5; a best on its grid's edge (a
    lower bound at most) is left out of the fit, and one settled point fits nothing."""
    def point(lr, settled=True):
        return {"grid": lr, "refined": lr, "points": 3, "settled": settled}

    trend = {"hybrid/muon": {"s300_b4": point(0.02), "s1200_b4": point(0.01), "s2400_b4": point(0.001, False),
                             "s300_b16": point(0.04)},
             "mamba/adamw": {"s300_b4": point(0.004), "s1200_b4": point(0.001, False)}}
    fits = horizon.trend_exponents(trend)
    assert fits["hybrid/muon"]["h"] == pytest.approx(-0.5) and fits["hybrid/muon"]["b"] == pytest.approx(0.5)
    assert fits["hybrid/muon"]["h_from"] == ["s300_b4", "s1200_b4"] and fits["hybrid/muon"]["b_from"] == ["s300_b4", "s300_b16"]
    assert "mamba/adamw" not in fits and "h_local" not in fits["hybrid/muon"]  # two horizons: no bend to show
    # three settled horizons: the least-squares exponent, and the exponent between each pair of neighbours
    trend["hybrid/muon"]["s2400_b4"] = point(0.01 * 0.5 ** 0.2)  # 2x steps: lr x 2^-0.2
    fits = horizon.trend_exponents(trend)["hybrid/muon"]
    assert [(a, b) for a, b, _ in fits["h_local"]] == [("s300_b4", "s1200_b4"), ("s1200_b4", "s2400_b4")]
    assert [x for *_, x in fits["h_local"]] == pytest.approx([-0.5, -0.2])
    assert -0.5 < fits["h"] < -0.2


def test_trends_are_carried_to_the_presets_horizon_and_batch_from_the_best_at_512(horizon):
    """default (AdamW, 100K steps of 32 x 1,024 tokens) and muon_default (60K steps): the best lr at width 512 x
    (steps/300)^h x (tokens/1,024)^b per side, Muon's AdamW side on AdamW's trend; a family without both exponents
    gives no row."""
    from configs.model_configs import TRAINING_CONFIGS

    rule = {"hybrid/adamw": {"best": {512: {"refined": 2e-3}}}, "hybrid/muon": {"best": {512: {"refined": 8e-3}}},
            "mamba/adamw": {"best": {512: {"refined": 1e-3}}}}
    fits = {"hybrid/adamw": {"h": -0.5, "b": 0.5}, "hybrid/muon": {"h": -1.0, "b": 0.0}, "mamba/adamw": {"h": -0.5}}
    rows = {(r["preset"], r["family"], r["side"]): r for r in horizon.extrapolate(rule, fits)}
    assert set(rows) == {("default", "hybrid", "learning_rate"), ("muon_default", "hybrid", "learning_rate"),
                         ("muon_default", "hybrid", "adamw_lr")}
    d, m = TRAINING_CONFIGS["default"], TRAINING_CONFIGS["muon_default"]
    tokens = d["per_device_train_batch_size"] * d["gradient_accumulation_steps"] * d["max_seq_length"]
    assert rows["default", "hybrid", "learning_rate"]["trend_lr"] == pytest.approx(
        2e-3 * (d["max_steps"] / 300) ** -0.5 * (tokens / 1024) ** 0.5)
    assert rows["muon_default", "hybrid", "learning_rate"]["trend_lr"] == pytest.approx(8e-3 * 300 / m["max_steps"])
    side = rows["muon_default", "hybrid", "adamw_lr"]
    assert side["kind"] == "adamw" and side["preset_lr"] == m["adamw_lr"]
    assert side["trend_lr"] == pytest.approx(2e-3 * (m["max_steps"] / 300) ** -0.5 * (tokens / 1024) ** 0.5)
    md = horizon.extrapolation_md(list(rows.values()))
    assert "| `muon_default` | hybrid | AdamW side |" in md and horizon.extrapolation_md([]) == ""


def test_the_longest_horizon_bounds_the_presets_only_where_every_trend_falls(horizon):
    """The longest settled batch-4 horizon's best (a low-edge best with two or more points counts: the minimum lies at
    or below it; a high-edge one does not) bounds the presets when each neighbouring horizon step and the larger
    batch lowered the best lr; carried to 512 by configs/lr_rule.py, a preset above it is flagged."""
    from configs import lr_rule
    from configs.model_configs import TRAINING_CONFIGS

    def point(lr, settled=True, lowest=False, points=3):
        return {"grid": lr, "refined": lr * 1.1, "points": points, "settled": settled, "lowest": lowest}

    trend = {"hybrid/muon": {"s300_b4": point(0.02), "s1200_b4": point(0.01), "s2400_b4": point(0.005, False, True),
                             "s300_b16": point(0.01)},
             "mamba/muon": {"s300_b4": point(0.08), "s1200_b4": point(0.02), "s2400_b4": point(0.04, False, False),
                            "s300_b16": point(0.08)},
             "hybrid/adamw": {"s300_b4": point(0.008), "s1200_b4": point(0.004), "s300_b16": point(0.016)},
             "mamba/adamw": {"s300_b4": point(0.008), "s1200_b4": point(0.002), "s2400_b4": point(0.004),
                             "s300_b16": point(0.004)}}
    b = horizon.ceilings(trend, horizon.trend_exponents(trend))
    # the low-edge 2,400-step best bounds (unrefined); the high-edge one does not, so 1,200 steps does
    assert (b["hybrid/muon"]["condition"], b["hybrid/muon"]["best_192"], b["hybrid/muon"]["bounds"]) == ("s2400_b4", 0.005, True)
    assert (b["mamba/muon"]["condition"], b["mamba/muon"]["best_192"]) == ("s1200_b4", pytest.approx(0.022))
    assert b["mamba/muon"]["bounds"]  # b = 0: a larger batch did not raise it
    assert not b["hybrid/adamw"]["bounds"] and "batch" in b["hybrid/adamw"]["why_not"]
    assert not b["mamba/adamw"]["bounds"] and "horizon" in b["mamba/adamw"]["why_not"]  # 1,200 -> 2,400 rose
    one = {"hybrid/muon": {"s1200_b4": point(0.01)}}
    assert "fewer than two" in horizon.ceilings(one, horizon.trend_exponents(one))["hybrid/muon"]["why_not"]

    rows = horizon.preset_bounds(b)
    muon = {r["preset"]: r for r in rows if r["family"] == "hybrid" and r["kind"] == "muon"}
    assert set(muon) == {"muon_fast", "muon_default", "muon_careful"}
    at_512 = lr_rule.carry(0.005, 192, 512, "zamba2", "muon")
    for name, r in muon.items():
        assert r["bound_512"] == at_512 and r["above"] == (TRAINING_CONFIGS[name]["learning_rate"] > at_512)
    sides = {r["preset"] for r in rows if r["family"] == "hybrid" and r["kind"] == "adamw"}
    assert sides == {"fast", "default", "careful", "muon_fast", "muon_default", "muon_careful"}
    assert not any(r["above"] for r in rows if not r["bounds"])
    md = horizon.bounds_md(rows)
    assert md.count("\n| ") == 4 + 1 and "no: the best lr rose with the batch" in md and horizon.bounds_md([]) == ""
