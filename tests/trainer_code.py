"""The trainers' own modules, from their PyPI wheels installed without dependencies (`make install` puts them in
the venv's `trainers/` folder, off sys.path): imported without running their packages' `__init__`, which pull
the training stack (Ray, DeepSpeed, vLLM), so their reward-calling code can be driven against a live server."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

TRAINERS = Path(sys.prefix) / "trainers"
VERSIONS = {"openrlhf": "0.11.2", "verl": "0.9.1", "areal": "1.0.4"}
"""The wheels the Makefile's install target puts in `trainers/` (TRAINER_WHEELS there: keep the two equal)."""


def installed(package: str) -> Path:
    root = TRAINERS / package
    if not (TRAINERS / f"{package}-{VERSIONS[package]}.dist-info").is_dir():
        pytest.fail(f"{package} {VERSIONS[package]} is not in {TRAINERS}: run `make install`")
    return root


def load(module: str, stubs: Mapping[str, Mapping[str, Any]] | None = None) -> ModuleType:
    """Import `module` from the wheels: its parent packages become bare namespaces over the wheel's folders;
    `stubs` stand in for modules that need the training stack (name -> attributes)."""
    parts = module.split(".")
    root = installed(parts[0]).parent
    for i in range(1, len(parts)):
        name = ".".join(parts[:i])
        if name not in sys.modules:
            package = ModuleType(name)
            package.__path__ = [str(root.joinpath(*parts[:i]))]
            sys.modules[name] = package
    for name, attrs in (stubs or {}).items():
        for i in range(1, name.count(".") + 1):
            parent = ".".join(name.split(".")[:i])
            if parent not in sys.modules:
                package = ModuleType(parent)
                package.__path__ = [str(root.joinpath(*parent.split(".")))]
                sys.modules[parent] = package
        stub = sys.modules.get(name) or ModuleType(name)
        for attr, value in attrs.items():
            setattr(stub, attr, value)
        sys.modules[name] = stub
    return importlib.import_module(module)


def source(package: str, path: str) -> str:
    """A file of an installed wheel, as text."""
    return (installed(package) / path).read_text(encoding="utf-8")
