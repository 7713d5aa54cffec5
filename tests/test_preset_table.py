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
    assert shown == module.table(), "README's preset table is stale: python scripts/preset_table.py prints it"
