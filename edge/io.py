"""Small file helpers every command shares: atomic writes and YAML mappings."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from edge.errors import EdgeError


def write_atomic(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Call write(file) on a temporary file beside `path`, fsync, then rename it over `path`.

    A failure or an interrupt leaves `path` as it was and no temporary file behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def publish_folder(tmp: Path, out: Path, *, force: bool) -> None:
    """A finished folder built beside `out` -> renamed onto `out`; an existing `out` is replaced only with `force`.

    The old folder is moved aside first and removed after the rename, so `out` is never half-written.
    """
    os.chmod(tmp, 0o755)
    old = None
    if out.exists():
        if not force:
            raise EdgeError(f"output {out} already exists (pass --force to replace it)")
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def sha256_file(path: Path, *, chunk: int = 1 << 24) -> str:
    """A file -> its sha256 hex digest, read in 16 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_text_atomic(path: Path, text: str) -> None:
    """Text -> `path`, all or nothing (UTF-8)."""
    write_atomic(path, lambda f: f.write(str.encode(text, "utf-8")))


def read_yaml(path: Path) -> dict[str, Any]:
    """A YAML file -> its top-level mapping; EdgeError (one line) if missing, unreadable or not a mapping."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise EdgeError(f"config {path} does not exist") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise EdgeError(f"config {path} is not readable YAML: {str(e).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise EdgeError(f"config {path}: expected a mapping of config keys")
    return data
