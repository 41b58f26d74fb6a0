"""PyTorchObserver parsing on real runner output, both forms.

Old form (ExecuTorch up to 1.2: timestamps only), copied from public sources:
  OLD_ARM_KLEIDIAI   llama_main on an Android phone (Llama 3.1 1B, KleidiAI), from
                     ArmDeveloperEcosystem/arm-learning-paths,
                     content/learning-paths/smartphones-and-mobile/Build-Llama3-Chat-Android-App-Using-Executorch-And-XNNPACK/5-Run-Benchmark-on-Android.md
                     (commit 0483b5d66861c26f0d8bca25b3af1a6a6a505264)
  OLD_GALAXY_S24     llama_main on a Galaxy S24 (Llama 3.2 1B, Vulkan, Oct 2025, ExecuTorch 1.0 era), from
                     pytorch/executorch, docs/source/backends/vulkan/tutorials/etvk-llama-tutorial.md
                     (commit 2052786843d71ae325e9eb61d1035887dcbc240f)
Current form (ExecuTorch 1.3+: prefill/decode rates first), printed by ExecuTorch 1.5.1's
TextLLMRunner (the same C++ runner llama_main uses) on this machine for the fixture model:
  CURRENT_HOST       both rates present
  CURRENT_NO_DECODE  decode took under 1 ms, so the runner left decode_token_per_sec out
Each block keeps the human-readable stats lines the runner printed after the JSON: the tests
check the parsed metrics against those numbers.
"""

from __future__ import annotations

import re

import pytest

from android_bench.observer import ObserverParseError, parse_observer, runner_logged_rss_mb

OLD_ARM_KLEIDIAI = """\
I 00:00:05.882573 executorch:runner.cpp:257] RSS after finishing text generation: 1269.320312 MiB (0 if unsupported)
PyTorchObserver {"prompt_tokens":54,"generated_tokens":53,"model_load_start_ms":1710296030044,"model_load_end_ms":1710296033621,"inference_start_ms":1710296034359,"inference_end_ms":1710296035916,"prompt_eval_end_ms":1710296034544,"first_token_ms":1710296034544,"aggregate_sampling_time_ms":50,"SCALING_FACTOR_UNITS_PER_SECOND":1000}
I 00:00:05.882600 executorch:stats.h:111] \tPrompt Tokens: 54    Generated Tokens: 53
I 00:00:05.882602 executorch:stats.h:117] \tModel Load Time:\t\t3.577000 (seconds)
I 00:00:05.882604 executorch:stats.h:127] \tTotal inference time:\t\t1.557000 (seconds)\t\t Rate: \t34.039820 (tokens/second)
I 00:00:05.882607 executorch:stats.h:135] \t\tPrompt evaluation:\t0.185000 (seconds)\t\t Rate: \t291.891892 (tokens/second)
I 00:00:05.882609 executorch:stats.h:146] \t\tGenerated 53 tokens:\t1.372000 (seconds)\t\t Rate: \t38.629738 (tokens/second)
I 00:00:05.882613 executorch:stats.h:154] \tTime to first generated token:\t0.185000 (seconds)
I 00:00:05.882614 executorch:stats.h:161] \tSampling time over 107 tokens:\t0.050000 (seconds)
"""  # noqa: E501 (verbatim tool output)

OLD_GALAXY_S24 = """\
I hope you enjoy it!<|eot_id|>

PyTorchObserver {"prompt_tokens":14,"generated_tokens":54,"model_load_start_ms":1760077800721,"model_load_end_ms":1760077802998,"inference_start_ms":1760077802998,"inference_end_ms":1760077804187,"prompt_eval_end_ms":1760077803162,"first_token_ms":1760077803162,"aggregate_sampling_time_ms":19,"SCALING_FACTOR_UNITS_PER_SECOND":1000}
        Prompt Tokens: 14    Generated Tokens: 54
        Model Load Time:                2.277000 (seconds)
        Total inference time:           1.189000 (seconds)               Rate:  45.416316 (tokens/second)
                Prompt evaluation:      0.164000 (seconds)               Rate:  85.365854 (tokens/second)
                Generated 54 tokens:    1.025000 (seconds)               Rate:  52.682927 (tokens/second)
        Time to first generated token:  0.164000 (seconds)
        Sampling time over 68 tokens:   0.019000 (seconds)
"""  # noqa: E501 (verbatim tool output)

CURRENT_HOST = """\
x o4~2222SsSsSde ahip,fpppppppp<|begin_of_text|> the
PyTorchObserver {"prefill_token_per_sec":8000,"decode_token_per_sec":8466.67,"prompt_tokens":64,"generated_tokens":127,"model_load_start_ms":1795369085689,"model_load_end_ms":1795369085692,"inference_start_ms":1795369085692,"inference_end_ms":1795369085715,"model_execution_start_ms":1795369085715,"model_execution_end_ms":1795369085715,"prompt_eval_end_ms":1795369085700,"first_token_ms":1795369085700,"aggregate_sampling_time_ms":0,"aggregate_model_execution_time_ms":23,"SCALING_FACTOR_UNITS_PER_SECOND":1000}
[stats.h:175] \tPrompt Tokens: 64    Generated Tokens: 127
[stats.h:181] \tModel Load Time:\t\t0.003000 (seconds)
[stats.h:188] \tTotal inference time:\t\t0.023000 (seconds)\t\t Rate: \t5521.739130 (tokens/second)
[stats.h:197] \t\tPrompt evaluation:\t0.008000 (seconds)\t\t Rate: \t8000.000000 (tokens/second)
[stats.h:207] \t\tGenerated 127 tokens:\t0.015000 (seconds)\t\t Rate: \t8466.666667 (tokens/second)
[stats.h:219] \tTime to first generated token:\t0.008000 (seconds)
"""  # noqa: E501 (verbatim tool output)

CURRENT_NO_DECODE = """\
PyTorchObserver {"prefill_token_per_sec":26000,"prompt_tokens":26,"generated_tokens":15,"model_load_start_ms":1795368806020,"model_load_end_ms":1795368806026,"inference_start_ms":1795368806044,"inference_end_ms":1795368806045,"model_execution_start_ms":1795368806045,"model_execution_end_ms":1795368806045,"prompt_eval_end_ms":1795368806045,"first_token_ms":1795368806045,"aggregate_sampling_time_ms":0,"aggregate_model_execution_time_ms":17,"SCALING_FACTOR_UNITS_PER_SECOND":1000}
"""  # noqa: E501 (verbatim tool output)


def human(text: str, pattern: str) -> float:
    """A number from the runner's own human-readable stats lines."""
    return float(re.search(pattern, text).group(1))


@pytest.mark.parametrize(
    "text", [OLD_ARM_KLEIDIAI, OLD_GALAXY_S24, CURRENT_HOST], ids=["old-arm", "old-s24", "current"]
)
def test_metrics_equal_the_runners_own_report(text):
    s = parse_observer(text)
    assert s.prompt_tokens == int(human(text, r"Prompt Tokens: (\d+)"))
    assert s.generated_tokens == int(human(text, r"Generated Tokens: (\d+)"))
    assert s.model_load_s == pytest.approx(human(text, r"Model Load Time:\s+([0-9.]+)"))
    assert s.ttft_s == pytest.approx(human(text, r"Time to first generated token:\s+([0-9.]+)"))
    assert s.prefill_tok_s == pytest.approx(human(text, r"Prompt evaluation:.*?Rate:\s+([0-9.]+)"), rel=1e-6)
    assert s.decode_tok_s == pytest.approx(human(text, r"Generated \d+ tokens:.*?Rate:\s+([0-9.]+)"), rel=1e-6)


def test_old_form_values():
    s = parse_observer(OLD_ARM_KLEIDIAI)
    assert s.form == "old"
    assert s.reported_prefill_tok_s is None and s.reported_decode_tok_s is None
    assert s.model_load_s == pytest.approx(3.577)
    assert s.ttft_s == pytest.approx(0.185)
    assert s.prefill_tok_s == pytest.approx(54 / 0.185)  # 291.89
    assert s.decode_tok_s == pytest.approx(53 / 1.372)  # 38.63
    assert s.aggregate_sampling_time_ms == 50
    g = parse_observer(OLD_GALAXY_S24)
    assert (g.prompt_tokens, g.generated_tokens) == (14, 54)
    assert g.decode_tok_s == pytest.approx(54 / 1.025)


def test_current_form_rates_match_the_timestamps():
    s = parse_observer(CURRENT_HOST)
    assert s.form == "current"
    assert s.reported_prefill_tok_s == 8000
    assert s.reported_decode_tok_s == 8466.67
    assert s.prefill_tok_s == pytest.approx(64 / 0.008)
    assert s.decode_tok_s == pytest.approx(127 / 0.015)
    assert s.decode_tok_s == pytest.approx(s.reported_decode_tok_s, abs=0.01)
    assert s.raw_json.startswith('{"prefill_token_per_sec":8000') and s.raw_json.endswith("1000}")


def test_a_rate_under_the_clock_is_none_not_infinite():
    s = parse_observer(CURRENT_NO_DECODE)
    assert s.form == "current"
    assert s.reported_decode_tok_s is None
    assert s.decode_tok_s is None  # 0 ms of decode
    assert s.prefill_tok_s == pytest.approx(26 / 0.001)
    assert s.ttft_s == pytest.approx(0.001)
    assert s.model_load_s == pytest.approx(0.006)


def test_last_line_wins_and_text_before_the_marker_is_ignored():
    two = CURRENT_NO_DECODE + "generated text PyTorchObserver " + OLD_GALAXY_S24.split("PyTorchObserver ", 1)[1]
    assert parse_observer(two).prompt_tokens == 14


def test_model_load_zero_means_not_loaded_by_the_runner():
    # Multimodal runners print zeros for the load stamps (seen in ExecuTorch's gemma3 README).
    line = (
        'PyTorchObserver {"prompt_tokens":271,"generated_tokens":99,"model_load_start_ms":0,"model_load_end_ms":0,'
        '"inference_start_ms":1761118126790,"inference_end_ms":1761118128385,"prompt_eval_end_ms":1761118127175,'
        '"first_token_ms":1761118127175,"aggregate_sampling_time_ms":86,"SCALING_FACTOR_UNITS_PER_SECOND":1000}'
    )
    s = parse_observer(line)
    assert s.model_load_s is None
    assert s.prefill_tok_s == pytest.approx(271 / 0.385)


@pytest.mark.parametrize(
    "text, message",
    [
        ("Loaded model\nno stats here\n", "no PyTorchObserver line"),
        ('PyTorchObserver {"prompt_tokens":14,"generated_tok', "not valid JSON"),
        ("PyTorchObserver ", "no JSON object"),
        ('PyTorchObserver {"prompt_tokens":14}', "lacks generated_tokens"),
        (OLD_GALAXY_S24.replace('"generated_tokens":54', '"generated_tokens":"54"'), "not a number"),
    ],
)
def test_unreadable_output_is_one_clear_error(text, message):
    with pytest.raises(ObserverParseError, match=message) as e:
        parse_observer(text)
    assert "\n" not in str(e.value)


def test_runner_logged_rss():
    assert runner_logged_rss_mb(OLD_ARM_KLEIDIAI) == pytest.approx(1269.320312)
    assert runner_logged_rss_mb("nothing") is None
