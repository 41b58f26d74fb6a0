"""edge.evaluate: perplexity of a .pte in ExecuTorch's runtime against the eager reference."""

import json

import pytest

from edge.core.errors import EdgeError
from edge.evaluate import evaluate
from edge.evaluate.__main__ import main
from tests.conftest import TEXT, make_hf_checkpoint, make_tokenizer


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "heldout.txt"
    path.write_text(TEXT)
    return path


def test_unquantized_pte_perplexity_equals_reference(tiny_hf, fp32_export, text_file):
    r = evaluate(pte_path=fp32_export / "model.pte", reference=tiny_hf, text_path=text_file, context=64)
    assert r.windows >= 4 and r.predicted_tokens == r.windows * 63
    assert r.pte_perplexity == pytest.approx(r.reference_perplexity, rel=1e-5)
    assert r.top1_agreement == 1.0 and r.mean_kl < 1e-8
    assert 50 < r.reference_perplexity  # a random model is a poor predictor: the numbers are real


def test_quantized_pte_token_by_token_path(tiny_hf, q_export, text_file):
    # The 8da4w export returns last-position logits only: evaluate feeds it one token at a time.
    r = evaluate(pte_path=q_export / "model.pte", reference=tiny_hf, text_path=text_file, context=32, max_windows=3)
    assert r.windows == 3 and r.predicted_tokens == 3 * 31
    assert 0 < r.mean_kl < 0.5 and 0.5 < r.top1_agreement < 1.0
    assert abs(r.pte_perplexity / r.reference_perplexity - 1) < 0.25


def test_cli_prints_row_and_writes_json(tiny_hf, fp32_export, text_file, tmp_path, capsys):
    out = tmp_path / "eval.json"
    code = main(
        [
            "--pte",
            str(fp32_export / "model.pte"),
            "--reference",
            str(tiny_hf),
            "--text",
            str(text_file),
            "--context",
            "64",
            "--max-windows",
            "2",
            "--json",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0
    stdout = capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["windows"] == 2 and f"{data['pte_perplexity']:.3f}" in stdout
    assert stdout.splitlines()[0].startswith("| .pte | tokens | ppl (.pte)")


def test_cli_screen_has_no_native_library_logs(tiny_hf, fp32_export, text_file, tmp_path):
    """A fresh process (the runtime's thread pool starts there): ExecuTorch's and its tokenizer's C++ log lines,
    which Python's logging cannot reach, stay off the screen; edge's own progress lines remain."""
    import re
    import subprocess
    import sys

    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "edge.evaluate",
            "--pte",
            str(fp32_export / "model.pte"),
            "--reference",
            str(tiny_hf),
            "--text",
            str(text_file),
            "--context",
            "64",
            "--max-windows",
            "2",
            "--json",
            str(tmp_path / "e.json"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    native = [line for line in run.stderr.splitlines() if re.search(r"\.(cpp|h):\d+\]", line)]
    assert not native, native
    assert "evaluate  done in" in run.stderr


def test_native_filter_drops_only_known_lines(capfd):
    import os

    from edge.core.quiet import native_stderr_filtered

    with native_stderr_filtered():
        os.write(
            2,
            b"[cpuinfo_utils.cpp:71] Reading file /sys/devices/soc0/image_version\n"
            b"E a real failure from C++\n[kernel_runtime_context.h:91] No temp allocator provided\n",
        )
    assert capfd.readouterr().err == "E a real failure from C++\n"


def test_text_shorter_than_a_context(tiny_hf, fp32_export, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("The quick brown fox.")
    with pytest.raises(EdgeError, match="fewer than one context of 64"):
        evaluate(pte_path=fp32_export / "model.pte", reference=tiny_hf, text_path=short, context=64)


def test_tokenizer_that_does_not_match(tiny_hf, fp32_export, text_file, tmp_path):
    other = tmp_path / "tokenizer.json"
    make_tokenizer(other, vocab_size=290)
    with pytest.raises(EdgeError, match="does not belong to this model"):
        evaluate(
            pte_path=fp32_export / "model.pte", reference=tiny_hf, text_path=text_file, context=64, tokenizer_path=other
        )


def test_pte_vocabulary_differs_from_reference(fp32_export, text_file, tmp_path):
    bigger = make_hf_checkpoint(tmp_path / "big", vocab=400)
    with pytest.raises(EdgeError, match=r"\.pte's vocabulary \(\d+\) differs from the reference's \(400\)"):
        evaluate(pte_path=fp32_export / "model.pte", reference=bigger, text_path=text_file, context=64)


def test_cli_bad_input_is_one_line(tiny_hf, fp32_export, tmp_path, capsys):
    short = tmp_path / "short.txt"
    short.write_text("hi")
    code = main(
        [
            "--pte",
            str(fp32_export / "model.pte"),
            "--reference",
            str(tiny_hf),
            "--text",
            str(short),
            "--context",
            "64",
            "--quiet",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: the text has") and len(err.splitlines()) == 1
    assert not (fp32_export / "evaluate.json").exists()
