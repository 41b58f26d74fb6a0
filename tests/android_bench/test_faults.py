"""Each fault: one clear line on stderr, exit 2, and nothing measured before it is lost."""

from __future__ import annotations

import json
import shutil

import pytest

from android_bench.__main__ import main
from tests.android_bench.conftest import FAKE_LLAMA_MAIN


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(
        [
            "--runner",
            str(FAKE_LLAMA_MAIN),
            "--prompt-tokens",
            "8",
            "--max-new-tokens",
            "4",
            "--warmup",
            "0",
            "--repetitions",
            "1",
            *args,
        ]
    )
    out, err = capsys.readouterr()
    return code, out, err


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error: ")]


def records(stem) -> list[dict]:
    return [json.loads(line) for line in stem.with_suffix(".jsonl").read_text().splitlines()]


def test_no_adb_on_path(exported, tmp_path, monkeypatch, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    code, out, err = run(capsys, "--pte", str(exported / "model.pte"))
    assert code == 2 and out == ""
    assert err == "error: adb not found on PATH (install Android platform-tools, or Debian's package adb)\n"


def test_no_device(phones, exported, capsys):
    code, _, err = run(capsys, "--pte", str(exported / "model.pte"))
    assert code == 2
    assert err == "error: no Android device attached (adb devices lists none); plug one in and allow USB debugging\n"


def test_several_devices_and_no_serial(phones, exported, capsys):
    phones.add("A1")
    phones.add("B2")
    code, _, err = run(capsys, "--pte", str(exported / "model.pte"))
    assert code == 2
    assert (
        err == "error: several devices attached (A1 (device), B2 (device)); choose with --serial (or $ANDROID_SERIAL)\n"
    )


def test_android_serial_picks_one_of_several(phones, exported, tmp_path, capsys, monkeypatch):
    phones.add("A1")
    phones.add("B2")
    monkeypatch.setenv("ANDROID_SERIAL", "B2")  # as adb itself honours it
    stem = tmp_path / "bench"
    code, _, err = run(capsys, "--pte", str(exported / "model.pte"), "--output", str(stem))
    assert code == 0, err
    assert [r["target_id"] for r in records(stem)] == ["B2"]
    assert {c["serial"] for c in phones.calls() if c["argv"][0] != "devices"} == {"B2"}


@pytest.mark.parametrize(
    "state, message",
    [
        ("offline", "error: device A1 is offline: reconnect it (or run adb kill-server)\n"),
        ("unauthorized", "error: device A1 is unauthorized: accept the USB debugging prompt on the phone\n"),
    ],
)
def test_offline_or_unauthorized(phones, exported, capsys, state, message):
    phones.add("A1", state=state)
    code, _, err = run(capsys, "--pte", str(exported / "model.pte"))
    assert (code, err) == (2, message)
    code, _, err = run(capsys, "--pte", str(exported / "model.pte"), "--serial", "Z9")
    assert (code, err) == (2, "error: device Z9 not found (adb devices lists A1)\n")


def test_push_fails_after_a_phone_was_measured(phones, exported, tmp_path, capsys):
    phones.add("A1")
    phones.add("B2", fail_push=True)
    stem = tmp_path / "bench"
    code, out, err = run(
        capsys, "--pte", str(exported / "model.pte"), "--serial", "A1", "--serial", "B2", "--output", str(stem)
    )
    assert code == 2
    assert error_lines(err) == [
        "error: B2: adb push fake_llama_main to /data/local/tmp/edge_bench/llama_main failed: "
        "adb: error: failed to copy "
        f"'{FAKE_LLAMA_MAIN}' to '/data/local/tmp/edge_bench/llama_main': "
        "remote couldn't create file: Permission denied"
    ]
    (rec,) = records(stem)  # A1's run is kept and written
    assert rec["target_id"] == "A1" and rec["status"] == "ok" and rec["ttft_s"] is not None
    assert "Pixel 8 (A1)" in out and "FAULT: B2: adb push" in out


def test_too_little_space(phones, exported, tmp_path, capsys):
    phones.add("A1", free_kb=100)
    stem = tmp_path / "bench"
    code, _, err = run(capsys, "--pte", str(exported / "model.pte"), "--output", str(stem))
    assert code == 2
    (line,) = error_lines(err)
    assert line.startswith("error: A1: not enough space in /data/local/tmp/edge_bench: ") and line.endswith(
        " MiB to push, 0.1 MiB free"
    )
    assert [c["argv"][0] for c in phones.calls()].count("push") == 0  # checked before pushing anything
    assert records(stem) == []


def two_models(exported, tmp_path, bad: str) -> list[str]:
    """--pte for a bad model (folder `bad`) and a good one (folder `good`), same tokenizer."""
    args = []
    for name in (bad, "good"):
        shutil.copytree(exported, tmp_path / name)
        args += ["--pte", str(tmp_path / name / "model.pte")]
    return args


def test_runner_crash_is_recorded_and_the_next_configuration_runs(phones, exported, tmp_path, capsys, monkeypatch):
    phones.add("A1")
    monkeypatch.setenv("FAKE_LLAMA_MAIN_ABORT_IF", "crashy")
    stem = tmp_path / "bench"
    code, out, err = run(capsys, *two_models(exported, tmp_path, "crashy"), "--repetitions", "2", "--output", str(stem))
    assert code == 2
    crash, *good = records(stem)
    assert crash["label"] == "crashy" and crash["status"] == "failed" and crash["exit_code"] == 134
    assert crash["error"].startswith(
        "the runner crashed (SIGABRT, exit 134): E 00:00:00.100000 executorch:method.cpp:1012]"
    )
    assert "Overriding output data pointer allowed only for inputs" in crash["stderr_tail"]
    assert [(r["label"], r["status"]) for r in good] == [("good", "ok"), ("good", "ok")]  # went on
    assert error_lines(err) == [f"error: A1 · crashy · prompt 8: {crash['error']}"]
    assert "| crashy ⚠ | - | - | - |" in out


def test_runner_exits_non_zero(phones, exported, tmp_path, capsys):
    phones.add("A1")
    models = two_models(exported, tmp_path, "broken")
    (tmp_path / "broken" / "model.pte").write_bytes(b"not a flatbuffer" * 64)
    stem = tmp_path / "bench"
    code, _, err = run(capsys, *models, "--output", str(stem))
    assert code == 2
    broken, good = records(stem)
    assert broken["status"] == "failed" and broken["exit_code"] == 1
    assert broken["error"].startswith("the runner exited with status 1: ")
    assert "Failed to generate" in broken["stderr_tail"]
    assert good["status"] == "ok" and good["label"] == "good"
    assert len(error_lines(err)) == 1


def test_output_that_cannot_be_parsed(phones, exported, tmp_path, capsys, monkeypatch):
    phones.add("A1")
    monkeypatch.setenv("FAKE_LLAMA_MAIN_GARBLE_IF", "model.pte")
    stem = tmp_path / "bench"
    code, _, err = run(capsys, "--pte", str(exported / "model.pte"), "--output", str(stem))
    assert code == 2
    (rec,) = records(stem)
    assert rec["status"] == "failed" and rec["exit_code"] == 0
    assert rec["error"].startswith(
        "cannot parse the runner's output: the runner's PyTorchObserver line is not valid JSON"
    )
    assert error_lines(err) == [f"error: A1 · tiny_8da4w · prompt 8: {rec['error']}"]


def test_device_disconnects_mid_run(phones, exported, tmp_path, capsys):
    phones.add("A1", disconnect_on_run=2)  # unplugged during its second run
    phones.add("B2")
    stem = tmp_path / "bench"
    code, out, err = run(
        capsys,
        "--pte",
        str(exported / "model.pte"),
        "--serial",
        "A1",
        "--serial",
        "B2",
        "--repetitions",
        "3",
        "--reconnect-wait-s",
        "0",
        "--output",
        str(stem),
    )
    assert code == 2
    recs = records(stem)
    assert [(r["target_id"], r["run_index"], r["status"]) for r in recs] == [
        ("A1", 1, "ok"),
        ("A1", 2, "failed"),
        ("B2", 1, "ok"),
        ("B2", 2, "ok"),
        ("B2", 3, "ok"),
    ]
    gone = "device A1 disconnected (gone); not back within 0 s (a runner left there is killed before the next run)"
    assert recs[1]["error"] == gone
    assert error_lines(err) == [f"error: {gone}"]
    assert phones.device("A1") is None
    assert "Pixel 8 (A1)" in out and "Pixel 8 (B2)" in out  # both measured parts are in the table
