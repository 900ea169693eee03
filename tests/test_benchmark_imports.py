"""The benchmark scripts import eoca inside their functions (so that ``--help`` is instant), where neither the
linter nor the type checker follows a moved or renamed name: check every such import against the package."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

BENCHMARKS = sorted((Path(__file__).resolve().parents[1] / "benchmarks").glob("*.py"))


def _eoca_imports(path: Path) -> list[tuple[int, str, str]]:
    """``(line, module, name)`` of every ``from eoca... import name`` in the file, at any depth."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "eoca":
            found += [(node.lineno, node.module, alias.name) for alias in node.names]
    return found


def _missing(path: Path) -> list[str]:
    missing = []
    for line, module, name in _eoca_imports(path):
        mod = importlib.import_module(module)
        if not hasattr(mod, name):
            try:
                importlib.import_module(f"{module}.{name}")
            except ModuleNotFoundError:
                missing.append(f"{path.name}:{line}: from {module} import {name}")
    return missing


@pytest.mark.parametrize("path", BENCHMARKS, ids=[p.name for p in BENCHMARKS])
def test_every_eoca_name_a_benchmark_imports_exists(path: Path) -> None:
    missing = _missing(path)
    assert not missing, "\n".join(missing)


def test_the_check_sees_imports_inside_functions(tmp_path: Path) -> None:
    script = tmp_path / "bench.py"
    script.write_text(
        "def main():\n"
        "    from eoca.threads import available_cpus\n"
        "    from eoca.training import trainer\n"
        "    from eoca.threads import no_such_name\n"
    )
    assert _missing(script) == ["bench.py:4: from eoca.threads import no_such_name"]
