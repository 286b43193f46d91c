"""The scanner role's own library (validation, catalogue, parsers), imported from the role.

The role must work without the controller, so the code lives in
roles/scanner/module_utils; the controller loads that same file instead of
keeping a copy.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

from controller.config import ROOT

_PATH = ROOT / "roles" / "scanner" / "module_utils" / "cloudx_scanner.py"


def _load() -> ModuleType:
    name = "cloudx_scanner"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, _PATH)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {_PATH}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


scanner = _load()
ScanInputError = scanner.ScanInputError
SCAN_TYPES = scanner.SCAN_TYPES
