"""`eoca import` and `eoca inspect` end to end through the console entry point."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

FIX = Path(__file__).resolve().parent / "fixtures"


def eoca(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from eoca.cli import main; main()", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


def test_help_lists_commands() -> None:
    r = eoca("--help")
    assert r.returncode == 0
    for cmd in ("import", "inspect"):
        assert cmd in r.stdout


def test_import_then_inspect(tmp_path: Path) -> None:
    for f in FIX.iterdir():
        shutil.copy(f, tmp_path / f.name)
    r = eoca("import", "--spec", str(tmp_path / "clv_spec.yaml"), "--out", str(tmp_path / "ds"))
    assert r.returncode == 0, r.stderr
    assert "40 customers" in r.stdout
    r = eoca("inspect", str(tmp_path / "ds"), "--json", str(tmp_path / "stats.json"))
    assert r.returncode == 0, r.stderr
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["rows"] == {"customers": 40, "funds": 1, "exposures": 40}
    assert "per fund" in r.stdout and "risk histograms" in r.stdout


def test_bad_input_exits_2_with_message(tmp_path: Path) -> None:
    r = eoca("inspect", str(tmp_path))
    assert r.returncode == 2
    assert r.stderr.startswith("error: ") and "no dataset spec found" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("cmd", ["import", "inspect"])
def test_each_command_has_help(cmd: str) -> None:
    r = eoca(cmd, "--help")
    assert r.returncode == 0 and len(r.stdout) > 200
