"""The bench config: flags and YAML keys map one to one onto BenchConfig; validated once."""

from __future__ import annotations

import dataclasses

import pytest

from android_bench.__main__ import build_parser, main, overrides_from_args
from android_bench.config import BenchConfig, BenchError, LengthFlag, OutputFormat, Target, load_bench_config


@pytest.fixture
def pte(tmp_path):
    p = tmp_path / "m" / "model.pte"
    p.parent.mkdir()
    p.write_bytes(b"x")
    (tmp_path / "llama_main").write_bytes(b"#!/bin/sh\n")
    return p


def test_every_field_is_one_flag():
    parser = build_parser()
    dests = {a.dest for a in parser._actions} - {"help", "config"}
    assert dests == {f.name for f in dataclasses.fields(BenchConfig)}


def test_flags_to_config(pte, tmp_path):
    ns = build_parser().parse_args(
        [
            "--serial",
            "A",
            "--serial",
            "B",
            "--runner",
            str(tmp_path / "llama_main"),
            "--pte",
            str(pte),
            "--pte",
            str(pte),
            "--label",
            "x",
            "--label",
            "y",
            "--baseline",
            "x",
            "--prompt-tokens",
            "64",
            "--prompt-tokens",
            "512",
            "--max-new-tokens",
            "32",
            "--repetitions",
            "3",
            "--warmup",
            "0",
            "--threads",
            "4",
            "--pin-big-cores",
            "--cooldown-temp-c",
            "38.5",
            "--format",
            "csv",
            "--length-flag",
            "seq_len",
        ]
    )
    c = load_bench_config(config=None, overrides=overrides_from_args(ns))
    assert c.target is Target.ANDROID and c.serial == ("A", "B")
    assert c.pte == (pte, pte) and c.label == ("x", "y") and c.baseline == "x"
    assert c.prompt_tokens == (64, 512) and c.max_new_tokens == 32
    assert (c.repetitions, c.warmup, c.threads, c.pin_big_cores) == (3, 0, 4, True)
    assert c.cooldown_temp_c == 38.5 and c.format is OutputFormat.CSV and c.length_flag is LengthFlag.SEQ_LEN


def test_defaults(pte):
    c = load_bench_config(config=None, overrides={"target": "host", "pte": [str(pte)]})
    assert c.prompt_tokens == (64,) and c.repetitions == 5 and c.warmup == 1 and c.max_new_tokens == 128
    assert c.runner is None and c.device_dir == "/data/local/tmp/edge_bench"


def test_yaml_config_and_flag_override(pte, tmp_path):
    y = tmp_path / "bench.yaml"
    y.write_text(f"target: host\npte: [{pte}]\nrepetitions: 2\nprompt_tokens: [16, 32]\n")
    c = load_bench_config(config=y, overrides={"repetitions": 7})
    assert c.repetitions == 7 and c.prompt_tokens == (16, 32) and c.target is Target.HOST
    assert BenchConfig(**{**{f.name: getattr(c, f.name) for f in dataclasses.fields(c)}}) == c
    assert load_bench_config(config=y, overrides={}).to_dict()["prompt_tokens"] == [16, 32]


def test_every_problem_at_once(pte, tmp_path):
    y = tmp_path / "bad.yaml"
    y.write_text(f"pte: [{pte}, /nope.pte]\nrepetitons: 3\nprompt_tokens: [0]\ntaskset: zz\nthreads: 0\nformat: xml\n")
    with pytest.raises(BenchError) as e:
        load_bench_config(config=y, overrides={})
    msg = str(e.value)
    for part in (
        "unknown key 'repetitons'",
        "pte: /nope.pte does not exist",
        "prompt_tokens: 0 is less than 1",
        "taskset: 'zz' is not a hexadecimal",
        "threads: 0",
        "format: 'xml'",
        "runner: a phone needs llama_main",
    ):
        assert part in msg
    assert "\n" not in msg


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"target": "host", "serial": ["A"]}, "--serial is for phones"),
        ({"target": "host", "label": ["a", "b"]}, "2 labels for 1 .pte"),
        ({"target": "host", "pin_big_cores": True, "taskset": "f0"}, "not both"),
        ({"target": "host", "baseline": "zz", "label": ["a"]}, "not one of the labels"),
        ({"target": "android", "device_dir": "/data/local/tmp"}, "folder of its own"),
        ({"target": "host", "repetitions": 0}, "repetitions: 0 is less than 1"),
    ],
)
def test_bad_values(pte, overrides, message):
    with pytest.raises(BenchError, match=message):
        load_bench_config(config=None, overrides={"pte": [str(pte)], **overrides})


def test_bad_input_is_one_line_and_exit_2(capsys, tmp_path):
    assert main(["--host", "--pte", str(tmp_path / "missing.pte")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    y = tmp_path / "broken.yaml"
    y.write_text("pte: [unclosed\n")
    assert main(["--config", str(y)]) == 2
    assert "is not readable YAML" in capsys.readouterr().err
