"""Text generation through the C core: temperature, top-k, seed, max tokens.

Each new token runs ``model.forward`` (no targets) over the context - the prompt and the
tokens so far, cropped to the model's last ``max_seq`` positions - and samples from the
logits of the last position (``model.logits()``). There is no KV cache: the cost per token
is a full forward over the context, which is fine for the small models this is used with.

Sampling is computed in float64 from the float32 logits: ``temperature <= 0`` is greedy
(argmax); otherwise logits / temperature, restricted to the ``top_k`` largest when
``top_k > 0``, softmax, and one uniform draw from the given ``numpy.random.Generator`` (or
one made from ``seed``), inverted through the cumulative distribution. So a seed fixes the
output exactly.
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence

import numpy as np

from .errors import InvalidArgumentError


def make_rng(seed: Optional[int] = None, rng: Optional[np.random.Generator] = None) -> np.random.Generator:
    if rng is not None:
        return rng
    return np.random.Generator(np.random.PCG64(None if seed is None else int(seed)))


def sample_token(logits: Any, *, temperature: float = 1.0, top_k: int = 0,
                 rng: Optional[np.random.Generator] = None) -> int:
    """One token id drawn from a 1-D row of logits."""
    z = np.asarray(logits, dtype=np.float64).reshape(-1)
    if z.size == 0:
        raise InvalidArgumentError("empty logits")
    if temperature is None or temperature <= 0:
        return int(np.argmax(z))
    z = z / float(temperature)
    if top_k and 0 < top_k < z.size:
        kth = np.partition(z, z.size - top_k)[z.size - top_k]
        z = np.where(z >= kth, z, -np.inf)
    z = z - np.max(z)
    p = np.exp(z)
    c = np.cumsum(p)
    u = (rng if rng is not None else make_rng()).random() * c[-1]
    return int(min(np.searchsorted(c, u, side="right"), z.size - 1))


def _context_limit(model: Any) -> int:
    return int(min(model.max_seq, model.config.max_seq_len))


def generate(
    model: Any,
    prompt: Sequence[int],
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int = 0,
    seed: Optional[int] = None,
    rng: Optional[np.random.Generator] = None,
    stop_token: Optional[int] = None,
) -> List[int]:
    """New token ids (not including the prompt) sampled from ``model``.

    ``prompt`` must hold at least one token (e.g. the end-of-text id). Generation stops
    after ``max_new_tokens`` or right after ``stop_token`` when given.
    """
    tokens = [int(t) for t in prompt]
    if not tokens:
        raise InvalidArgumentError("the prompt must have at least one token (e.g. the end-of-text id)")
    if max_new_tokens < 0:
        raise InvalidArgumentError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    V = model.config.vocab_size
    bad = [t for t in tokens if not 0 <= t < V]
    if bad:
        raise InvalidArgumentError(f"prompt token {bad[0]} is outside the model's vocabulary [0, {V})")
    gen = make_rng(seed, rng)
    limit = _context_limit(model)
    out: List[int] = []
    for _ in range(int(max_new_tokens)):
        ctx = np.asarray(tokens[-limit:], dtype=np.int32)[None, :]
        model.forward(ctx)
        row = model.logits()[0, ctx.shape[1] - 1]
        t = sample_token(row, temperature=temperature, top_k=top_k, rng=gen)
        tokens.append(t)
        out.append(t)
        if stop_token is not None and t == stop_token:
            break
    return out


def generate_batch(
    model: Any,
    prompts: Any,
    max_new_tokens: int,
    *,
    temperature: float = 0.0,
    top_k: int = 0,
    seed: Optional[int] = None,
    rng: Optional[np.random.Generator] = None,
) -> np.ndarray:
    """Continue several prompts of equal length at once (rows of an (N, t) array), in
    chunks of ``model.max_batch`` rows. Returns the new tokens, shape (N, max_new_tokens).
    Greedy by default (temperature 0), e.g. for exact-match evaluation."""
    x = np.asarray(prompts, dtype=np.int32)
    if x.ndim != 2 or x.shape[1] < 1:
        raise InvalidArgumentError(f"prompts must have shape (N, t) with t >= 1, got {x.shape}")
    gen = make_rng(seed, rng)
    limit = _context_limit(model)
    n = x.shape[0]
    out = np.zeros((n, int(max_new_tokens)), dtype=np.int32)
    mb = model.max_batch
    for lo in range(0, n, mb):
        ctx = x[lo: lo + mb]
        for j in range(int(max_new_tokens)):
            c = ctx[:, -limit:]
            model.forward(c)
            last = np.array(model.logits()[:, c.shape[1] - 1, :], dtype=np.float64)
            if temperature is None or temperature <= 0:
                nxt = last.argmax(axis=1).astype(np.int32)
            else:
                nxt = np.array([sample_token(r, temperature=temperature, top_k=top_k, rng=gen) for r in last],
                               dtype=np.int32)
            out[lo: lo + len(ctx), j] = nxt
            ctx = np.concatenate([ctx, nxt[:, None]], axis=1)
    return out
