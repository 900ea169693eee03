"""Atomic output writing: every file eoca produces appears whole or not at all.

Outputs go to a temporary name in the destination folder and are renamed into place only once complete, so an
interrupted run never leaves a truncated Parquet, JSON or report behind that a later step would trust.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's file-mode creation mask, read without changing it where the OS allows.

    Linux reports it in /proc/self/status; elsewhere it can only be read by setting it, which is done under a
    lock and restored at once (another thread creating a file in that instant is the only exposure).
    """
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp creates the file 0600; give it the mode a plain open() would have (0666 minus the umask)
        # before the rename, so the output is never visible with the wrong permissions.
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_parquet(table: pa.Table, path: str | os.PathLike[str], **kwargs: Any) -> Path:
    """Write ``table`` to ``path`` atomically (zstd-compressed unless ``compression`` is given)."""
    kwargs.setdefault("compression", "zstd")
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, **kwargs)
    return Path(path)


def write_text(text: str, path: str | os.PathLike[str]) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_bytes(data: bytes, path: str | os.PathLike[str]) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def _json_default(obj: Any) -> Any:
    # numpy scalars and arrays appear in metrics dicts; convert them rather than failing mid-write.
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")


def write_json(obj: Any, path: str | os.PathLike[str]) -> Path:
    return write_text(json.dumps(obj, indent=2, default=_json_default, allow_nan=True) + "\n", path)


def write_yaml(obj: Any, path: str | os.PathLike[str]) -> Path:
    return write_text(yaml.safe_dump(obj, sort_keys=False, allow_unicode=True), path)


def write_csv(
    rows: Sequence[Mapping[str, Any]], path: str | os.PathLike[str], columns: Sequence[str] | None = None
) -> Path:
    """Write metric rows as CSV atomically: ``columns`` (default: every key, in order of first appearance);
    a missing key or ``None`` is an empty cell, never a made-up number."""
    keys = list(columns) if columns is not None else list(dict.fromkeys(k for r in rows for k in r))
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: "" if r.get(k) is None else r.get(k) for k in keys})
    return Path(path)


def check_output_folder(path: str | os.PathLike[str], overwrite: bool, option: str = "--out") -> Path:
    """Refuse an output folder that cannot be written whole: a file at ``path``, or a non-empty folder when
    ``overwrite`` is False. Returns ``path``. Raises ConfigError naming the path and what was expected."""
    from eoca.errors import ConfigError

    final = Path(path)
    if final.exists() and not final.is_dir():
        raise ConfigError(f"{option} {final}: is a file; expected a folder (or a name that does not exist yet)")
    if final.is_dir() and any(final.iterdir()) and not overwrite:
        raise ConfigError(
            f"{option} {final}: the folder exists already and is not empty; pass --overwrite to replace it, "
            f"or another {option}"
        )
    return final


def partial_folder(final: Path) -> Path:
    """The hidden folder beside ``final`` where its contents are built before being swapped in."""
    return final.parent / f".{final.name}.partial"


@contextlib.contextmanager
def output_folder(
    path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    resume: bool = False,
    keep_on_failure: bool = False,
    option: str = "--out",
) -> Iterator[Path]:
    """Build a command's output folder under a hidden temporary name and swap it in whole when the block ends.

    The folder is whole or absent: a killed or failing command leaves ``path`` as it was (absent, or the
    previous complete output when ``overwrite`` is set). The temporary folder a killed run left behind is
    removed first, unless ``resume`` (a resumable command continues from it). On failure the temporary folder
    is removed, or kept when ``keep_on_failure`` (to resume from, or to look at).

    Raises:
        ConfigError: ``path`` is a file, or a non-empty folder and ``overwrite`` is False.
    """
    final = check_output_folder(path, overwrite, option)
    work = partial_folder(final)
    if work.exists() and not resume:
        _remove(work)
    work.mkdir(parents=True, exist_ok=True)
    try:
        yield work
    except BaseException:
        if not keep_on_failure:
            _remove(work)
        raise
    swap_in(work, final)


def swap_in(work: Path, final: Path) -> None:
    """Replace ``final`` by the complete folder ``work``: the old output is moved aside first and deleted only
    after the new one is in place, so at every instant ``final`` is either the old or the new whole folder
    (or, for the instant between the two renames, absent)."""
    old: Path | None = None
    if final.exists():
        old = final.parent / f".{final.name}.old"
        if old.exists():
            _remove(old)
        os.replace(final, old)
    os.replace(work, final)
    if old is not None:
        _remove(old)


def _remove(path: Path) -> None:
    import shutil

    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def remove_stale_temporaries(path: str | os.PathLike[str]) -> list[Path]:
    """Delete the hidden temporary files :func:`atomic_path` leaves beside ``path`` when its writer was killed
    (``.NAME.*.tmp``); returns what was removed. Call before writing ``path`` again."""
    final = Path(path)
    if not final.parent.is_dir():
        return []
    stale = sorted(final.parent.glob(f".{final.name}.*.tmp"))
    for p in stale:
        _remove(p)
    return stale
