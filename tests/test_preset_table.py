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
