"""Read the runner's `PyTorchObserver {json}` line and turn it into the model card's metrics.

In:  the text a runner printed (stdout and stderr, in any order, with generated text and log
     lines around it).
Out: `ObserverStats`: the raw timestamps and counts, plus the metrics (definitions from
     ExecuTorch's stats.h, as the model card uses them):
       model load s   = model_load_end - model_load_start
       TTFT s         = first_token - inference_start          (model load excluded)
       prefill tok/s  = prompt_tokens / (prompt_eval_end - inference_start)
       decode tok/s   = generated_tokens / (inference_end - prompt_eval_end)
     A metric whose interval is 0 (below the runner's 1 ms clock) is None, never infinite.

Both forms of the line are read: ExecuTorch 1.3+ puts `prefill_token_per_sec` and
`decode_token_per_sec` first (and leaves a rate out when its interval is 0); 1.0-1.2 print only
the timestamps. The reported rates are kept as they are, for comparison; the metrics are always
computed from the timestamps so both forms give the same numbers.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from android_bench.config import BenchError

MARKER = "PyTorchObserver"
REQUIRED = (
    "prompt_tokens",
    "generated_tokens",
    "model_load_start_ms",
    "model_load_end_ms",
    "inference_start_ms",
    "inference_end_ms",
    "prompt_eval_end_ms",
    "first_token_ms",
)
_LINE = re.compile(MARKER + r"\s*(\{)")


class ObserverParseError(BenchError):
    """The runner's output has no PyTorchObserver line, or one that cannot be read."""


@dataclass(frozen=True)
class ObserverStats:
    prompt_tokens: int
    generated_tokens: int
    model_load_start_ms: int
    model_load_end_ms: int
    inference_start_ms: int
    inference_end_ms: int
    prompt_eval_end_ms: int
    first_token_ms: int
    aggregate_sampling_time_ms: int | None
    units_per_second: int
    reported_prefill_tok_s: float | None  # only in the ExecuTorch 1.3+ form
    reported_decode_tok_s: float | None
    raw_json: str

    @property
    def form(self) -> str:
        """'current' (ExecuTorch 1.3+: rate fields present) or 'old' (1.0-1.2)."""
        rates = (self.reported_prefill_tok_s, self.reported_decode_tok_s)
        return "current" if any(r is not None for r in rates) else "old"

    def _seconds(self, start: int, end: int) -> float:
        return (end - start) / self.units_per_second

    @property
    def model_load_s(self) -> float | None:
        """None when the runner did not load the model itself (both stamps 0)."""
        if self.model_load_start_ms == 0 and self.model_load_end_ms == 0:
            return None
        return self._seconds(self.model_load_start_ms, self.model_load_end_ms)

    @property
    def ttft_s(self) -> float:
        return self._seconds(self.inference_start_ms, self.first_token_ms)

    @property
    def prefill_s(self) -> float:
        return self._seconds(self.inference_start_ms, self.prompt_eval_end_ms)

    @property
    def decode_s(self) -> float:
        return self._seconds(self.prompt_eval_end_ms, self.inference_end_ms)

    @property
    def prefill_tok_s(self) -> float | None:
        return self.prompt_tokens / self.prefill_s if self.prefill_s > 0 else None

    @property
    def decode_tok_s(self) -> float | None:
        return self.generated_tokens / self.decode_s if self.decode_s > 0 else None


def _number(data: dict, key: str) -> float:
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ObserverParseError(f"PyTorchObserver field {key!r} is {value!r}, not a number")
    return value


def parse_observer(text: str) -> ObserverStats:
    """Runner output -> the stats of its last PyTorchObserver line (ObserverParseError if none)."""
    matches = list(_LINE.finditer(text))
    if not matches:
        if MARKER in text:
            raise ObserverParseError("the runner's PyTorchObserver line has no JSON object after it")
        raise ObserverParseError("the runner printed no PyTorchObserver line")
    start = matches[-1].start(1)
    try:
        data, end = json.JSONDecoder().raw_decode(text, start)
    except json.JSONDecodeError as e:
        line = text[start:].splitlines()[0][:120]
        raise ObserverParseError(f"the runner's PyTorchObserver line is not valid JSON ({e.msg}): {line}") from None
    if not isinstance(data, dict):
        raise ObserverParseError("the runner's PyTorchObserver line is not a JSON object")
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise ObserverParseError(f"the runner's PyTorchObserver line lacks {', '.join(missing)}")
    ints = {k: int(_number(data, k)) for k in REQUIRED}
    units = int(_number(data, "SCALING_FACTOR_UNITS_PER_SECOND")) if "SCALING_FACTOR_UNITS_PER_SECOND" in data else 1000
    if units <= 0:
        raise ObserverParseError(f"the runner's PyTorchObserver line has SCALING_FACTOR_UNITS_PER_SECOND {units}")
    optional = {
        k: (float(_number(data, k)) if k in data else None) for k in ("prefill_token_per_sec", "decode_token_per_sec")
    }
    sampling = int(_number(data, "aggregate_sampling_time_ms")) if "aggregate_sampling_time_ms" in data else None
    if ints["prompt_tokens"] < 0 or ints["generated_tokens"] < 0:
        raise ObserverParseError("the runner's PyTorchObserver line has a negative token count")
    return ObserverStats(
        **ints,
        aggregate_sampling_time_ms=sampling,
        units_per_second=units,
        reported_prefill_tok_s=optional["prefill_token_per_sec"],
        reported_decode_tok_s=optional["decode_token_per_sec"],
        raw_json=text[start:end],
    )


_RSS_LOG = re.compile(r"RSS after [a-z ]+: ([0-9.]+) MiB")


def runner_logged_rss_mb(text: str) -> float | None:
    """The largest 'RSS after ...: X MiB' the runner logged itself (ExecuTorch's TextLLMRunner), in MiB."""
    values = [float(m.group(1)) for m in _RSS_LOG.finditer(text)]
    return max(values) if values else None
