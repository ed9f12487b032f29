"""Write a compiled spec to ``<out>/<spec>/`` atomically.

All files are written into a temporary sibling directory first, then swapped in with
renames, so readers and a crash see either the old complete output or the new one. An
exclusive lock per spec serializes concurrent compiles of the same output; leftovers of a
killed compile (hidden ``.<spec>.tmp-*`` / ``.<spec>.old-*`` folders) are removed under it.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from behavio.compiler.build import Compiled


def write_compiled(compiled: Compiled, out_root: Path) -> tuple[Path, bool]:
    """Write the files; return (directory, changed). Identical existing output is left untouched."""
    out_root.mkdir(parents=True, exist_ok=True)
    target = out_root / compiled.spec.id
    with _locked(out_root, compiled.spec.id):
        _remove_leftovers(out_root, compiled.spec.id)
        if _same(target, compiled.files):
            return target, False
        _swap_in(compiled, out_root, target)
    return target, True


@contextmanager
def _locked(out_root: Path, spec_id: str):
    with open(out_root / f".{spec_id}.lock", "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _remove_leftovers(out_root: Path, spec_id: str) -> None:
    for pattern in (f".{spec_id}.tmp-*", f".{spec_id}.old-*"):
        for leftover in out_root.glob(pattern):
            shutil.rmtree(leftover, ignore_errors=True)


def _swap_in(compiled: Compiled, out_root: Path, target: Path) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=f".{compiled.spec.id}.tmp-", dir=out_root))
    try:
        for name, data in compiled.files.items():
            with open(tmp / name, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        os.chmod(tmp, 0o755)
        old = None
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{compiled.spec.id}.old-", dir=out_root))
            os.rmdir(old)
            os.rename(target, old)
        os.rename(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _same(target: Path, files: dict[str, bytes]) -> bool:
    if not target.is_dir():
        return False
    existing = {p.name for p in target.iterdir() if p.is_file()}
    if existing != set(files):
        return False
    return all((target / name).read_bytes() == data for name, data in files.items())
