"""Prompts of an exact token count; cool-down and the warnings around one run."""

from __future__ import annotations

import base64

import pytest

from android_bench.checks import CoolDown, cool_down, run_warnings
from android_bench.device import Thermal
from android_bench.prompt import PromptBuilder
from tests.conftest import make_tokenizer


@pytest.fixture(scope="module")
def hf_tokenizer(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    make_tokenizer(path)
    return path


@pytest.mark.parametrize("n", [1, 7, 64, 333])
def test_exact_token_counts_with_tokenizer_json(hf_tokenizer, n):
    from tokenizers import Tokenizer

    b = PromptBuilder(hf_tokenizer)
    text = b.text(n)
    assert b.exact
    assert len(Tokenizer.from_file(str(hf_tokenizer)).encode(text, add_special_tokens=False).ids) == n
    assert "\n" not in text and "<|" not in text


def test_exact_token_counts_with_a_tiktoken_model(tmp_path):
    # A tiktoken-format tokenizer.model (base64 token, rank), as Llama 3 ships: all 256 bytes and a few merges.
    pieces = [bytes([i]) for i in range(256)] + [b"th", b"he", b" t", b"the", b" the", b"in", b"er"]
    path = tmp_path / "tokenizer.model"
    path.write_text("".join(f"{base64.b64encode(p).decode()} {rank}\n" for rank, p in enumerate(pieces)))
    b = PromptBuilder(path)
    assert b.exact
    for n in (1, 64, 200):
        assert b.count(b.text(n)) == n


def test_unknown_tokenizer_format_is_estimated(tmp_path):
    path = tmp_path / "tokenizer.model"
    path.write_bytes(b"\x00\x01 sentencepiece protobuf")
    b = PromptBuilder(path)
    assert not b.exact and b.count("x") is None
    assert len(b.text(64).split()) == 48  # about 0.75 words per token, corrected on the warm-up


def thermal(temp):
    return Thermal(thermal_status=0, battery_temp_c=temp, cpu_temp_c=None, charging=False, plugged=False)


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t

    def sleep(self, s):
        self.t += s


def test_cool_down_waits_until_below_the_threshold():
    temps = iter([45.0, 42.5, 39.9, 35.0])
    clock = Clock()
    c = cool_down(
        read=lambda: thermal(next(temps)), below_c=40.0, timeout_s=100, poll_s=5, clock=clock, sleep=clock.sleep
    )
    assert c == CoolDown(seconds=10.0, timed_out=False, thermal=thermal(39.9))


def test_cool_down_gives_up_at_the_timeout():
    clock = Clock()
    c = cool_down(read=lambda: thermal(45.0), below_c=40.0, timeout_s=12, poll_s=5, clock=clock, sleep=clock.sleep)
    assert c.timed_out and c.seconds == 15.0 and c.thermal.battery_temp_c == 45.0


def test_cool_down_without_a_sensor_does_not_wait():
    clock = Clock()
    no_sensor = Thermal(None, None, None, None, None)
    c = cool_down(read=lambda: no_sensor, below_c=40.0, timeout_s=100, poll_s=5, clock=clock, sleep=clock.sleep)
    assert c == CoolDown(seconds=0.0, timed_out=False, thermal=no_sensor)


def test_run_warnings():
    cool = CoolDown(seconds=0, timed_out=False, thermal=thermal(30.0))
    assert run_warnings(before=thermal(30.0), after=thermal(34.9), cool=cool, max_rise_c=5, below_c=40) == []
    hot = run_warnings(before=thermal(30.0), after=thermal(36.5), cool=cool, max_rise_c=5, below_c=40)
    assert hot == ["battery temperature rose 6.5 °C during the run (limit 5)"]
    throttled = Thermal(thermal_status=3, battery_temp_c=31.0, cpu_temp_c=None, charging=False, plugged=False)
    assert run_warnings(before=thermal(30.0), after=throttled, cool=cool, max_rise_c=5, below_c=40) == [
        "THROTTLED: thermal status rose to 3 during the run (was 0)"
    ]
    # Some OEMs report status 1 (light) at idle: a run that starts and ends at 1 is not throttled.
    light = Thermal(thermal_status=1, battery_temp_c=30.0, cpu_temp_c=None, charging=False, plugged=False)
    assert run_warnings(before=light, after=light, cool=cool, max_rise_c=5, below_c=40) == []
    assert run_warnings(before=light, after=throttled, cool=cool, max_rise_c=5, below_c=40) == [
        "THROTTLED: thermal status rose to 3 during the run (was 1)"
    ]
    late = CoolDown(seconds=120, timed_out=True, thermal=thermal(41.0))
    assert run_warnings(before=thermal(41.0), after=thermal(41.0), cool=late, max_rise_c=5, below_c=40) == [
        "cool-down timed out at 41.0 °C (wanted < 40)"
    ]
