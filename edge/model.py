"""Llama 3.2 as ExecuTorch runs it: one file, top to bottom.

In:  `ModelArgs` (read from a checkpoint's own config by `edge.checkpoint`).
Out: `Transformer`, an `nn.Module` whose `forward(tokens, input_pos)` is the
     method ExecuTorch's stock LLM runner calls:
       tokens    [1, S] int64   the S new tokens (S is dynamic, 1..max_seq_len)
       input_pos [1]    int64   position of tokens[0, 0] in the sequence
       returns   [1, V] float32 logits of the last token ([1, S, V] with full_logits)

Two attention paths over the same parameters (`AttentionPath`, switched with
`Transformer.set_attention_path`):
  * KV_CACHE (export, and the default): the KV cache lives inside the module as
    buffers, updated in place with ExecuTorch's `llama::update_cache` op and read
    by `llama::custom_sdpa`; both also run eagerly on the host once
    `executorch.extension.llm.custom_ops` is imported, so the eager model and the
    .pte execute the same attention code. No backward, CPU only.
  * SEQUENCE (training, calibration, GPU): causal `F.scaled_dot_product_attention`
    over the whole sequence, tokens [B, S], no cache; differentiable, any device.
    The online Hadamard (R4) runs as a torch butterfly with the op's exact matrix.

Parameter names follow Hugging Face's (`layers.0.self_attn.q_proj.weight`) so an
HF checkpoint maps on by stripping a prefix. Places that later stages rewrite:
  * every projection is a plain `nn.Linear`, found by name, so torchao's
    `quantize_` can swap it for a quantized one and LoRA can sit beside it;
  * `FeedForward.down_proj_input` is an `nn.Identity` that SpinQuant replaces
    with an online Hadamard (its transpose folded into `down_proj`);
  * RMSNorm scales are separate `weight`s that can be fused into the following
    linears, which rotations need.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

try:
    # Registers torch.ops.llama.{update_cache, custom_sdpa, fast_hadamard_transform} (eager CPU kernels + export meta).
    from executorch.extension.llm.custom_ops import custom_ops  # noqa: F401

    EXECUTORCH_OPS_ERROR: str | None = None
except (ImportError, OSError) as e:
    # A training-only machine (say a CUDA box whose torch the executorch wheel was not built for):
    # the SEQUENCE path needs torch alone; the KV_CACHE path, which needs these ops, says why it cannot run.
    EXECUTORCH_OPS_ERROR = f"{type(e).__name__}: {e}"


class AttentionPath(enum.Enum):
    KV_CACHE = "kv_cache"  # ExecuTorch's cache ops: export and eager CPU inference
    SEQUENCE = "sequence"  # F.scaled_dot_product_attention: training, calibration, GPU


@dataclass(frozen=True)
class RopeScaling:
    """Llama 3 rope scaling ("llama3" rope type)."""

    factor: float
    low_freq_factor: float
    high_freq_factor: float
    original_max_position_embeddings: int


@dataclass(frozen=True)
class ModelArgs:
    """The shape of a Llama model, as its checkpoint's config states it."""

    dim: int  # hidden size D
    n_layers: int
    n_heads: int  # query heads H
    n_kv_heads: int  # key/value heads Hkv (grouped-query attention)
    head_dim: int  # Dh, usually D // H
    hidden_dim: int  # FFN width F
    vocab_size: int  # V
    norm_eps: float
    rope_theta: float
    rope_scaling: RopeScaling | None
    max_position_embeddings: int  # longest context the checkpoint supports
    tie_word_embeddings: bool

    @property
    def n_params(self) -> int:
        """Parameter count, counting a tied embedding once."""
        d, hd = self.dim, self.head_dim
        attn = d * hd * (self.n_heads * 2 + self.n_kv_heads * 2)
        ffn = 3 * d * self.hidden_dim
        per_layer = attn + ffn + 2 * d
        emb = self.vocab_size * d
        return self.n_layers * per_layer + d + emb * (1 if self.tie_word_embeddings else 2)


def rope_inverse_frequencies(args: ModelArgs) -> torch.Tensor:
    """ModelArgs -> inverse frequencies [Dh/2] float32, llama3 scaling applied.

    The llama3 scaling is computed by transformers' own implementation
    (`ROPE_INIT_FUNCTIONS["llama3"]`) so it cannot drift from the reference.
    """
    exponents = torch.arange(0, args.head_dim, 2, dtype=torch.float32, device="cpu") / args.head_dim
    base = 1.0 / (args.rope_theta**exponents)
    if args.rope_scaling is None:
        return base
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    s = args.rope_scaling
    config = LlamaConfig(
        hidden_size=args.dim,
        num_attention_heads=args.n_heads,
        head_dim=args.head_dim,
        max_position_embeddings=max(args.max_position_embeddings, s.original_max_position_embeddings + 1),
        rope_parameters={
            "rope_type": "llama3",
            "rope_theta": args.rope_theta,
            "factor": s.factor,
            "low_freq_factor": s.low_freq_factor,
            "high_freq_factor": s.high_freq_factor,
            "original_max_position_embeddings": s.original_max_position_embeddings,
        },
    )
    with torch.device("cpu"):  # real values even while the model is being built on "meta"
        inv_freq, _ = ROPE_INIT_FUNCTIONS["llama3"](config, torch.device("cpu"))
    return inv_freq.float()


def rope_tables(args: ModelArgs, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """ModelArgs, length T -> (cos, sin), each [T, 1, Dh] float32 in rotate_half layout.

    The middle 1 broadcasts over heads, so no per-layer unsqueeze sits between XNNPACK partitions.
    """
    positions = torch.arange(length, dtype=torch.float32, device="cpu")
    freqs = torch.outer(positions, rope_inverse_frequencies(args))
    freqs = torch.cat((freqs, freqs), dim=-1)[:, None, :]  # [T, 1, Dh]
    return freqs.cos(), freqs.sin()


def rotate_half_matrix(head_dim: int) -> torch.Tensor:
    """Dh -> R [Dh, Dh] with F.linear(x, R) == cat(-x2, x1): HF's rotate_half as a signed permutation.

    A matmul instead of chunk + cat because XNNPACK cannot slice a dynamic-length tensor: the slices
    would leave each layer's rope outside the delegate. One nonzero (+-1) per row, so it is exact.
    """
    half = head_dim // 2
    r = torch.zeros(head_dim, head_dim, device="cpu")
    i = torch.arange(half, device="cpu")  # cpu even when the model is built under torch.device("meta")
    r[i, i + half] = -1.0  # out[j] = -x[j + Dh/2]
    r[i + half, i] = 1.0  # out[j + Dh/2] = x[j]
    return r


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, rotate: torch.Tensor) -> torch.Tensor:
    # x: [B, S, H, Dh]; cos, sin: [S, 1, Dh] in x's dtype (as transformers computes it); rotate: [Dh, Dh]
    return x * cos + F.linear(x, rotate) * sin


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, S, D]; normalised in float32 as transformers does, then scaled in x's dtype
        xf = x.float()
        # mean(x^2) over D as a 4D mean over the two innermost dims [N, 1, 1, D]: the only mean XNNPACK
        # delegates (a 3D mean would run outside the delegate and split every layer in two).
        ms = xf.pow(2).view(-1, 1, 1, x.shape[-1]).mean((2, 3), keepdim=True)  # [B*S, 1, 1, 1]
        ms = ms.view(*x.shape[:-2], -1, 1)  # [B, S, 1] (static leading sizes, S inferred)
        xf = xf * torch.rsqrt(ms + self.eps)
        return self.weight * xf.type_as(x)


class Attention(nn.Module):
    """Grouped-query attention with the KV cache as in-place-updated buffers."""

    def __init__(self, args: ModelArgs, max_context: int) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = args.n_heads, args.n_kv_heads, args.head_dim
        self.q_proj = nn.Linear(args.dim, args.n_heads * args.head_dim, bias=False)
        self.k_proj = nn.Linear(args.dim, args.n_kv_heads * args.head_dim, bias=False)
        self.v_proj = nn.Linear(args.dim, args.n_kv_heads * args.head_dim, bias=False)
        self.o_proj = nn.Linear(args.n_heads * args.head_dim, args.dim, bias=False)
        # Cache layout [B, T, Hkv, Dh] is the one llama::update_cache / custom_sdpa expect.
        cache_shape = (1, max_context, args.n_kv_heads, args.head_dim)
        # device="cpu" even when the module is built on the meta device: buffers are not loaded.
        self.register_buffer("k_cache", torch.zeros(cache_shape, device="cpu"), persistent=False)
        self.register_buffer("v_cache", torch.zeros(cache_shape, device="cpu"), persistent=False)
        self.register_buffer("rope_rotate", rotate_half_matrix(args.head_dim), persistent=False)

        self.path = AttentionPath.KV_CACHE

    def forward(self, x: torch.Tensor, start_pos: int, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        # x: [B, S, D]
        b = x.shape[0]
        # -1, not s: XNNPACK reshapes only with static sizes and one inferred dim, never a symbolic one.
        q = self.q_proj(x).view(b, -1, self.n_heads, self.head_dim)  # [B, S, H, Dh]
        k = self.k_proj(x).view(b, -1, self.n_kv_heads, self.head_dim)  # [B, S, Hkv, Dh]
        v = self.v_proj(x).view(b, -1, self.n_kv_heads, self.head_dim)  # [B, S, Hkv, Dh]
        q, k = apply_rope(q, cos, sin, self.rope_rotate), apply_rope(k, cos, sin, self.rope_rotate)
        if self.path is AttentionPath.SEQUENCE:
            # [B, H, S, Dh] layout; causal over this sequence only, no cache.
            y = F.scaled_dot_product_attention(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True, enable_gqa=True
            ).transpose(1, 2)  # [B, S, H, Dh]
            return self.o_proj(y.reshape(b, -1, self.n_heads * self.head_dim))  # [B, S, D]
        torch.ops.llama.update_cache(k, self.k_cache, start_pos)  # k_cache[:, start:start+S] = k
        torch.ops.llama.update_cache(v, self.v_cache, start_pos)
        # Causal attention over cache[:, :start+S]; the op handles Hkv < H itself.
        y = torch.ops.llama.custom_sdpa(q, self.k_cache, self.v_cache, start_pos, None, 0.0, True)  # [B, S, H, Dh]
        return self.o_proj(y.reshape(b, -1, self.n_heads * self.head_dim))  # [B, S, D]


def hadamard_transform(x: torch.Tensor, mix: torch.Tensor | None = None) -> torch.Tensor:
    """x [..., F], mix (see `OnlineHadamard`) -> x @ M, M the online R4's matrix, in plain torch.

    mix None, F = 2^k: M = S, the orthonormal Sylvester matrix (a butterfly, O(F log F)).
    mix None, F = 28 * 2^k: M = kron(H28, S), H28 the op's own +-1 matrix (M M^T = 28 I: the op
    normalises only the 2^k part). mix [m, m], F = m * 2^k: M = kron(mix^T, S), orthogonal when mix is.
    Differentiable, any device.
    """
    n, m = x.shape[-1], 1 if mix is None else mix.shape[0]
    if not (fast_hadamard_accepts(n) if mix is None else n % m == 0 and is_pow2(n // m)):
        raise ValueError(f"the Hadamard transform takes widths 2^k or 28*2^k (m*2^k with an m x m mix), not {n}")
    k = m if mix is not None or is_pow2(n) else 28
    p = n // k
    y = x.reshape(-1, k, p)
    h = 1
    while h < p:  # butterfly stages of the Sylvester matrix, natural order
        y = y.view(-1, k, p // (2 * h), 2, h)
        y = torch.stack((y[:, :, :, 0] + y[:, :, :, 1], y[:, :, :, 0] - y[:, :, :, 1]), dim=3)
        h *= 2
    y = y.reshape(-1, k, p) / math.sqrt(p)
    if mix is not None:
        y = torch.einsum("nap,ba->nbp", y, mix.to(device=y.device, dtype=y.dtype))
    elif k > 1:
        h28 = torch.ops.llama.fast_hadamard_transform(torch.eye(28, dtype=torch.float64))  # [28, 28], +-1
        y = torch.einsum("nbm,ba->nam", y, h28.to(device=y.device, dtype=y.dtype))
    return y.reshape(x.shape)


def is_pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


HADAMARD_ORDERS = (12, 20, 28, 36, 44, 60, 108, 140)  # the m x m (Paley) orders edge.spinquant.hadamard builds


def hadamard_factor(n: int) -> int | None:
    """n -> the m with n = m * 2^k, m 1 (powers of two) or in HADAMARD_ORDERS, or None."""
    if is_pow2(n):
        return 1
    return next((m for m in HADAMARD_ORDERS if n % m == 0 and is_pow2(n // m)), None)


def fast_hadamard_accepts(n: int) -> bool:
    """Does `llama::fast_hadamard_transform` alone take a last dimension of n (2^k or 28 * 2^k)?"""
    return is_pow2(n) or (n % 28 == 0 and is_pow2(n // 28))


def online_hadamard_accepts(n: int) -> bool:
    """Can R4 run online on FFN width n: m * 2^k, m 1 or in HADAMARD_ORDERS (28: the op alone)?"""
    return hadamard_factor(n) is not None


class OnlineHadamard(nn.Module):
    """x [B, S, F] -> x @ M: SpinQuant's R4, M^-T folded into down_proj (`edge.spinquant.fold`).

    mix None (F = 2^k or 28 * 2^k): ExecuTorch's `llama::fast_hadamard_transform` alone. mix [m, m]
    (F = m * 2^k): x viewed [B, S, m, 2^k], the op on the 2^k part, then the m x m mix over the m
    part as a constant linear (transpose, linear, transpose). O(F (log F + m)), no F x F matrix in
    the program. On the SEQUENCE path the same M runs as `hadamard_transform` (backward, any device).
    """

    def __init__(self, mix: torch.Tensor | None = None) -> None:
        super().__init__()
        self.path = AttentionPath.KV_CACHE
        self.register_buffer("mix", mix, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.path is AttentionPath.SEQUENCE:
            return hadamard_transform(x, self.mix)
        if self.mix is None:
            return torch.ops.llama.fast_hadamard_transform(x)
        b, n, m = x.shape[0], x.shape[-1], self.mix.shape[0]
        y = torch.ops.llama.fast_hadamard_transform(x.view(b, -1, m, n // m))  # [B, S, m, 2^k]
        y = F.linear(y.transpose(2, 3), self.mix).transpose(2, 3)  # y[..., a, :] -> sum_c mix[a, c] y[..., c, :]
        return y.contiguous().view(b, -1, n)  # [B, S, F]; not reshape: its view would get a symbolic size


class FeedForward(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(args.dim, args.hidden_dim, bias=False)
        self.up_proj = nn.Linear(args.dim, args.hidden_dim, bias=False)
        self.down_proj = nn.Linear(args.hidden_dim, args.dim, bias=False)
        self.down_proj_input = nn.Identity()  # SpinQuant's online Hadamard (R4) goes here

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, S, D]
        h = F.silu(self.gate_proj(x)) * self.up_proj(x)  # [B, S, F]
        return self.down_proj(self.down_proj_input(h))  # [B, S, D]


class TransformerBlock(nn.Module):
    def __init__(self, args: ModelArgs, max_context: int) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(args.dim, args.norm_eps)
        self.self_attn = Attention(args, max_context)
        self.post_attention_layernorm = RMSNorm(args.dim, args.norm_eps)
        self.mlp = FeedForward(args)

    def forward(self, x: torch.Tensor, start_pos: int, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        # x: [B, S, D] -> [B, S, D]
        x = x + self.self_attn(self.input_layernorm(x), start_pos, cos, sin)
        return x + self.mlp(self.post_attention_layernorm(x))


BLOCK_LINEARS = (  # every projection in a block, by its name inside the block
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
)


def block_linears(block: nn.Module) -> list[tuple[str, nn.Module]]:
    """A TransformerBlock -> [(name, projection)] for its seven linears (LoRA adapters excluded)."""
    return [(name, block.get_submodule(name)) for name in BLOCK_LINEARS]


class Transformer(nn.Module):
    def __init__(
        self,
        args: ModelArgs,
        *,
        max_context: int,
        full_logits: bool = False,
        attention_path: AttentionPath = AttentionPath.KV_CACHE,
    ) -> None:
        super().__init__()
        self.args, self.max_context, self.full_logits = args, max_context, full_logits
        self.embed_tokens = nn.Embedding(args.vocab_size, args.dim)
        self.layers = nn.ModuleList(TransformerBlock(args, max_context) for _ in range(args.n_layers))
        self.norm = RMSNorm(args.dim, args.norm_eps)
        # Untied even when the checkpoint ties them: the output layer and the
        # embedding are quantized differently (8-bit linear vs 8-bit lookup table).
        self.lm_head = nn.Linear(args.dim, args.vocab_size, bias=False)
        cos, sin = rope_tables(args, max_context)  # [T, 1, Dh] each
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.set_attention_path(attention_path)

    def set_attention_path(self, path: AttentionPath) -> None:
        """Switch every attention (and online Hadamard) between the export and the training path."""
        self.attention_path = path
        for module in self.modules():
            if isinstance(module, (Attention, OnlineHadamard)):
                module.path = path

    def forward(self, tokens: torch.Tensor, input_pos: torch.Tensor | None = None) -> torch.Tensor:
        # tokens: [B, S] int64 (B = 1 on the KV_CACHE path); input_pos: [1] int64 (None: 0)
        seq_len = tokens.shape[1]
        start_pos = 0 if input_pos is None else input_pos[0].item()
        torch._check(start_pos >= 0)
        torch._check(start_pos + seq_len <= self.max_context)
        if EXECUTORCH_OPS_ERROR is not None and self.attention_path is AttentionPath.KV_CACHE:
            raise RuntimeError(
                f"the KV_CACHE path needs ExecuTorch's llama ops, which did not load ({EXECUTORCH_OPS_ERROR}); "
                "only AttentionPath.SEQUENCE runs here"
            )
        cos = self.rope_cos.narrow(0, start_pos, seq_len)  # [S, 1, Dh]
        sin = self.rope_sin.narrow(0, start_pos, seq_len)
        x = self.embed_tokens(tokens)  # [B, S, D]
        for layer in self.layers:
            x = layer(x, start_pos, cos, sin)
        if not self.full_logits:
            x = x[:, -1, :]  # [B, D]: the runner only samples from the last position
        return self.lm_head(self.norm(x)).float()  # [B, V] or [B, S, V]

    def cast_buffers(self, dtype: torch.dtype) -> None:
        """Cast the rope tables and KV caches (not loaded from checkpoints) to `dtype`."""
        for module in self.modules():
            for name, buf in list(module.named_buffers(recurse=False)):
                module.register_buffer(name, buf.to(dtype), persistent=False)

    def reset_cache(self) -> None:
        """Zero every layer's KV cache (eager use only)."""
        for layer in self.layers:
            layer.self_attn.k_cache.zero_()
            layer.self_attn.v_cache.zero_()
