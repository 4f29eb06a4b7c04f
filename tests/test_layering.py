"""The layering rules of pyproject.toml ([tool.ruff.lint.flake8-tidy-imports]): ``rados``
is imported only by skyhook_py/storage/rados_io.py and ``grpc`` only within
skyhook_py/service/.  Runs ruff's banned-api check (TID251) on the package."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from skyhook_py.paths import REPO_ROOT


def _ruff() -> list[str] | None:
    venv_ruff = Path(sys.executable).with_name("ruff")
    if venv_ruff.is_file():
        return [str(venv_ruff)]
    found = shutil.which("ruff")
    return [found] if found else None


def test_rados_and_grpc_are_imported_only_in_their_rooms():
    ruff = _ruff()
    if ruff is None:
        pytest.skip("ruff is not installed (pip install -e '.[test]' installs it)")
    proc = subprocess.run([*ruff, "check", "--no-cache", "--select", "TID251", "skyhook_py"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"banned imports:\n{proc.stdout}{proc.stderr}"
