"""Rules of the code that CI checks: the layer contract, an import graph without cycles, and ruff (C901 included)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def test_the_layer_contract_holds():
    """cli > app > api | runner > services > queue > store > the kernel (pyproject.toml [tool.importlinter])."""
    result = subprocess.run([BIN / "lint-imports", "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_no_import_cycles_between_modules():
    """Function-local imports count too: a cycle cannot be hidden inside a function."""
    graph = grimp.build_graph("controller", cache_dir=None)
    cycles = []
    for importer in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            if imported.startswith("controller") and graph.find_shortest_chain(importer=imported, imported=importer):
                cycles.append(f"{importer} <-> {imported}")
    assert cycles == []


def test_ruff_is_clean_with_the_complexity_limit():
    paths = ["controller", "tests", "plugins", "scripts", "bench", "tools"]
    result = subprocess.run(
        [BIN / "ruff", "check", "--no-cache", *[p for p in paths if (ROOT / p).exists()]], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout[-4000:]
    formatted = subprocess.run(
        [BIN / "ruff", "format", "--check", "--no-cache", "controller", "tests"], cwd=ROOT, capture_output=True, text=True
    )
    assert formatted.returncode == 0, formatted.stdout[-2000:]
