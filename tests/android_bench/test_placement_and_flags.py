"""Thread placement (ExecuTorch's little cores, offline cores, masks), the runner's flags per
ExecuTorch release, and the run script's own output."""

from __future__ import annotations

import pytest

from android_bench.config import BenchError, LengthFlag
from android_bench.device import DeviceFacts, facts_from_android, parse_cpu_list, parse_cpuinfo_parts
from android_bench.device_script import parse_logcat, parse_run_output
from android_bench.placement import LITTLE_PARTS, big_cores, placement
from android_bench.runner_flags import (
    SPLIT,
    RunnerFlags,
    flags_from_probe_output,
    flags_from_probes,
    parse_gflags_help,
    run_flags,
)


def cpuinfo(parts: dict[int, int]) -> str:
    return "\n".join(
        f"processor\t: {i}\nBogoMIPS\t: 38.40\nCPU implementer\t: 0x41\nCPU part\t: 0x{p:03x}\n"
        for i, p in parts.items()
    )


def facts(*, khz: list[int | None], parts: dict[int, int], online: str) -> DeviceFacts:
    freqs = "\n".join(f"/sys/devices/system/cpu/cpu{i}/cpufreq/cpuinfo_max_freq {k}" for i, k in enumerate(khz) if k)
    return facts_from_android(
        serial="S",
        props={},
        possible=f"0-{len(khz) - 1}",
        freqs=freqs,
        meminfo="",
        online=online,
        cpuinfo=cpuinfo(parts),
    )


def test_little_part_ids_are_cpuinfo_utils_list():
    # extension/threadpool/cpuinfo_utils.cpp: MIDR 0x410FD030 (A53), D050 (A55), D070 (A57), D460 (A510), D800 (A520).
    assert {hex(p): name for p, name in LITTLE_PARTS.items()} == {
        "0xd03": "Cortex-A53",
        "0xd05": "Cortex-A55",
        "0xd07": "Cortex-A57",
        "0xd46": "Cortex-A510",
        "0xd80": "Cortex-A520",
    }


def test_all_big_soc_keeps_every_core():
    # Snapdragon 8 Elite: 2 Oryon cores at 4.32 GHz + 6 at 3.53 GHz (Qualcomm part 0x001): no little core.
    # The old "outside the slowest cluster" rule gave 2 threads; ExecuTorch uses 8.
    f = facts(khz=[3532800] * 6 + [4320000] * 2, parts={i: 0x001 for i in range(8)}, online="0-7")
    assert big_cores(f) == (tuple(range(8)), None)
    p = placement(facts=f, threads=None, taskset=None, pin_big_cores=True)
    assert (p.threads, p.mask, p.note) == (8, "ff", None)


def test_offline_core_does_not_shift_numbering():
    # 4 A55 + 4 A78; core 2 is offline: no cpufreq folder, not in `online`, not in /proc/cpuinfo.
    parts = {i: (0xD05 if i < 4 else 0xD41) for i in range(8) if i != 2}
    f = facts(khz=[1800000, 1800000, None, 1800000] + [2850000] * 4, parts=parts, online="0-1,3-7")
    assert f.cpu_max_freq_mhz == (1800, 1800, None, 1800, 2850, 2850, 2850, 2850)
    assert f.online_cores() == (0, 1, 3, 4, 5, 6, 7)
    assert placement(facts=f, threads=None, taskset=None, pin_big_cores=True).mask == "f0"  # cores 4-7, not 3-6
    # Without part ids the clock guess must not shift either, and says it is a guess.
    guess = facts(khz=[1800000, 1800000, None, 1800000] + [2850000] * 4, parts={}, online="0-1,3-7")
    cores, note = big_cores(guess)
    assert cores == (4, 5, 6, 7) and "guessed" in note


@pytest.mark.parametrize(
    "mask, threads, want", [("f0", None, (4, "f0")), ("0x3", None, (2, "3")), ("FC", 3, (3, "fc"))]
)
def test_taskset_threads_default_to_mask_size(mask, threads, want):
    f = facts(khz=[2000000] * 8, parts={}, online="0-7")
    p = placement(facts=f, threads=threads, taskset=mask, pin_big_cores=False)
    assert (p.threads, p.mask) == want


def test_cpu_lists_and_cpuinfo():
    assert parse_cpu_list("0-3,6\n") == (0, 1, 2, 3, 6) and parse_cpu_list("") == () and parse_cpu_list("x") == ()
    assert parse_cpuinfo_parts("processor\t: 0\nCPU part\t: 0xd05\n\nprocessor\t: 5\nCPU part\t: 0xd41\n") == {
        0: 0xD05,
        5: 0xD41,
    }
    assert parse_cpuinfo_parts("processor\t: 0\nmodel name\t: Intel(R) Xeon(R)\n") == {}


# gflags' --help layout (ExecuTorch 1.0 llama_main: no --max_new_tokens, --prompt_file, --ignore_eos).
HELP_1_0 = """\
llama_main: Warning: SetUsageMessage() never called

  Flags from /executorch/examples/models/llama/main.cpp:
    -cpu_threads (Number of CPU threads for inference. Defaults to -1, which
      implies we'll use a heuristic to derive the # of performant cores for a
      specific device.) type: int32 default: -1
    -model_path (Model serialized in flatbuffer format.) type: string
      default: "llama2.pte"
    -prompt (Prompt.) type: string default: "The answer to the ultimate question is"
    -seq_len (Total number of tokens to generate (prompt + output).) type: int32 default: -1
    -temperature (Temperature; Default is 0.8f.) type: double default: 0.80000000000000004
    -tokenizer_path (Tokenizer stuff.) type: string default: "tokenizer.bin"



  Flags from /gflags/src/gflags.cc:
    -flagfile (load flags from file) type: string default: ""
"""


def test_gflags_help_and_flags_per_release():
    assert parse_gflags_help(HELP_1_0) >= {"cpu_threads", "model_path", "seq_len", "temperature", "flagfile"}
    # --helpshort listed nothing (flags live in main.cpp, not llama_main.cpp): --help is used.
    v10 = flags_from_probes(["llama_main: Warning: SetUsageMessage() never called\n", HELP_1_0])
    assert v10.known and not v10.has("max_new_tokens")
    chosen = run_flags(runner=v10, length_flag=LengthFlag.AUTO, prompt_tokens=64, max_new_tokens=128, threads=4)
    assert chosen.flags == (("--temperature", "0"), ("--seq_len", "192"), ("--cpu_threads", "4"))
    assert (chosen.prompt_as_file, chosen.ignore_eos, chosen.length_flag) == (False, False, LengthFlag.SEQ_LEN)
    with pytest.raises(BenchError, match="the runner has no --max_new_tokens"):
        run_flags(runner=v10, length_flag=LengthFlag.MAX_NEW_TOKENS, prompt_tokens=64, max_new_tokens=128, threads=None)
    v12 = RunnerFlags(
        names=frozenset({"model_path", "max_new_tokens", "seq_len", "prompt_file", "ignore_eos"}), known=True
    )
    chosen = run_flags(runner=v12, length_flag=LengthFlag.AUTO, prompt_tokens=64, max_new_tokens=128, threads=None)
    assert chosen.flags == (("--temperature", "0"), ("--max_new_tokens", "128"), ("--ignore_eos", None))
    assert chosen.prompt_as_file and chosen.ignore_eos
    # A runner whose help lists nothing (not gflags): the asked-for flags are passed as they are.
    unknown = flags_from_probes(["", "usage: runner"])
    assert not unknown.known
    chosen = run_flags(runner=unknown, length_flag=LengthFlag.AUTO, prompt_tokens=8, max_new_tokens=4, threads=None)
    assert chosen.flags == (("--temperature", "0"), ("--max_new_tokens", "4")) and not chosen.ignore_eos


def test_run_script_output_sections():
    text = (
        "@@EDGE_LEFTOVER 4100\n@@EDGE_AVAIL_BEFORE MemAvailable:    6517532 kB\n"
        "@@EDGE_PID 4242\n@@EDGE_CPUSET /top-app\n"
        "@@EDGE_MEM State: R (running) VmHWM: 10240 kB VmRSS: 10240 kB Threads: 1 Cpus_allowed_list: 4-7 \n"
        "@@EDGE_MEM State: S (sleeping) VmHWM: 1363200 kB VmRSS: 1201000 kB Threads: 5 Cpus_allowed_list: 4-7 \n"
        "@@EDGE_EXIT 137\n@@EDGE_AVAIL_AFTER MemAvailable:    6000000 kB\n"
        "@@EDGE_STDOUT\n\n@@EDGE_STDERR\n\n@@EDGE_LOGCAT\n"
        "11-24 03:38:16.100  4100  4100 I ExecuTorch: an earlier run's line\n"
        "11-24 03:38:16.123  4242  4250 I ExecuTorch: RSS after loading model: 1200.5 MiB\n"
        "11-24 03:38:16.200  4242  4242 E ExecuTorch: Failed to allocate\n"
    )
    out = parse_run_output(text)
    assert (out.exit_code, out.pid, out.leftover_killed, out.cpuset, out.cpus_allowed, out.threads_max) == (
        137,
        4242,
        4100,
        "/top-app",
        "4-7",
        5,
    )
    assert (out.mem_avail_kb_before, out.mem_avail_kb_after, out.peak_rss_kb) == (6517532, 6000000, 1363200)
    assert out.stderr == "" and out.logcat == "I RSS after loading model: 1200.5 MiB\nE Failed to allocate"
    # A wrapper script's child logs under another pid: then every ExecuTorch line is kept.
    assert parse_logcat("11-24 03:38:16.123  999  999 I ExecuTorch: x\n", pid=4242) == "I x"


def test_runner_that_cannot_run_on_the_phone():
    # An x86-64 llama_main pushed to an arm64 phone: mksh cannot exec it, for either probe.
    text = (
        "/system/bin/sh: ./llama_main: not executable: 64-bit ELF file\n"
        f"{SPLIT}\n/system/bin/sh: ./llama_main: not executable: 64-bit ELF file\n"
    )
    with pytest.raises(
        BenchError, match="the runner cannot run on R5CX: /system/bin/sh: ./llama_main: not executable: 64-bit ELF file"
    ):
        flags_from_probe_output(text, where="R5CX")
    ok = flags_from_probe_output(f"llama_main: Warning\n{SPLIT}\n{HELP_1_0}", where="R5CX")
    assert ok.known and ok.has("seq_len") and not ok.has("ignore_eos")
