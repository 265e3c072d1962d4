"""Architecture: layers point one way, every module has a place, one service registry.

The import-linter contracts in pyproject.toml are checked with ``lint-imports`` on a
copy of the sources laid out the way a wheel installs them (``services/`` as
``movierec.services``, ``gateway/`` and ``web/`` under ``movierec.apps``), because the
editable install maps those folders in a way import-linter cannot follow. Imports
inside functions count like any other.
"""

from __future__ import annotations

import ast
import importlib
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from movierec import registry

ROOT = Path(__file__).resolve().parent.parent
CONTRACTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]


def mapped_folders() -> dict[str, str]:
    """setup.py's MAPPED: package name -> folder."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and node.targets[0].id == "MAPPED":
            return ast.literal_eval(node.value)
    raise AssertionError("setup.py has no MAPPED")


def installed_layout(target: Path) -> Path:
    """Copy the sources into ``target`` as a wheel would lay them out."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "static", "migrations")
    shutil.copytree(ROOT / "movierec", target / "movierec", ignore=ignore)
    for package, folder in mapped_folders().items():
        shutil.copytree(ROOT / folder, target / Path(*package.split(".")), ignore=ignore,
                        dirs_exist_ok=True)
    return target


def test_import_contracts_hold(tmp_path: Path) -> None:
    site = installed_layout(tmp_path / "site")
    linter = Path(sys.executable).parent / "lint-imports"
    env = {**os.environ, "PYTHONPATH": str(site)}
    out = subprocess.run([str(linter), "--config", str(ROOT / "pyproject.toml"),
                          "--no-cache"], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout


def _contract(name_start: str) -> dict:
    return next(c for c in CONTRACTS["contracts"] if c["name"].startswith(name_start))


def test_every_top_level_module_has_a_layer() -> None:
    upper = {m.strip() for layer in _contract("The CLI")["layers"] for m in layer.split(":")}
    shared = set(_contract("The shared library")["source_modules"])
    names = {p.stem for p in (ROOT / "movierec").glob("*.py") if p.stem != "__init__"}
    names |= {p.name for p in (ROOT / "movierec").iterdir()
              if (p / "__init__.py").is_file()}
    names |= {package.split(".")[1] for package in mapped_folders()}
    placed = {m.split(".")[1] for m in upper | shared} | {"apps", "services"}
    assert names - placed == set(), "give these modules a layer in pyproject.toml"
    assert not upper & shared


def test_nothing_generic_is_installed_at_the_top_level() -> None:
    assert set(mapped_folders()) == {"movierec.services", "movierec.apps.gateway",
                                     "movierec.apps.web"}
    code = "import importlib.util as u; print([n for n in ('services', 'gateway', 'web') " \
           "if u.find_spec(n)])"
    out = subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True,
                         text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


@pytest.mark.parametrize("service", registry.SERVICES, ids=lambda s: s.name)
def test_registry_entries_are_real(service: registry.Service) -> None:
    module = importlib.import_module(service.module)
    assert callable(module.main)
    assert service.protocol == "http" or callable(module.create_server)
    settings = getattr(module, service.settings_class)
    fields = {f.metadata["env"]: f.default for f in settings.__dataclass_fields__.values()}
    assert fields[service.port_env] == service.port
    assert (ROOT / service.folder / "__init__.py").is_file()
    if service.health:
        package, _, name = service.health.rpartition(".")
        pb2 = importlib.import_module(f"{package}.{name.lower()}_pb2")
        assert pb2.DESCRIPTOR.services_by_name[name].full_name == service.health
