"""The import layers of ARCHITECTURE.md, held by import-linter (``[tool.importlinter]`` in pyproject).

registry/ and repository/ are installed as ``xds.registry`` and ``xds.repository`` (package-dir in
pyproject); import-linter reads packages from where they lie, so the check runs on a copy laid out
as the wheel lays it out: ``xds/`` with ``registry/``, ``repository/`` and ``wsdl/`` inside.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc")


def _installed_layout(tmp: Path) -> Path:
    shutil.copytree(ROOT / "xds", tmp / "xds", ignore=IGNORE)
    shutil.copytree(ROOT / "registry", tmp / "xds" / "registry", ignore=IGNORE)
    shutil.copytree(ROOT / "repository", tmp / "xds" / "repository", ignore=IGNORE)
    shutil.copytree(ROOT / "wsdl", tmp / "xds" / "wsdl", ignore=IGNORE)
    shutil.copy(ROOT / "pyproject.toml", tmp / "pyproject.toml")
    return tmp


def _lint(tmp: Path) -> subprocess.CompletedProcess[str]:
    lint = Path(sys.executable).with_name("lint-imports")
    return subprocess.run(
        [str(lint), "--no-cache", "--config", "pyproject.toml"],
        cwd=tmp,
        env={"PYTHONPATH": str(tmp), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_import_contracts_hold(tmp_path: Path) -> None:
    result = _lint(_installed_layout(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 2 kept, 0 broken." in result.stdout


def test_a_library_module_importing_an_actor_breaks_the_contract(tmp_path: Path) -> None:
    """The check is live: a trust module that imports the registry is reported."""
    tmp = _installed_layout(tmp_path)
    with (tmp / "xds" / "trust" / "policy.py").open("a") as f:
        f.write("\nfrom xds.registry import schema as _schema  # noqa\n")
    result = _lint(tmp)
    assert result.returncode != 0
    assert "xds.trust.policy -> xds.registry.schema" in result.stdout


def test_a_cycle_between_siblings_breaks_the_contract(tmp_path: Path) -> None:
    tmp = _installed_layout(tmp_path)
    with (tmp / "xds" / "metadata" / "vocabulary.py").open("a") as f:
        f.write("\nimport xds.soap.envelope  # noqa\n")
    result = _lint(tmp)
    assert result.returncode != 0
