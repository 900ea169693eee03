"""Atomic writes: whole files or nothing, with the permissions a plain open() would give."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from eoca.io import atomic_path, current_umask, write_json, write_parquet, write_text


@pytest.fixture
def umask() -> Iterator[None]:
    """Restore the process umask whatever a test sets it to."""
    old = os.umask(0o022)
    os.umask(old)
    yield
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002, 0o077])
def test_written_files_follow_the_umask(tmp_path: Path, umask: None, mask: int) -> None:
    os.umask(mask)
    assert current_umask() == mask
    text = write_text("hello\n", tmp_path / "a.txt")
    js = write_json({"x": 1}, tmp_path / "sub" / "b.json")
    pq_file = write_parquet(pa.table({"x": [1, 2]}), tmp_path / "c.parquet")
    for path in (text, js, pq_file):
        assert _mode(path) == 0o666 & ~mask, (path.name, oct(_mode(path)))
    # A plain open() is the reference the outputs must match.
    (tmp_path / "plain.txt").write_text("x")
    assert _mode(tmp_path / "plain.txt") == _mode(text)


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError, match="boom"), atomic_path(target) as tmp:
        tmp.write_text("partial")
        raise RuntimeError("boom")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_overwrite_replaces_whole_file(tmp_path: Path) -> None:
    target = write_text("old contents that are longer\n", tmp_path / "f.txt")
    write_text("new\n", target)
    assert target.read_text() == "new\n"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_umask_fallback_without_proc(monkeypatch: pytest.MonkeyPatch, umask: None) -> None:
    # Where /proc is missing (macOS, some containers) the mask is read by setting and restoring it.
    def no_proc(*args: object, **kwargs: object) -> None:
        raise FileNotFoundError("/proc/self/status")

    monkeypatch.setattr("eoca.io.open", no_proc, raising=False)
    os.umask(0o027)
    assert current_umask() == 0o027
    assert current_umask() == 0o027, "reading the mask must not change it"


def test_write_csv_keeps_missing_values_empty_and_columns_in_order(tmp_path) -> None:
    from eoca.io import write_csv

    path = write_csv([{"a": 1, "b": None}, {"a": 2.5, "c": "x"}], tmp_path / "t.csv")
    assert path.read_text(encoding="utf-8") == "a,b,c\n1,,\n2.5,,x\n"
    write_csv([{"a": 1, "b": 2}], tmp_path / "u.csv", columns=["b"])
    assert (tmp_path / "u.csv").read_text(encoding="utf-8") == "b\n2\n"
