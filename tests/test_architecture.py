"""The layering is a contract: import-linter checks it here, so `make test` (and CI) fail when
an import breaks it, and `make lint` runs the same check.

The contracts live in pyproject.toml ([tool.importlinter]). Each is also shown to catch a
break, on a copy of the package with one offending import added, so none of them passes
by being vacuous.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
CONTRACTS: list[dict[str, Any]] = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"][
    "importlinter"
]["contracts"]


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` on the package found first from ``root`` (its pyproject.toml)."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _contract(matches: Callable[[dict[str, Any]], bool]) -> str:
    [name] = [c["name"] for c in CONTRACTS if matches(c)]
    return name


def test_the_package_keeps_every_contract():
    done = _lint(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(CONTRACTS) >= 4
    for contract in CONTRACTS:
        assert f"{contract['name']} KEPT" in done.stdout


LAYERS = _contract(lambda c: c["type"] == "layers")
STAGES = _contract(lambda c: c["type"] == "independence")
DELIVERY = _contract(lambda c: c.get("source_modules") == ["newsletter.delivery"])
DOORS = _contract(lambda c: "newsletter.cli" in c.get("source_modules", []))

# (file to change, line to add, the contract it breaks)
BREAKS = {
    "web reads the store": (
        "web/archive.py",
        "from newsletter.store import digests as rows",
        DOORS,
    ),
    "CLI sends by itself, in a function": (
        "cli/send.py",
        "def sneak() -> None:\n    from newsletter.delivery import smtp  # noqa: F401",
        DOORS,
    ),
    "the store raises an app error": (
        "store/digests.py",
        "from newsletter.app import send_lock",
        LAYERS,
    ),
    "a stage imports a door": ("selection.py", "from newsletter.schedule import timing", LAYERS),
    "a new module without a layer": ("helpers.py", "VALUE = 1", LAYERS),
    "render reads the sources": ("render.py", "from newsletter.sources import folder", STAGES),
    "delivery selects articles": ("delivery/engine.py", "import newsletter.selection", DELIVERY),
}


@pytest.mark.parametrize("case", BREAKS)
def test_each_contract_catches_a_break(tmp_path: Path, case: str):
    path, line, contract = BREAKS[case]
    shutil.copytree(
        ROOT / "newsletter", tmp_path / "newsletter", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / "newsletter" / path
    before = target.read_text(encoding="utf-8") if target.exists() else ""
    target.write_text(f"{before}\n{line}\n", encoding="utf-8")

    done = _lint(tmp_path)

    assert done.returncode != 0, done.stdout
    assert f"{contract} BROKEN" in done.stdout
    broken = [c["name"] for c in CONTRACTS if f"{c['name']} BROKEN" in done.stdout]
    assert broken == [contract], f"{case} broke {broken}"
