"""edge.core.io's hashing helpers: digests computed off the main thread or while writing equal hashlib's of the file."""

from __future__ import annotations

import hashlib
import io

import pytest

from edge.core.io import BackgroundHashes, HashingWriter, sha256_file, write_atomic


def test_background_hashes_equal_the_files_digests(tmp_path):
    files = []
    for i, size in enumerate((0, 1, (1 << 24) + 7)):  # empty, tiny, and more than one 16 MiB read
        p = tmp_path / f"f{i}"
        p.write_bytes(bytes(range(256)) * (size // 256) + b"x" * (size % 256))
        files.append(p)
    digests = BackgroundHashes(files).result()
    assert list(digests) == files  # in the order given: the manifest lists them so
    for p in files:
        assert digests[p] == hashlib.sha256(p.read_bytes()).hexdigest()


def test_background_hashes_raise_what_hashing_raised(tmp_path):
    with pytest.raises(FileNotFoundError):
        BackgroundHashes([tmp_path / "missing"]).result()


def test_hashing_writer_digest_is_the_written_files(tmp_path):
    chunks = [b"abc", bytes(1000), b"", b"\xff" * 70_000]
    holder = {}

    def write(f):
        w = HashingWriter(f)
        for c in chunks:
            w.write(c)
        holder["digest"] = w.hexdigest()

    write_atomic(tmp_path / "out.bin", write)
    assert (tmp_path / "out.bin").read_bytes() == b"".join(chunks)
    assert holder["digest"] == sha256_file(tmp_path / "out.bin") == hashlib.sha256(b"".join(chunks)).hexdigest()
    buf = io.BytesIO()
    assert HashingWriter(buf).write(b"12345") == 5  # write's return value passes through
