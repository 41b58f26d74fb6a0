"""Hadamard matrices of the orders SpinQuant needs, and seeded random Hadamard rotations.

In:  an order n = K * 2^k (K in `PALEY_ORDERS`, or 1), a seed.
Out: `hadamard_matrix(n)`: an n x n +-1 matrix with H H^T = n I (float64);
     `random_hadamard(n, seed)`: the orthogonal matrix diag(s) H / sqrt(n), s random +-1
     (SpinQuant's `random_hadamard_matrix`, the start of both of its rotation kinds).

The Sylvester construction only gives powers of two. Llama 3.2 3B's hidden size is
3072 = 12 * 256, so the K x K factors come from Paley's constructions (I: order q + 1 for
a prime q = 3 mod 4; II: order 2(q + 1) for a prime q = 1 mod 4), and H_n = H_K (x) H_{2^k}.
These matrices are only folded into weights offline, so any correct construction will do;
the online R4 runs ExecuTorch's op on the 2^k part and, unless F is 2^k or 28 * 2^k (the op
alone), `online_mix(F)` = H_K^T / sqrt(K) on the K part, so its M is `hadamard_matrix(F) / sqrt(F)`.
"""

from __future__ import annotations

import functools

import torch

from edge.core.errors import EdgeError
from edge.model import HADAMARD_ORDERS, fast_hadamard_accepts, hadamard_factor, online_hadamard_accepts

# K -> (construction, q): the orders SpinQuant's `get_hadK` uses that Paley I/II build from a prime.
PALEY_ORDERS = {
    12: (1, 11),
    20: (1, 19),
    28: (2, 13),
    36: (2, 17),
    44: (1, 43),
    60: (1, 59),
    108: (1, 107),
    140: (1, 139),
}
assert tuple(PALEY_ORDERS) == HADAMARD_ORDERS  # edge.model's list of the m x m orders the online R4 takes


def _legendre(a: int, q: int) -> int:
    a %= q
    if a == 0:
        return 0
    return 1 if pow(a, (q - 1) // 2, q) == 1 else -1


def _jacobsthal(q: int) -> torch.Tensor:
    idx = torch.arange(q)
    diff = (idx[None, :] - idx[:, None]) % q
    table = torch.tensor([_legendre(a, q) for a in range(q)], dtype=torch.float64)
    return table[diff]  # Q[i, j] = chi(j - i)


def _paley(construction: int, q: int) -> torch.Tensor:
    Q = _jacobsthal(q)
    ones = torch.ones(q, dtype=torch.float64)
    if construction == 1:  # q = 3 mod 4: S skew-symmetric conference matrix, H = I + S
        S = torch.zeros(q + 1, q + 1, dtype=torch.float64)
        S[0, 1:], S[1:, 0], S[1:, 1:] = ones, -ones, Q
        return torch.eye(q + 1, dtype=torch.float64) + S
    # q = 1 mod 4: C symmetric conference matrix, H = C (x) [[1, 1], [1, -1]] + I (x) [[1, -1], [-1, -1]]
    C = torch.zeros(q + 1, q + 1, dtype=torch.float64)
    C[0, 1:], C[1:, 0], C[1:, 1:] = ones, ones, Q
    a = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64)
    b = torch.tensor([[1.0, -1.0], [-1.0, -1.0]], dtype=torch.float64)
    return torch.kron(C, a) + torch.kron(torch.eye(q + 1, dtype=torch.float64), b)


def check_hadamard_order(n: int, *, what: str) -> None:
    """Raise EdgeError when no Hadamard matrix of order n can be built (names `what`)."""
    if hadamard_factor(n) is None:
        orders = ", ".join(str(k) for k in PALEY_ORDERS)
        raise EdgeError(f"{what} {n} has no Hadamard rotation here: it must be 2^k or K*2^k with K in {{{orders}}}")


@functools.lru_cache(maxsize=8)
def hadamard_matrix(n: int) -> torch.Tensor:
    """n -> [n, n] float64 matrix of +-1 with H H^T = n I."""
    k = hadamard_factor(n)
    if k is None:
        check_hadamard_order(n, what="order")
    h = torch.ones(1, 1, dtype=torch.float64)
    sylvester = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64)
    while h.shape[0] < n // k:
        h = torch.kron(h, sylvester)
    if k > 1:
        h = torch.kron(_paley(*PALEY_ORDERS[k]), h)
    return h


def random_hadamard(n: int, *, seed: int) -> torch.Tensor:
    """(n, seed) -> [n, n] float64 orthogonal matrix diag(s) H_n / sqrt(n), s seeded random signs."""
    gen = torch.Generator().manual_seed(seed)
    signs = torch.randint(0, 2, (n,), generator=gen, dtype=torch.int64).to(torch.float64) * 2 - 1
    return signs[:, None] * hadamard_matrix(n) / n**0.5


def online_mix(n: int) -> torch.Tensor | None:
    """FFN width n -> the [m, m] float64 mix of `edge.model.OnlineHadamard` (H_m^T / sqrt(m), n = m * 2^k),
    or None where the op alone runs R4 (2^k, 28 * 2^k). EdgeError naming n when R4 cannot run on it."""
    if not online_hadamard_accepts(n):
        orders = ", ".join(str(k) for k in PALEY_ORDERS)
        raise EdgeError(
            f"FFN width {n} cannot take the online Hadamard (R4): it must be m*2^k with m in {{1, {orders}}}"
        )
    if fast_hadamard_accepts(n):
        return None
    m = hadamard_factor(n)
    return (_paley(*PALEY_ORDERS[m]).T / m**0.5).contiguous()  # contiguous: ExecuTorch lifts it as a constant
