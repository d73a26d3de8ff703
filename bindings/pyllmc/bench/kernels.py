"""Each C kernel against its PyTorch op, at the shapes of one training step.

The C side is core_c/bench/bench_kernels.c (it calls the kernels of core_c/src directly).
The torch side below runs the op PyTorch's own training step runs for the same work:
forward ops called directly, backward ops through autograd on a graph built once and kept
(`retain_graph=True`), so a timed call is the backward alone, exactly the kernels
PyTorch's engine runs in `loss.backward()`. Names match the C driver's; `calls_per_step`
comes from the C driver (how often one step of the L-layer model calls each).
"""

from __future__ import annotations

import functools
import statistics
import time
from typing import Any, Callable, Dict, List, Optional

#: display order and colours of the breakdown groups
GROUPS = ("matmul_fwd", "matmul_bwd", "attention", "crossentropy", "layernorm", "gelu", "residual", "encoder", "adamw")


def _time(fn: Callable[[], Any], repeats: int) -> Dict[str, float]:
    fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return {"ms_min": 1e3 * min(ts), "ms_median": 1e3 * statistics.median(ts)}


def torch_op_timings(a: Dict[str, Any]) -> Dict[str, Any]:
    """Runs in a worker process. a: shape (dict), B, T, threads, repeats."""
    import torch
    import torch.nn.functional as F

    from .spec import Shape

    s = Shape.from_dict(a["shape"])
    B, T, reps = int(a["B"]), int(a["T"]), int(a["repeats"])
    torch.set_num_threads(int(a["threads"]))
    torch.manual_seed(0)
    C, NH, V = s.channels, s.num_heads, s.vocab_size
    BT, hs = B * T, C // NH
    grad = torch.autograd.grad
    out: List[Dict[str, Any]] = []

    def add(name: str, fn: Callable[[], Any]) -> None:
        out.append({"name": name, **_time(fn, reps)})

    # encoder: wte[idx] + wpe[pos]
    wte = torch.randn(V, C).mul_(0.02).requires_grad_()
    wpe = torch.randn(s.max_seq_len, C).mul_(0.02).requires_grad_()
    idx = torch.randint(0, V, (B, T))
    pos = torch.arange(T)
    add("encoder_forward", lambda: F.embedding(idx, wte) + F.embedding(pos, wpe))
    enc = F.embedding(idx, wte) + F.embedding(pos, wpe)
    denc = torch.randn(B, T, C)
    add("encoder_backward", lambda: grad(enc, (wte, wpe), denc, retain_graph=True))

    # layernorm
    x = torch.randn(BT, C, requires_grad=True)
    lw = torch.ones(C, requires_grad=True)
    lb = torch.zeros(C, requires_grad=True)
    add("layernorm_forward", lambda: F.layer_norm(x, (C,), lw, lb, 1e-5))
    ln = F.layer_norm(x, (C,), lw, lb, 1e-5)
    dln = torch.randn(BT, C)
    add("layernorm_backward", lambda: grad(ln, (x, lw, lb), dln, retain_graph=True))

    # the linear layers (weights in (out, in) layout, as the C core's)
    shapes = {"qkv": (C, 3 * C, True), "attproj": (C, C, True), "fc": (C, 4 * C, True),
              "fcproj": (4 * C, C, True), "classifier": (C, V, False)}  # fmt: skip
    for name, (IC, OC, has_bias) in shapes.items():
        inp = torch.randn(BT, IC, requires_grad=True)
        w = torch.randn(OC, IC).mul_(0.02).requires_grad_()
        b = torch.zeros(OC, requires_grad=True) if has_bias else None
        add(f"matmul_forward.{name}", functools.partial(F.linear, inp, w, b))
        y = F.linear(inp, w, b)
        dy = torch.randn(BT, OC)
        wrt = (inp, w, b) if has_bias else (inp, w)
        add(f"matmul_backward.{name}", functools.partial(grad, y, wrt, dy, retain_graph=True))

    # attention from the qkv activation (B, T, 3C) to (B, T, C), with the layout changes
    qkv = torch.randn(B, T, 3 * C, requires_grad=True)

    def attention():
        q, k, v = qkv.split(C, dim=2)
        q = q.view(B, T, NH, hs).transpose(1, 2)
        k = k.view(B, T, NH, hs).transpose(1, 2)
        v = v.view(B, T, NH, hs).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return y.transpose(1, 2).contiguous().view(B, T, C)

    add("attention_forward", attention)
    att = attention()
    datt = torch.randn(B, T, C)
    add("attention_backward", lambda: grad(att, qkv, datt, retain_graph=True))

    # gelu (tanh) and the residual add
    h = torch.randn(BT, 4 * C, requires_grad=True)
    add("gelu_forward", lambda: F.gelu(h, approximate="tanh"))
    g = F.gelu(h, approximate="tanh")
    dg = torch.randn(BT, 4 * C)
    add("gelu_backward", lambda: grad(g, h, dg, retain_graph=True))
    r1, r2 = torch.randn(BT, C), torch.randn(BT, C)
    add("residual_forward", lambda: r1 + r2)

    # cross-entropy (mean) over V logits
    logits = torch.randn(BT, V, requires_grad=True)
    tgt = torch.randint(0, V, (BT,))
    add("crossentropy_forward", lambda: F.cross_entropy(logits, tgt))
    ce = F.cross_entropy(logits, tgt)
    add("crossentropy_backward", lambda: grad(ce, logits, retain_graph=True))

    # AdamW over every parameter of the model (fused, the fastest torch has on CPU)
    params = [torch.zeros(n) for n in _param_sizes(s)]
    for p in params:
        p.grad = torch.full_like(p, 1e-3)
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.1, fused=True)
    add("adamw_update", opt.step)
    return {"kernels": out, "threads": torch.get_num_threads(), "torch": torch.__version__}


def _param_sizes(s) -> List[int]:
    L, C, V, T = s.num_layers, s.channels, s.vocab_size, s.max_seq_len
    per = [C, C, 3 * C * C, 3 * C, C * C, C, C, C, 4 * C * C, 4 * C, 4 * C * C, C]
    return [V * C, T * C] + per * L + [C, C]


def calls_per_step(name: str, L: int) -> int:
    """How many times one training step of an L-layer model runs a kernel (as model.c does)."""
    base = name.split(".")[0]
    if name.endswith(".classifier") or base.startswith(("encoder", "crossentropy", "adamw")):
        return 1
    if base.startswith("layernorm"):
        return 2 * L + 1
    if base.startswith("residual"):
        return 2 * L
    return L


def join(c_res: Optional[Dict[str, Any]], t_res: Optional[Dict[str, Any]], num_layers: int) -> List[Dict[str, Any]]:
    """One row per kernel: C and torch times per call and per step, and torch/C speedup."""
    ck = {k["name"]: k for k in (c_res or {}).get("kernels", [])}
    tk = {k["name"]: k for k in (t_res or {}).get("kernels", [])}
    names = list(ck) + [n for n in tk if n not in ck]
    rows = []
    for n in names:
        c, t = ck.get(n), tk.get(n)
        calls = (c or {}).get("calls_per_step") or calls_per_step(n, num_layers)
        group = (c or {}).get("group") or _group_of(n)
        row: Dict[str, Any] = {"name": n, "group": group, "calls_per_step": calls, "flops": (c or {}).get("flops", 0)}
        for tag, r in (("c", c), ("torch", t)):
            if r:
                row[f"{tag}_ms_min"] = r["ms_min"]
                row[f"{tag}_ms_median"] = r["ms_median"]
                row[f"{tag}_ms_per_step"] = r["ms_min"] * calls
        if c and t and c["ms_min"] > 0:
            row["c_vs_torch"] = c["ms_min"] / t["ms_min"]
        if c and row["flops"] and c["ms_min"] > 0:
            row["c_gflops"] = row["flops"] / (c["ms_min"] * 1e-3) / 1e9
        rows.append(row)
    return rows


def _group_of(name: str) -> str:
    base = name.split(".")[0]
    if base.startswith("matmul_forward"):
        return "matmul_fwd"
    if base.startswith("matmul_backward"):
        return "matmul_bwd"
    for g in GROUPS:
        if base.startswith(g):
            return g
    return base.split("_")[0]


def by_group(rows: List[Dict[str, Any]], tag: str) -> Dict[str, float]:
    """ms per step of each group for `tag` ('c' or 'torch')."""
    out: Dict[str, float] = {}
    for r in rows:
        v = r.get(f"{tag}_ms_per_step")
        if v is not None:
            out[r["group"]] = out.get(r["group"], 0.0) + v
    return out
