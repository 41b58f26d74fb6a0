"""edge.export under faults: outputs it cannot write, a full disk, signals, two exports racing for
one folder, and the same inputs giving the same bytes."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import edge.export.pipeline as pipeline
from edge.core.io import sha256_file
from edge.export.__main__ import main
from tests.conftest import MAX_CONTEXT

ROOT = Path(__file__).resolve().parents[2]


def _cli(args, capsys):
    capsys.readouterr()
    code = main([*args, "--quiet"])
    return code, capsys.readouterr().err.strip()


def _one_error_line(code: int, err: str) -> str:
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


def _no_long_work(monkeypatch):
    """Make loading the weights fail the test: a refusal must come before it."""

    def forbidden(*a, **k):
        raise AssertionError("the long stages ran before the bad input was refused")

    monkeypatch.setattr(pipeline, "load_model", forbidden)


def test_output_under_a_regular_file_is_refused_before_loading(tiny_hf, tmp_path, capsys, monkeypatch):
    _no_long_work(monkeypatch)
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder")
    err = _one_error_line(*_cli(["--checkpoint", str(tiny_hf), "--output", str(blocker / "sub" / "out")], capsys))
    assert f"{blocker} is a file, not a folder" in err
    assert blocker.read_text() == "not a folder" and sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_checkpoint_given_as_a_regular_file_is_named(tmp_path, capsys, monkeypatch):
    _no_long_work(monkeypatch)
    f = tmp_path / "weights.bin"
    f.write_bytes(b"\0" * 16)
    err = _one_error_line(*_cli(["--checkpoint", str(f), "--output", str(tmp_path / "o")], capsys))
    assert err.startswith(f"error: {f} is a file in {tmp_path}, which is not a checkpoint")


def test_config_flag_takes_a_yaml_file(tiny_hf, tmp_path, capsys, monkeypatch):
    """--config FILE reads the file (its bad value is reported), like the positional config."""
    _no_long_work(monkeypatch)
    y = tmp_path / "mine.yaml"
    y.write_text("max_context: 1\nquantization:\n  group_size: 24\n")
    err = _one_error_line(
        *_cli(["--config", str(y), "--checkpoint", str(tiny_hf), "--output", str(tmp_path / "o")], capsys)
    )
    assert "max_context: 1 is less than 2" in err and "group_size: 24 is not a power of two" in err
    err2 = _one_error_line(*_cli([str(y), "--checkpoint", str(tiny_hf), "--output", str(tmp_path / "o")], capsys))
    assert err2 == err


class _FakeProgram:
    """Stands in for the lowered program: `size` bytes, of which the disk takes only `fits`."""

    def __init__(self, size: int, fits: int) -> None:
        self.size, self.fits = size, fits

    def _get_pte_data(self) -> bytes:
        return b"\0" * self.size

    def write_to_file(self, f) -> None:
        f.write(b"\0" * self.fits)
        raise OSError(errno.ENOSPC, "No space left on device")


@pytest.fixture
def fast_pipeline(monkeypatch):
    """The export and lower stages replaced by a fake program (the write is what these tests exercise)."""
    monkeypatch.setattr(pipeline, "export_program", lambda model, max_prefill: object())
    monkeypatch.setattr(pipeline, "lower_program", lambda ep, metadata: _FakeProgram(size=3 * 2**20, fits=2**20))


def test_full_disk_while_writing_is_one_line_and_leaves_nothing(tiny_hf, tmp_path, capsys, fast_pipeline):
    out = tmp_path / "o"
    err = _one_error_line(*_cli(["--checkpoint", str(tiny_hf), "--output", str(out), "--max-context", "32"], capsys))
    assert "no space left on the device" in err and "needs about 3 MiB" in err and "MiB free" in err
    assert list(tmp_path.iterdir()) == []  # no output, no temporary folder


def test_too_little_free_space_is_refused_before_writing(tiny_hf, tmp_path, capsys, fast_pipeline, monkeypatch):
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=2**20))
    out = tmp_path / "o"
    err = _one_error_line(*_cli(["--checkpoint", str(tiny_hf), "--output", str(out), "--max-context", "32"], capsys))
    assert "the .pte needs 3 MiB, 1 MiB free" in err
    assert list(tmp_path.iterdir()) == []


def _export_process(ckpt: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edge.export",
            "llama3_2_1b_8da4w",
            "--checkpoint",
            str(ckpt),
            "--output",
            str(out),
            "--max-context",
            str(MAX_CONTEXT),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ | {"PYTHONUNBUFFERED": "1"},
    )


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_during_lowering_leaves_nothing(tiny_hf, tmp_path, sig):
    out = tmp_path / "o"
    proc = _export_process(tiny_hf, out)
    seen = []
    for line in proc.stderr:  # wait until the export is inside its longest stage
        seen.append(line)
        if "] lower" in line:
            time.sleep(2)
            proc.send_signal(sig)
            break
    rest = proc.stderr.read()
    code = proc.wait(timeout=120)
    assert any("] lower" in s for s in seen), "".join(seen)
    assert code == 130, rest
    assert rest.strip().splitlines()[-1] == "error: interrupted; nothing was written"
    assert "Traceback" not in rest
    assert list(tmp_path.iterdir()) == []


_SWALLOWING_LOWERING = """
import logging, os, signal, sys
from edge.core.quiet import quiet_libraries
quiet_libraries()  # as edge.export's main does before importing torch
import edge.export.pipeline as pipeline
real = pipeline.lower_program

def lower_program(*args, **kwargs):  # a library that catches the Ctrl-C, as torch's fake-tensor dispatch does
    try:
        os.kill(os.getpid(), signal.SIGINT)
    except KeyboardInterrupt as e:
        logging.getLogger("torch._subclasses.fake_tensor").exception("fake tensor raised TypeError")
        if sys.argv[1] == "rewrap":
            raise TypeError("set_(): argument 'stride' failed to unpack the object") from e
    return real(*args, **kwargs)  # "continue": the library went on as if nothing had happened

pipeline.lower_program = lower_program
from edge.export.__main__ import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize("library", ["rewrap", "continue"])
def test_interrupt_a_library_swallows_still_exits_130_and_writes_nothing(tiny_hf, tmp_path, library):
    """Ctrl-C turned into another error (rewrap), or caught and ignored (continue): the run still ends
    with exit 130, one line, no traceback from edge or torch's logging, and no output folder."""
    out = tmp_path / "o"
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            _SWALLOWING_LOWERING,
            library,
            "llama3_2_1b_8da4w",
            "--checkpoint",
            str(tiny_hf),
            "--output",
            str(out),
            "--max-context",
            str(MAX_CONTEXT),
            "--quiet",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr.strip().splitlines() == ["error: interrupted; nothing was written"], proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_racing_exports_one_result_one_refusal_same_bytes(tiny_hf, q_export, tmp_path):
    """Two processes into one folder: one complete result, one clean refusal; and the .pte equals the
    in-process export of the same inputs (q_export) byte for byte."""
    out = tmp_path / "o"
    procs = [_export_process(tiny_hf, out) for _ in range(2)]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    codes = sorted(c for c, _ in results)
    assert codes == [0, 2], results
    loser = next(err for c, err in results if c == 2)
    assert loser.strip().splitlines()[-1].startswith(f"error: output {out}")
    assert "Traceback" not in loser
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]  # no temporary folder left by either
    manifest = (out / "manifest.json").read_text()
    assert sha256_file(out / "model.pte") in manifest
    assert (out / "model.pte").read_bytes() == (q_export / "model.pte").read_bytes()
