"""bench/ablation_seeds.py: pairing a sweep's variants with their repeats at other seeds. No training."""

import doctest
import json
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def seeds(bench_script):
    return bench_script("ablation_seeds")


def test_doctests(seeds):
    result = doctest.testmod(seeds)
    assert result.attempted >= 1 and result.failed == 0


def _sweep(folder: Path, seed: int, runs: list[tuple]):
    folder.mkdir(parents=True)
    variants = [{"slug": slug, "variant": slug.upper(), "is_base": slug == "base", "status": status,
                 "val_loss": loss, "steps": steps} for slug, status, loss, steps in runs]
    (folder / "results.json").write_text(json.dumps({"config": {"seed": seed}, "variants": variants}))


def test_table_pairs_each_seed_with_its_own_base(seeds, tmp_path, capsys):
    _sweep(tmp_path / "s0", 42, [("base", "time_budget", 0.30, 500), ("a", "time_budget", 0.26, 510),
                                 ("b", "time_budget", 0.25, 490), ("c", "diverged", None, 90)])
    _sweep(tmp_path / "s1", 1, [("base", "time_budget", 0.20, 505), ("a", "time_budget", 0.18, 502),
                                ("b", "time_budget", 0.23, 498)])
    out = tmp_path / "t.md"
    assert seeds.main([str(tmp_path / "s0"), str(tmp_path / "s1"), "--out", str(out)]) == 0
    rows = [line for line in out.read_text().splitlines() if line.startswith("| ") and "variant" not in line]
    # a: -0.04 and -0.02 -> -0.03; b: -0.05 and +0.03 -> -0.01; c diverged: listed without numbers
    assert [r.split(" | ")[0].strip("| ") for r in rows] == ["BASE", "A", "B", "C"]
    assert "**-0.0300**" in rows[1] and "**-0.0100**" in rows[2] and "510, 502" in rows[1]
    assert rows[3].count("—") == 1
    assert capsys.readouterr().out.startswith("| variant")


def test_repeats_need_another_seed(seeds, tmp_path, capsys):
    _sweep(tmp_path / "s0", 42, [("base", "time_budget", 0.3, 500)])
    _sweep(tmp_path / "s1", 42, [("base", "time_budget", 0.3, 500)])
    assert seeds.main([str(tmp_path / "s0"), str(tmp_path / "s1")]) == 2
    assert "same seed" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="muon-ablate --report"):
        seeds.main([str(tmp_path / "nowhere")])
