"""What a real phone does that a plain stand-in would not: the fake adb runs the device-side
script under mksh and, like adbd, hangs up only the shell when the client goes away; the fake
runner ignores SIGHUP, can have an older release's flags, can log to logcat only, stop early at
EOS or die of the OOM killer. Each test fails without the fix it names."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from android_bench.checks import output_warnings
from tests.android_bench.conftest import FAKE_LLAMA_MAIN
from tests.android_bench.test_faults import error_lines, records, run

ROOT = Path(__file__).resolve().parents[2]
WORK = "data/local/tmp/edge_bench"


def alive(pid: int) -> bool:
    """Running (a zombie nobody reaped counts as dead)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "State:\tZ" not in status


def wait_dead(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not alive(pid)


def running_runner(pid_file: Path, *, model: str) -> int | None:
    """The pid in runner.pid, if that process is running `model`."""
    try:
        pid = int(pid_file.read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_text(errors="replace")
    except (OSError, ValueError):
        return None
    return pid if model in cmdline else None


def test_runner_left_by_a_disconnect_is_killed_once_the_phone_is_back(phones, exported, tmp_path, capsys, monkeypatch):
    phones.add("A1", disconnect_on_run=1, reconnect_after_s=1.5)
    monkeypatch.setenv("FAKE_LLAMA_MAIN_SLEEP_S", "60")  # still running when the link drops
    stem = tmp_path / "bench"
    code, _, err = run(capsys, "--pte", str(exported / "model.pte"), "--reconnect-wait-s", "20", "--output", str(stem))
    assert code == 2
    (rec,) = records(stem)
    m = re.fullmatch(
        r"device A1 disconnected \(gone\); it came back and the runner it left running \(pid (\d+)\) was killed",
        rec["error"],
    )
    assert m, rec["error"]
    assert wait_dead(int(m.group(1)))
    assert error_lines(err) == [f"error: {rec['error']}"]


def test_device_offline_is_reported_as_offline(phones, exported, tmp_path, capsys, monkeypatch):
    phones.add("A1", disconnect_on_run=1, disconnect_to="offline")  # get-state: "error: device offline", exit 1
    stem = tmp_path / "bench"
    code, _, _ = run(capsys, "--pte", str(exported / "model.pte"), "--reconnect-wait-s", "0", "--output", str(stem))
    assert code == 2
    (rec,) = records(stem)
    assert rec["error"].startswith("device A1 disconnected (offline); not back within 0 s")


def test_leftover_runner_is_killed_before_the_next_run(phones, exported, tmp_path, capsys):
    root = phones.add("A1")
    work = root / WORK
    work.mkdir(parents=True)
    # A runner from an interrupted session, still running, and its output files.
    leftover = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "--model_path", "x.pte"])
    try:
        (work / "runner.pid").write_text(f"{leftover.pid}\n")
        (work / "run-1-1.out").write_text('PyTorchObserver {"stale": 1}\n')
        stem = tmp_path / "bench"
        code, _, err = run(capsys, "--pte", str(exported / "model.pte"), "--output", str(stem))
        assert code == 0, err
        assert leftover.wait(timeout=10) == -signal.SIGKILL
    finally:
        leftover.kill()
    (rec,) = records(stem)
    assert rec["status"] == "ok"
    assert (
        f"a runner left from an earlier run (pid {leftover.pid}) was still running; it was killed first"
        in rec["warnings"]
    )
    assert not (work / "run-1-1.out").exists() and not (work / "runner.pid").exists()


def test_ctrl_c_kills_the_runner_on_the_phone(phones, exported, tmp_path, monkeypatch):
    root = phones.add("A1")
    monkeypatch.setenv("FAKE_LLAMA_MAIN_SLEEP_S", "120")
    monkeypatch.setenv("FAKE_LLAMA_MAIN_SLEEP_IF", "slow")  # the second model's run hangs
    ptes = []
    for name in ("fast", "slow"):
        (tmp_path / name).mkdir()
        for f in ("model.pte", "tokenizer.json", "manifest.json"):
            (tmp_path / name / f).write_bytes((exported / f).read_bytes())
        ptes += ["--pte", str(tmp_path / name / "model.pte")]
    stem = tmp_path / "bench"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "android_bench",
            "--runner",
            str(FAKE_LLAMA_MAIN),
            *ptes,
            "--prompt-tokens",
            "8",
            "--max-new-tokens",
            "4",
            "--warmup",
            "0",
            "--repetitions",
            "1",
            "--output",
            str(stem),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    pid_file = root / WORK / "runner.pid"
    deadline = time.monotonic() + 120
    runner = None
    while runner is None and time.monotonic() < deadline:  # wait for the slow model's runner
        runner = running_runner(pid_file, model="slow/model.pte")
        time.sleep(0.2)
    assert runner is not None
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGINT)  # the terminal's Ctrl-C: the whole foreground process group
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "error: interrupted" in err and "Traceback" not in err
    assert wait_dead(runner), "the runner kept running on the phone"
    # The fast model's run, measured before Ctrl-C, is written.
    assert [(r["label"], r["status"]) for r in records(stem)] == [("fast", "ok")]
    assert all(c["stdin_null"] for c in phones.calls())


def test_v1_0_runner_gets_seq_len_and_no_newer_flags(phones, exported, tmp_path, capsys, monkeypatch):
    phones.add("A1")
    monkeypatch.setenv("FAKE_LLAMA_MAIN_RELEASE", "1.0")  # "unknown command line flag" for --max_new_tokens
    stem = tmp_path / "bench"
    code, _, err = run(capsys, "--pte", str(exported / "model.pte"), "--output", str(stem))
    assert code == 0, err
    (rec,) = records(stem)
    assert (rec["status"], rec["length_flag"], rec["ignore_eos"]) == ("ok", "seq_len", False)
    assert rec["runner_flags"] == "has --seq_len"
    (script,) = [c["argv"][1] for c in phones.calls() if c["argv"][0] == "shell" and "--model_path" in c["argv"][-1]]
    assert '--prompt "$(cat tiny_8da4w/prompt_8.txt)" --temperature 0 --seq_len 12 >' in script
    probes = [c["argv"][1] for c in phones.calls() if c["argv"][0] == "shell" and "--helpshort" in c["argv"][-1]]
    assert len(probes) == 1  # asked once per runner
    # Asking for --max_new_tokens explicitly: one clear line, not a runner failure per run.
    code, _, err = run(capsys, "--pte", str(exported / "model.pte"), "--length-flag", "max_new_tokens")
    assert code == 2
    assert error_lines(err) == [
        "error: A1: the runner has no --max_new_tokens (ExecuTorch before 1.1 has only --seq_len); "
        "pass --length-flag auto or seq_len"
    ]


def test_early_eos_without_ignore_eos_warns_loudly(phones, exported, tmp_path, capsys, monkeypatch):
    phones.add("A1")
    monkeypatch.setenv("FAKE_LLAMA_MAIN_RELEASE", "1.1")  # no --ignore_eos
    monkeypatch.setenv("FAKE_LLAMA_MAIN_EOS_AFTER", "2")
    stem = tmp_path / "bench"
    code, out, err = run(capsys, "--pte", str(exported / "model.pte"), "--output", str(stem))
    assert code == 0, err
    (rec,) = records(stem)
    # generated_tokens counts decode steps (ExecuTorch's runner: the prefill's token is not in it).
    assert rec["generated_tokens"] == 1 and rec["ignore_eos"] is False
    short = (
        "SHORT: the runner stopped after 2 of 4 new tokens (the runner stopped at EOS (it has no --ignore_eos)); "
        "decode rates of runs of different lengths are not comparable"
    )
    assert short in rec["warnings"] and "SHORT: the runner stopped after 2 of 4" in out
    # A 1.2+ runner is given --ignore_eos, and the same early EOS does not happen.
    monkeypatch.setenv("FAKE_LLAMA_MAIN_RELEASE", "1.2")
    code, _, err = run(capsys, "--pte", str(exported / "model.pte"), "--output", str(stem))
    (rec,) = records(stem)
    assert rec["ignore_eos"] is True and rec["generated_tokens"] == 3
    assert not any(w.startswith("SHORT") for w in rec["warnings"])


def test_logcat_only_runner(phones, exported, tmp_path, capsys, monkeypatch):
    phones.add("A1")
    monkeypatch.setenv("FAKE_LLAMA_MAIN_LOG", "logcat")  # the android-arm64-v8a preset's log backend
    monkeypatch.setenv("FAKE_LLAMA_MAIN_ABORT_IF", "crashy")
    (tmp_path / "crashy").mkdir()
    for name in ("model.pte", "tokenizer.json", "manifest.json"):
        (tmp_path / "crashy" / name).write_bytes((exported / name).read_bytes())
    stem = tmp_path / "bench"
    code, _, _ = run(
        capsys,
        "--pte",
        str(tmp_path / "crashy" / "model.pte"),
        "--pte",
        str(exported / "model.pte"),
        "--output",
        str(stem),
    )
    assert code == 2
    crash, good = records(stem)
    assert (
        crash["error"]
        == "the runner crashed (SIGABRT, exit 134): E Overriding output data pointer allowed only for inputs"
    )
    assert crash["log_source"] == "logcat" and "Overriding output data pointer" in crash["stderr_tail"]
    assert good["status"] == "ok" and good["log_source"] == "logcat"
    assert "ExecuTorch: Resetting threadpool" in phones.logcat("A1")  # nothing went to stderr


def test_oom_kill_is_named(phones, exported, tmp_path, capsys, monkeypatch):
    phones.add("A1")
    monkeypatch.setenv("FAKE_LLAMA_MAIN_OOM_IF", "model.pte")
    stem = tmp_path / "bench"
    code, _, err = run(capsys, "--pte", str(exported / "model.pte"), "--output", str(stem))
    assert code == 2
    (rec,) = records(stem)
    assert rec["exit_code"] == 137
    assert rec["error"].startswith("the runner was killed (SIGKILL, exit 137), likely out of memory: ")
    assert rec["mem_avail_mb_before"] > 0 and rec["mem_avail_mb_after"] > 0


def test_rss_far_below_pte_and_leftover_warnings():
    # A `--runner` wrapper script without exec: its own 3 MiB are measured, not the 2.3 GiB runner.
    (w,) = output_warnings(generated=128, asked=128, ignore_eos=True, peak_rss_mb=3.2, pte_mb=2358.0, leftover_pid=None)
    assert w.startswith("peak RSS 3 MiB is far below the .pte's 2358 MiB")
    assert (
        output_warnings(generated=128, asked=128, ignore_eos=True, peak_rss_mb=2100.0, pte_mb=2358.0, leftover_pid=None)
        == []
    )
    (w,) = output_warnings(generated=100, asked=128, ignore_eos=True, peak_rss_mb=None, pte_mb=1.0, leftover_pid=None)
    assert w.startswith("SHORT: the runner stopped after 101 of 128") and "the context is full" in w
    assert (
        output_warnings(generated=127, asked=128, ignore_eos=False, peak_rss_mb=None, pte_mb=1.0, leftover_pid=None)
        == []
    )


# Snapdragon 8 Elite-like: 2 + 6 Oryon cores (Qualcomm part 0x001), no little core; core 3 is offline.
ALL_BIG = {
    "model": "AllBig",
    "props": {"ro.product.model": "AllBig", "ro.build.version.release": "15"},
    "cpu_max_khz": [3532800, 3532800, 3532800, None, 3532800, 3532800, 4320000, 4320000],
    "cpu_parts": [0x001, 0x001, 0x001, None, 0x001, 0x001, 0x001, 0x001],
}


def test_pin_big_cores_leaves_out_only_little_cores(phones, exported, tmp_path, capsys):
    phones.add("A1")  # Pixel 8: cores 0-3 are Cortex-A510
    phones.add("E5", like=ALL_BIG)
    stem = tmp_path / "bench"
    code, _, err = run(
        capsys,
        "--pte",
        str(exported / "model.pte"),
        "--serial",
        "A1",
        "--serial",
        "E5",
        "--pin-big-cores",
        "--output",
        str(stem),
    )
    assert code == 0, err
    a1, e5 = records(stem)
    assert (a1["cpu_mask"], a1["threads"], phones.tasksets("A1")) == ("1f0", 5, ["1f0"])
    # All big: every online core (not the 2 fastest), and the offline core 3 keeps the numbering.
    assert e5["cpu_max_freq_mhz"] == [3532, 3532, 3532, None, 3532, 3532, 4320, 4320]
    assert (e5["cpu_mask"], e5["threads"], phones.tasksets("E5")) == ("f7", 7, ["f7"])
    assert not any("guessed" in w for w in a1["warnings"] + e5["warnings"])


def test_taskset_without_threads_uses_the_mask_size(phones, exported, tmp_path, capsys):
    phones.add("A1")
    stem = tmp_path / "bench"
    code, _, err = run(capsys, "--pte", str(exported / "model.pte"), "--taskset", "0xf0", "--output", str(stem))
    assert code == 0, err
    (rec,) = records(stem)
    assert (rec["cpu_mask"], rec["threads"]) == ("f0", 4)
    (script,) = [c["argv"][1] for c in phones.calls() if c["argv"][0] == "shell" and "--model_path" in c["argv"][-1]]
    assert "; taskset f0 ./llama_main --model_path" in script and "--cpu_threads 4 >" in script


def test_adb_never_reads_the_users_keystrokes(phones, exported, tmp_path, capsys):
    phones.add("A1")
    read, write = os.pipe()  # a terminal with keystrokes waiting, as fd 0 of the harness
    os.write(write, b"q\n")
    saved = os.dup(0)
    os.dup2(read, 0)
    try:
        code, _, err = run(capsys, "--pte", str(exported / "model.pte"))
    finally:
        os.dup2(saved, 0)
        for fd in (saved, read, write):
            os.close(fd)
    assert code == 0, err
    calls = phones.calls()
    assert len(calls) > 5 and all(c["stdin_null"] for c in calls)
