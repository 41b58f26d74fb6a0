"""Small file helpers every command shares: atomic writes and YAML mappings."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from edge.core.errors import EdgeError, raise_if_interrupted, signals_deferred


def check_output_path(path: Path, *, what: str = "output") -> None:
    """An output path -> EdgeError unless it can be created: every existing ancestor a writable folder.

    Runs before any long work, so a typo costs seconds, not a whole export.
    """
    path = Path(path).absolute()
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise EdgeError(f"{what} {path}: {parent} is a file, not a folder")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise EdgeError(f"{what} {path}: folder {parent} is not writable")
            return


def disk_full_error(e: OSError, *, path: Path, needed_bytes: int | None) -> EdgeError | None:
    """An OSError -> the one-line EdgeError for a full disk (with space needed and free), else None."""
    if e.errno not in (errno.ENOSPC, errno.EDQUOT):
        return None
    folder = Path(path).parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    need = f"needs about {needed_bytes / 2**20:.0f} MiB, " if needed_bytes else ""
    return EdgeError(
        f"no space left on the device writing {path}: it {need}{free / 2**20:.0f} MiB free; nothing was written"
    )


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
        raise_if_interrupted()
        os.replace(tmp, path)
    except BaseException:
        discard(Path(tmp))
        raise


def discard(path: Path) -> None:
    """Remove a temporary file or folder after a failure or an interrupt; a second Ctrl-C does not cut it short."""
    with signals_deferred():
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


@contextmanager
def building_folder(out: Path, *, force: bool) -> Iterator[Path]:
    """`out` (its parent must exist) -> a private temporary folder beside it to build in. When the block ends,
    the folder is published onto `out` (`publish_folder`); when it raises, it is discarded and `out` is untouched."""
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        yield tmp
        publish_folder(tmp, out, force=force)
    except BaseException:
        discard(tmp)
        raise


def publish_folder(tmp: Path, out: Path, *, force: bool) -> None:
    """A finished folder built beside `out` -> renamed onto `out`; an existing `out` is replaced only with `force`.

    The old folder is moved aside first and removed after the rename, so `out` is never half-written.
    """
    raise_if_interrupted()  # a signal a library swallowed still stops the result from appearing
    os.chmod(tmp, 0o755)
    old = None
    if out.exists():
        if not force:
            raise EdgeError(f"output {out} already exists (pass --force to replace it)")
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
    try:
        # rename(2) onto a non-empty folder fails: a second export racing for `out` is refused here,
        # after the check above, and the first one's complete result stays.
        os.replace(tmp, out)
    except OSError as e:
        if old is not None:  # the folder --force was replacing is gone either way
            discard(old)
        if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
        raise EdgeError(
            f"output {out} was written by another run meanwhile; it is kept, this result is dropped"
        ) from None
    if old is not None:
        discard(old)


def sha256_file(path: Path, *, chunk: int = 1 << 24) -> str:
    """A file -> its sha256 hex digest, read in 16 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


class BackgroundHashes:
    """Files -> their sha256 digests, computed on a daemon thread while the caller goes on (hashlib
    releases the GIL, so hashing a 2.5 GB checkpoint overlaps with lowering); `result()` waits."""

    def __init__(self, paths: Iterable[Path]) -> None:
        self._paths = list(paths)
        self._digests: dict[Path, str] = {}
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="edge-sha256", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for p in self._paths:
                self._digests[p] = sha256_file(p)
        except BaseException as e:  # handed to result()
            self._error = e

    def result(self) -> dict[Path, str]:
        """-> {path: sha256 hex}, once every file is hashed; re-raises what hashing raised."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        return dict(self._digests)


class HashingWriter:
    """A binary file -> the same file whose `write`s also feed a sha256 (`hexdigest()`), so a file
    written once is hashed without being read back."""

    def __init__(self, f: IO[bytes]) -> None:
        self._f = f
        self._h = hashlib.sha256()

    def write(self, data) -> int:
        self._h.update(data)
        return self._f.write(data)

    def hexdigest(self) -> str:
        return self._h.hexdigest()


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
