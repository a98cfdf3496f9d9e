"""Write-then-rename: a file or folder appears under its final name only once complete, so a killed run never
leaves a truncated config, metrics file, cache, export or run record behind (a rerun finds it whole or absent)."""

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path: str | Path, *, unique: bool = False) -> Iterator[Path]:
    """Yields a temporary path beside `path` to write a file or folder to; renames it to `path` when the block
    ends, removes it on an error. Creates the parent folder. The temporary is <name>.tmp (one left by an earlier
    kill is removed first), or with `unique` <name>.<random>.tmp, for caches several processes may write at once.
    A folder `path` must not exist when the block ends (os.replace does not replace a non-empty folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp" if unique else f"{path.name}.tmp")
    _remove(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


def write_text(path: str | Path, text: str) -> None:
    """Writes `text` (UTF-8) to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
