"""The layer contract of ARCHITECTURE.md, enforced: ``lint-imports`` (import-linter) with the
contracts in pyproject.toml (``[tool.importlinter]``) must pass: no upward imports, no
import cycles between voicelab's packages."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from .conftest import need

REPO = Path(__file__).resolve().parent.parent

def _lint_imports() -> str | None:
    beside = Path(sys.executable).parent / "lint-imports"
    return str(beside) if beside.exists() else shutil.which("lint-imports")

def _run(config: Path | None = None) -> subprocess.CompletedProcess:
    exe = _lint_imports()
    need(exe is not None, "lint-imports not found: pip install import-linter (a dev dependency)")
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    args = [exe, "--no-cache"] + (["--config", str(config)] if config else [])
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)

def test_import_contracts_are_kept():
    p = _run()
    report = p.stdout + p.stderr
    assert "Contracts:" in report, report[-3000:]
    assert p.returncode == 0, "import-linter contracts broken (move the helper down a layer):\n" + report[-6000:]
    assert "voicelab layers: no upward imports KEPT" in report
    assert "no import cycles between sibling packages KEPT" in report

def test_contract_catches_an_upward_import(tmp_path):
    """The contract can fail: a copy of the package with one upward import breaks it."""
    pkg = tmp_path / "voicelab"
    shutil.copytree(REPO / "voicelab", pkg, ignore=shutil.ignore_patterns("__pycache__", "data", "static"))
    bad = pkg / "rtp" / "packet.py"
    bad.write_text(bad.read_text() + "\n\ndef _upward():\n    from ..sim import Scenario  # noqa: F401\n")
    config = tmp_path / "pyproject.toml"
    text = (REPO / "pyproject.toml").read_text()
    config.write_text(text[text.index("[tool.importlinter]"):])
    exe = _lint_imports()
    need(exe is not None, "lint-imports not found: pip install import-linter (a dev dependency)")
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    p = subprocess.run([exe, "--no-cache", "--config", str(config)], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode != 0
    assert "voicelab.rtp is not allowed to import voicelab.sim" in p.stdout + p.stderr


def test_every_module_has_a_layer():
    """A new top-level module or package must be placed in the contract, not slip past it."""
    import pkgutil
    import re
    import tomllib

    import voicelab

    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = next(c for c in config["contracts"] if c["type"] == "layers")["layers"]
    named = {m for layer in layers for m in re.findall(r"voicelab\.([A-Za-z_]\w*)", layer)}
    present = {m.name for m in pkgutil.iter_modules(voicelab.__path__)}
    missing = sorted(present - named)
    assert not missing, f"add these to [tool.importlinter] layers in pyproject.toml: {', '.join(missing)}"
