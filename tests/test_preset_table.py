"""README's table of the lrs every named size gets is what mamba-train resolves today (scripts/preset_table.py)."""

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_readme_table_is_what_the_presets_resolve_to():
    spec = importlib.util.spec_from_file_location("preset_table", ROOT / "scripts" / "preset_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    readme = (ROOT / "README.md").read_text()
    shown = re.search(r"<!-- preset-table -->\n(.*?)\n<!-- /preset-table -->", readme, re.S).group(1)
    assert shown == module.table(), "README's preset table is stale: python scripts/preset_table.py --write rewrites it"


def test_write_replaces_only_the_table_between_the_markers(tmp_path):
    spec = importlib.util.spec_from_file_location("preset_table", ROOT / "scripts" / "preset_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    readme = tmp_path / "README.md"
    readme.write_text("before\n<!-- preset-table -->\n| stale |\n<!-- /preset-table -->\nafter\n")
    assert module.write(readme) is True
    assert readme.read_text() == f"before\n<!-- preset-table -->\n{module.table()}\n<!-- /preset-table -->\nafter\n"
    assert module.write(readme) is False  # current: nothing to change


def test_the_readme_preset_values_are_the_presets():
    """README's hand-written "Training presets" table (one row per preset) shows each preset's values as
    configs/training_presets.py sets them."""
    from configs.model_configs import TRAINING_CONFIGS

    keys = ("optimizer", "learning_rate", "adamw_lr", "lr_width", "max_steps", "warmup_steps",
            "per_device_train_batch_size", "gradient_accumulation_steps", "max_seq_length")
    rows = re.findall(r"^\| `(\w+)` \| (adamw|muon) \|(.*)\|$", (ROOT / "README.md").read_text(), re.M)
    shown = {name: [optimizer] + [c.strip() for c in rest.split("|")] for name, optimizer, rest in rows}
    assert set(shown) >= {"default", "muon_default", "demo"}
    for name, cells in shown.items():
        preset = TRAINING_CONFIGS[name]
        assert len(cells) == len(keys), name
        for key, text in zip(keys, cells):
            want = preset[key]
            got = text if key == "optimizer" else (None if text == "" else float(text))
            assert got == want, (name, key, text, want)
