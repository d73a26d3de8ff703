"""The CUDA backend against PyTorch on the GPU: per-layer fp32 parity (TF32 off), bf16 mixed
precision against autocast, a 5-step AdamW trajectory, and the device API (views, copies,
checkpoints, errors).

Every test here is marked `gpu` and SKIPS, with the reason, when the library has no CUDA
backend, no GPU/driver/cuBLAS is usable, or PyTorch has no CUDA: run `pytest -m gpu -ra` on a
GPU machine (or `nox -s gpu`). The reference is a functional GPT-2 written below in PyTorch
with the C core's tensor names, run on the same GPU in fp32 (TF32 off), fp64, and autocast
bf16. Thresholds: pyllmc.reference.tolerance for fp32; the bf16 ones are below (BF16_*).

NOTE: written in a session without a GPU: these tests have been collected and skipped, never
run on a GPU. Their PyTorch reference and comparison code were checked on the CPU against the
CPU C core (REF_DEVICE = "cpu"; every row passed). The bf16 thresholds rest on a CPU emulation
of the scheme (see BF16_RTOL), to be confirmed on a GPU.
"""

from __future__ import annotations

import contextlib
import math
from typing import Dict, Tuple

import numpy as np
import pytest

import pyllmc
from pyllmc import GPTConfig, Model

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _skip_reason():
    if not pyllmc.cuda_built():
        return "the C library was built without the CUDA backend (no nvcc at build time)"
    if not pyllmc.cuda_available():
        return "no usable GPU for the C library: " + pyllmc.cuda_info()
    if not torch.cuda.is_available():
        return f"PyTorch {torch.__version__} has no CUDA: the GPU reference needs a CUDA build of torch"
    return None


_REASON = _skip_reason()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(_REASON is not None, reason=_REASON or "")]

if _REASON is None:  # only import what the comparisons need where they can run
    from pyllmc.reference.tolerance import compare, format_rows
    from pyllmc.reference.tolerance_bf16 import precision_policy

#: bf16 mixed precision. The C core rounds GEMM OPERANDS to bf16 (8 significant bits, unit
#: roundoff 2^-9) and keeps fp32 outputs; autocast also rounds GEMM OUTPUTS (and so the
#: inputs of the following ops) to bf16. So the C core's error against fp64 should be about
#: autocast's or below: the verdict is the CPU's bf16 policy (reference/tolerance_bf16.py:
#: tolerance.py's three attributed measures with autocast as the peer). The direct test against
#: autocast (BF16_RTOL = 8 bf16 ulps, scale-aware like the fp32 one) only decides when the
#: two happen to agree; the attributed test is the one that matters.
#: Evidence so far (no GPU yet): the scheme EMULATED in PyTorch on the CPU (GEMM operands
#: rounded to bf16 in forward and backward, fp32 products) against CPU autocast bf16, on the
#: v101, c128 and gpt2ish cases below: rmse-vs-fp64 ratio (emulation / autocast) median
#: 0.82-0.85, at most 1.09 over every activation and parameter gradient; only the scalar loss
#: had larger ratios (1.6-37: one number, where autocast's error is small by chance), and it
#: passed the direct test. Not yet measured on a GPU: record the ratios (attributed_ratio of
#: each row) when first run there, and tighten.
BF16_RTOL = 8 * 2.0**-8

# id: (V, maxT, L, NH, C, B, T)
CASES = {
    "v101": (101, 16, 2, 4, 32, 2, 8),  # padded vocabulary (Vp 128)
    "t1": (64, 8, 2, 2, 32, 3, 1),  # T = 1
    "nh1": (96, 16, 2, 1, 48, 4, 16),  # one head, T = maxT
    "c128": (1000, 64, 2, 4, 128, 4, 64),  # longer rows, hs = 32, Vp 1024
    "gpt2ish": (50257, 256, 2, 12, 768, 2, 256),  # GPT-2 widths and vocabulary, 2 layers
}

PARAM_NAMES = ("wte", "wpe", "ln1w", "ln1b", "qkvw", "qkvb", "attprojw", "attprojb",
               "ln2w", "ln2b", "fcw", "fcb", "fcprojw", "fcprojb", "lnfw", "lnfb")  # fmt: skip
LAYER_ACTS = ("ln1", "qkv", "att", "atty", "attproj", "residual2", "ln2", "fch", "fch_gelu", "fcproj", "residual3")


def config_of(case) -> Tuple[GPTConfig, int, int]:
    V, maxT, L, NH, C, B, T = case
    return GPTConfig(maxT, V, pyllmc.pad_vocab(V), L, NH, C), B, T


def batch(V, B, T, seed):
    g = torch.Generator().manual_seed(seed)
    tok = torch.randint(0, V, (B, T + 1), generator=g)
    return tok[:, :-1].numpy().astype(np.int32), tok[:, 1:].numpy().astype(np.int32)


@contextlib.contextmanager
def no_tf32():
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


#: where the PyTorch reference runs (the tests use the GPU; "cpu" lets the reference itself be
#: checked against the CPU C core on a machine without a GPU)
REF_DEVICE = "cuda"


def reference_step(params: Dict[str, np.ndarray], cfg: GPTConfig, inputs, targets, dtype, bf16_autocast=False):
    """One forward + backward of GPT-2 with the C core's names; returns (loss, activations,
    gradients) as float64 numpy. Parameters in checkpoint layout."""
    dev = REF_DEVICE
    P = {k: torch.tensor(np.asarray(v), dtype=dtype, device=dev, requires_grad=True) for k, v in params.items()}
    x_idx = torch.as_tensor(inputs, dtype=torch.long, device=dev)
    y_idx = torch.as_tensor(targets, dtype=torch.long, device=dev)
    B, T = x_idx.shape
    C, NH, L, V = cfg.channels, cfg.num_heads, cfg.num_layers, cfg.vocab_size
    hs = C // NH
    acts = {}
    amp = torch.autocast(dev, dtype=torch.bfloat16) if bf16_autocast else contextlib.nullcontext()
    mask = torch.ones(T, T, dtype=torch.bool, device=dev).tril()
    with no_tf32(), amp:
        x = P["wte"][x_idx] + P["wpe"][:T]
        acts["encoded"] = x
        for l in range(L):
            ln1 = F.layer_norm(x, (C,), P["ln1w"][l], P["ln1b"][l], 1e-5)
            qkv = F.linear(ln1, P["qkvw"][l], P["qkvb"][l])
            q, k, v = (t.view(B, T, NH, hs).transpose(1, 2) for t in qkv.split(C, dim=-1))
            scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))
            att = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
            atty = (att @ v).transpose(1, 2).reshape(B, T, C)
            attproj = F.linear(atty, P["attprojw"][l], P["attprojb"][l])
            residual2 = x + attproj
            ln2 = F.layer_norm(residual2, (C,), P["ln2w"][l], P["ln2b"][l], 1e-5)
            fch = F.linear(ln2, P["fcw"][l], P["fcb"][l])
            fch_gelu = F.gelu(fch, approximate="tanh")
            fcproj = F.linear(fch_gelu, P["fcprojw"][l], P["fcprojb"][l])
            residual3 = residual2 + fcproj
            for name, t in zip(LAYER_ACTS, (ln1, qkv, att, atty, attproj, residual2, ln2, fch, fch_gelu, fcproj, residual3)):
                acts[f"h{l}.{name}"] = t
            x = residual3
        lnf = F.layer_norm(x, (C,), P["lnfw"], P["lnfb"], 1e-5)
        logits = F.linear(lnf, P["wte"])
        lv = logits[..., :V].float() if bf16_autocast else logits[..., :V]
        losses = F.cross_entropy(lv.reshape(-1, V), y_idx.reshape(-1), reduction="none").view(B, T)
        loss = losses.mean()
        acts.update(lnf=lnf, logits=logits[..., :V], losses=losses)
        loss.backward()
    to_np = lambda t: t.detach().double().cpu().numpy()  # noqa: E731
    return (float(loss.detach().double()), {k: to_np(t) for k, t in acts.items()},
            {k: to_np(p.grad) for k, p in P.items()})


def c_step(model: Model, inputs, targets):
    loss = model.forward(inputs, targets)
    V = model.config.vocab_size
    acts = {}
    for name, arr in model.acts.items():  # host copies on a CUDA model
        if name in ("probs",) or name.endswith(("_mean", "_rstd")):
            continue
        acts[name] = np.array(arr[..., :V] if name == "logits" else arr)  # a copy on any device
    model.zero_grad()
    model.backward()
    grads = {k: np.array(v) for k, v in model.grads.items()}
    return loss, acts, grads


def rows_for(c, r32, r64, names, prefix, **kw):
    out = []
    for n in names:
        a, b, d = np.asarray(c[n]), np.asarray(r32[n]), np.asarray(r64[n])
        if a.ndim == 3 and n in ("qkvw", "attprojw", "fcw", "fcprojw") or (a.ndim == 2 and n in (
                "ln1w", "ln1b", "qkvb", "attprojb", "ln2w", "ln2b", "fcb", "fcprojb")):
            for l in range(a.shape[0]):
                out.append(compare(f"{prefix}h{l}.{n}", a[l], b[l], d[l], **kw))
        else:
            out.append(compare(prefix + n, a, b, d, **kw))
    return out


def assert_rows(rows, what):
    bad = [r for r in rows if not r["passed"]]
    assert not bad, f"{what}: {len(bad)} of {len(rows)} out of tolerance; first {bad[0]['name']}\n" + format_rows(bad)


def act_names(L):
    return ["encoded"] + [f"h{l}.{n}" for l in range(L) for n in LAYER_ACTS] + ["lnf", "logits", "losses"]


# ------------------------------------------------------------------ fp32 per-layer parity


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_fp32_forward_backward_parity_per_layer(case):
    cfg, B, T = config_of(CASES[case])
    x, y = batch(cfg.vocab_size, B, T, seed=11)
    with Model.from_config(cfg, max_batch=B, max_seq=T, seed=5, device="cuda") as m:
        assert m.device == "cuda" and m.precision == "fp32"
        params = {k: np.array(v) for k, v in m.params.items()}
        loss, acts, grads = c_step(m, x, y)
    l32, a32, g32 = reference_step(params, cfg, x, y, torch.float32)
    l64, a64, g64 = reference_step(params, cfg, x, y, torch.float64)
    rows = [compare("loss", np.float64(loss), np.float64(l32), np.float64(l64))]
    rows += rows_for(acts, a32, a64, act_names(cfg.num_layers), "")
    rows += rows_for(grads, g32, g64, PARAM_NAMES, "grad.")
    assert_rows(rows, f"fp32 {case}")


def test_cuda_matches_cpu_c_core():
    """Same seed -> bit-identical weights on both devices; one step agrees within the fp32
    policy, with the CPU core (itself parity-tested against PyTorch) as the fp32 reference."""
    cfg, B, T = config_of(CASES["c128"])
    x, y = batch(cfg.vocab_size, B, T, seed=3)
    with Model.from_config(cfg, max_batch=B, max_seq=T, seed=9) as cpu, \
            Model.from_config(cfg, max_batch=B, max_seq=T, seed=9, device="cuda") as gpu:  # fmt: skip
        np.testing.assert_array_equal(gpu.copy_to_host("params"), cpu.flat("params"))
        params = {k: np.array(v) for k, v in cpu.params.items()}
        lc, ac, gc = c_step(cpu, x, y)
        lg, ag, gg = c_step(gpu, x, y)
    l64, a64, g64 = reference_step(params, cfg, x, y, torch.float64)
    rows = [compare("loss", np.float64(lg), np.float64(lc), np.float64(l64))]
    rows += rows_for(ag, ac, a64, act_names(cfg.num_layers), "")
    rows += rows_for(gg, gc, g64, PARAM_NAMES, "grad.")
    assert_rows(rows, "cuda vs cpu")


# ------------------------------------------------------------------ bf16 mixed precision


@pytest.mark.parametrize("case", ["v101", "c128", "gpt2ish"])
def test_bf16_against_autocast(case):
    cfg, B, T = config_of(CASES[case])
    x, y = batch(cfg.vocab_size, B, T, seed=21)
    with Model.from_config(cfg, max_batch=B, max_seq=T, seed=5, device="cuda", precision="bf16") as m:
        assert m.precision == "bf16"
        params = {k: np.array(v) for k, v in m.params.items()}
        loss, acts, grads = c_step(m, x, y)
        # master weights stay fp32: the parameters did not change by being used
        np.testing.assert_array_equal(m.copy_to_host("params", "wte"), params["wte"])
    lb, ab, gb = reference_step(params, cfg, x, y, torch.float32, bf16_autocast=True)
    l64, a64, g64 = reference_step(params, cfg, x, y, torch.float64)
    kw = dict(precision_policy("bf16"), rtol=BF16_RTOL)
    rows = [compare("loss", np.float64(loss), np.float64(lb), np.float64(l64), **kw)]
    # the attention probabilities of a bf16 model are fp32 softmaxes of scores computed from
    # bf16 q and k; compare all activations the same way
    rows += rows_for(acts, ab, a64, act_names(cfg.num_layers), "", **kw)
    rows += rows_for(grads, gb, g64, PARAM_NAMES, "grad.", **kw)
    assert_rows(rows, f"bf16 {case}")


def test_bf16_training_reduces_the_loss():
    cfg, B, T = config_of(CASES["c128"])
    x, y = batch(cfg.vocab_size, B, T, seed=4)
    with Model.from_config(cfg, max_batch=B, max_seq=T, seed=1, device="cuda", precision="bf16") as m:
        losses = []
        for step in range(1, 11):
            losses.append(m.forward(x, y))
            m.zero_grad()
            m.backward()
            m.clip_grad_norm(1.0)
            m.adamw_step(3e-3, t=step)
        assert all(math.isfinite(v) for v in losses)
        assert losses[-1] < losses[0] - 0.5, losses


# ------------------------------------------------------------------ trajectory


def _torch_trajectory(params, cfg, batches, dtype, lr, wd, clip):
    dev = REF_DEVICE
    P = {k: torch.tensor(np.asarray(v), dtype=dtype, device=dev, requires_grad=True) for k, v in params.items()}
    opt = torch.optim.AdamW(list(P.values()), lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=wd, foreach=False)
    losses = []
    for x, y in batches:
        opt.zero_grad()
        # the functional model, with these parameter tensors
        loss = _loss_with(P, cfg, x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(P.values()), clip)
        opt.step()
        losses.append(float(loss.detach().double()))
    return losses, {k: v.detach().double().cpu().numpy() for k, v in P.items()}


def _loss_with(P, cfg, inputs, targets, reduction="mean"):
    dev = REF_DEVICE
    x_idx = torch.as_tensor(inputs, dtype=torch.long, device=dev)
    y_idx = torch.as_tensor(targets, dtype=torch.long, device=dev)
    B, T = x_idx.shape
    C, NH, L, V = cfg.channels, cfg.num_heads, cfg.num_layers, cfg.vocab_size
    hs = C // NH
    mask = torch.ones(T, T, dtype=torch.bool, device=dev).tril()
    with no_tf32():
        x = P["wte"][x_idx] + P["wpe"][:T]
        for l in range(L):
            h = F.layer_norm(x, (C,), P["ln1w"][l], P["ln1b"][l], 1e-5)
            q, k, v = (t.view(B, T, NH, hs).transpose(1, 2) for t in F.linear(h, P["qkvw"][l], P["qkvb"][l]).split(C, -1))
            att = torch.softmax(((q @ k.transpose(-2, -1)) / math.sqrt(hs)).masked_fill(~mask, float("-inf")), -1)
            x = x + F.linear((att @ v).transpose(1, 2).reshape(B, T, C), P["attprojw"][l], P["attprojb"][l])
            h = F.layer_norm(x, (C,), P["ln2w"][l], P["ln2b"][l], 1e-5)
            x = x + F.linear(F.gelu(F.linear(h, P["fcw"][l], P["fcb"][l]), approximate="tanh"), P["fcprojw"][l], P["fcprojb"][l])
        logits = F.linear(F.layer_norm(x, (C,), P["lnfw"], P["lnfb"], 1e-5), P["wte"])
        return F.cross_entropy(logits[..., :V].reshape(-1, V), y_idx.reshape(-1), reduction=reduction)


def test_fp32_five_step_trajectory():
    cfg, B, T = config_of(CASES["nh1"])
    lr, wd, clip = 1e-3, 0.1, 1.0
    batches = [batch(cfg.vocab_size, B, T, seed=100 + i) for i in range(5)]
    with Model.from_config(cfg, max_batch=B, max_seq=T, seed=2, device="cuda") as m, \
            Model.from_config(cfg, max_batch=B, max_seq=T, seed=2) as cpu:  # fmt: skip
        params0 = {k: np.array(v) for k, v in m.params.items()}
        c_losses, cpu_losses = [], []
        for step, (x, y) in enumerate(batches, start=1):
            for model, out in ((m, c_losses), (cpu, cpu_losses)):
                out.append(model.forward(x, y))
                model.zero_grad()
                model.backward()
                model.clip_grad_norm(clip)
                model.adamw_step(lr, t=step, weight_decay=wd)
        c_params = {k: np.array(v) for k, v in m.params.items()}
        c_m = {k: np.array(v) for k, v in m.adam_m.items()}
        cpu_params = {k: np.array(v) for k, v in cpu.params.items()}
    l32, p32 = _torch_trajectory(params0, cfg, batches, torch.float32, lr, wd, clip)
    l64, p64 = _torch_trajectory(params0, cfg, batches, torch.float64, lr, wd, clip)
    rows = [compare(f"loss@{i + 1}", np.float64(a), np.float64(b), np.float64(c), ref32_alts=[np.float64(d)])
            for i, (a, b, c, d) in enumerate(zip(c_losses, l32, l64, cpu_losses))]
    # the CPU core's trajectory is another valid fp32 run: it widens the fp32 noise baseline
    rows += [compare(f"param.{n}", c_params[n], p32[n], p64[n], ref32_alts=[cpu_params[n]])
             for n in PARAM_NAMES]
    assert_rows(rows, "5-step trajectory")
    assert all(np.isfinite(v).all() for v in c_m.values())


# ------------------------------------------------------------------ device API


def test_torch_view_shares_gpu_memory():
    cfg, B, T = config_of(CASES["v101"])
    with Model.from_config(cfg, max_batch=B, max_seq=T, seed=1, device="cuda") as m:
        t = m.torch_view("params", "lnfw")
        assert t.is_cuda and tuple(t.shape) == (cfg.channels,)
        t.fill_(2.5)
        torch.cuda.synchronize()
        assert np.all(m.copy_to_host("params", "lnfw") == 2.5)
        whole = m.torch_view("grads")
        m.forward(*batch(cfg.vocab_size, B, T, 0))
        m.zero_grad()
        m.backward()
        assert torch.equal(whole.cpu(), torch.from_numpy(m.copy_to_host("grads")))
        with pytest.raises(ValueError):  # host copies are read-only
            m.params["wte"][0, 0] = 1.0


def test_checkpoint_round_trip_between_devices(tmp_path):
    cfg, B, T = config_of(CASES["c128"])
    path = tmp_path / "m.bin"
    with Model.from_config(cfg, max_batch=B, max_seq=T, seed=8, device="cuda") as g:
        g.save(path)
        want = g.copy_to_host("params")
    with Model.from_checkpoint(path, max_batch=B, max_seq=T) as c:
        np.testing.assert_array_equal(c.flat("params"), want)
    with Model.from_checkpoint(path, max_batch=B, max_seq=T, device="cuda", precision="bf16") as g2:
        np.testing.assert_array_equal(g2.copy_to_host("params"), want)


def test_gradient_accumulation_and_clip_match_cpu():
    cfg, B, T = config_of(CASES["v101"])
    b1, b2 = batch(cfg.vocab_size, B, T, 1), batch(cfg.vocab_size, B, T, 2)
    norms = []
    for device in ("cpu", "cuda"):
        with Model.from_config(cfg, max_batch=B, max_seq=T, seed=3, device=device) as m:
            m.zero_grad()
            for x, y in (b1, b2):
                m.forward(x, y)
                m.backward(0.5)
            n = m.grad_norm()
            before = m.clip_grad_norm(0.1 * n)
            assert before == pytest.approx(n, rel=1e-6)
            assert m.grad_norm() == pytest.approx(0.1 * n, rel=1e-4)
            norms.append(n)
    assert norms[1] == pytest.approx(norms[0], rel=1e-4)


def test_errors_on_a_cuda_model():
    cfg, B, T = config_of(CASES["v101"])
    with Model.from_config(cfg, max_batch=B, max_seq=T, device="cuda") as m:
        with pytest.raises(pyllmc.StateError):
            m.backward()  # no forward yet
        with pytest.raises(pyllmc.InvalidArgumentError):
            m.forward(np.full((1, 4), cfg.vocab_size, np.int32))
        m.forward(*batch(cfg.vocab_size, B, T, 0))
        m.backward()
        with pytest.raises(pyllmc.StateError):
            m.backward()  # probs were consumed


def test_out_of_gpu_memory_is_an_error_not_a_crash():
    cfg = GPTConfig.from_size("d12")
    with pytest.raises(pyllmc.OutOfMemoryError, match="GPU memory"):
        Model.from_config(cfg, max_batch=4096, max_seq=1024, device="cuda")
    # the device is still usable afterwards
    cfg2, B, T = config_of(CASES["v101"])
    with Model.from_config(cfg2, max_batch=B, max_seq=T, device="cuda") as m:
        assert math.isfinite(m.forward(*batch(cfg2.vocab_size, B, T, 0)))


# ------------------------------------------------------------------ determinism and the bf16 weight copy


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_gradients_repeat_bit_for_bit(precision):
    """No atomics: the same step twice gives bitwise the same loss, activations and
    gradients (wte included, with every token repeated many times in the batch)."""
    cfg, B, T = config_of(CASES["c128"])
    g = torch.Generator().manual_seed(6)
    x = torch.randint(0, 12, (B, T), generator=g).numpy().astype(np.int32)  # 12 tokens, ~21 uses each
    y = torch.randint(0, cfg.vocab_size, (B, T), generator=g).numpy().astype(np.int32)
    runs = []
    for _ in range(2):
        with Model.from_config(cfg, max_batch=B, max_seq=T, seed=5, device="cuda", precision=precision) as m:
            loss, acts, grads = c_step(m, x, y)
            runs.append((loss, acts, grads))
    (l1, a1, g1), (l2, a2, g2) = runs
    assert l1 == l2
    for k in g1:
        np.testing.assert_array_equal(g1[k], g2[k], err_msg=f"grad.{k}")
    for k in a1:
        np.testing.assert_array_equal(a1[k], a2[k], err_msg=k)


def test_bf16_weight_copy_follows_every_change_of_the_weights():
    """The bf16 copy of the weights is rebuilt once per change, never used stale: after a
    copy into the parameters, after AdamW, after a write through torch_view, a bf16 model
    computes what a fresh model given the same weights computes, bit for bit."""
    cfg, B, T = config_of(CASES["v101"])
    x, y = batch(cfg.vocab_size, B, T, seed=8)

    def fresh_loss(params):
        with Model.from_config(cfg, max_batch=B, max_seq=T, device="cuda", precision="bf16") as f:
            f.copy_from_host("params", None, params)
            return f.forward(x, y)

    with Model.from_config(cfg, max_batch=B, max_seq=T, seed=3, device="cuda", precision="bf16") as m:
        first = m.forward(x, y)
        assert m.forward(x, y) == first  # nothing changed: the same copy, the same loss
        assert first == fresh_loss(m.copy_to_host("params"))
        wte = m.copy_to_host("params", "wte")
        m.copy_from_host("params", "wte", wte * 1.5)
        second = m.forward(x, y)
        assert second != first and second == fresh_loss(m.copy_to_host("params"))
        m.backward()
        m.adamw_step(1e-2, t=1)
        third = m.forward(x, y)
        assert third != second and third == fresh_loss(m.copy_to_host("params"))
        view = m.torch_view("params", "lnfw")  # a raw pointer: from now on rebuilt every call
        view.mul_(0.25)
        torch.cuda.synchronize()
        fourth = m.forward(x, y)
        assert fourth != third and fourth == fresh_loss(m.copy_to_host("params"))


def test_classifier_beyond_2_31_elements_matches_the_cpu():
    """B = 64, T = 1024 with a 34000-token vocabulary: the logits have 2.2e9 elements, more
    than one 32-bit cuBLAS call can address, so the classifier GEMMs are split (host_plan.h).
    Loss, per-position losses and every gradient agree with the CPU C core, with PyTorch fp64
    (on the GPU, after the C models are gone) for the attribution, as test_cuda_matches_cpu_c_core."""
    need = 100 * 2**30  # PyTorch's fp64 logits, their slice, log-softmax and gradients: ~90 GB
    free, _ = torch.cuda.mem_get_info()
    if free < need:
        pytest.skip(f"needs {need >> 30} GiB of free GPU memory, {free >> 30} GiB free")
    V, B, T = 34000, 64, 1024
    assert B * T * pyllmc.pad_vocab(V) > 2**31
    assert_rows(one_step_vs_cpu_and_fp64(V, B, T, "cuda"), "classifier beyond 2^31 elements (cuda vs cpu, fp64 attribution)")


def one_step_vs_cpu_and_fp64(V, B, T, device):
    """One step of a 1-layer, 1-head, C = 32 model on `device` and on the CPU core, and its
    PyTorch fp64 twin on REF_DEVICE: rows for the loss, the per-position losses and every
    gradient (the CPU core as the fp32 reference). Checked on the CPU with small sizes
    (device = "cpu", REF_DEVICE = "cpu"): every row passes."""
    cfg = GPTConfig(T, V, pyllmc.pad_vocab(V), 1, 1, 32)
    x, y = batch(V, B, T, seed=12)
    results = []
    for dev in (device, "cpu"):
        with Model.from_config(cfg, max_batch=B, max_seq=T, seed=4, device=dev) as m:
            loss = m.forward(x, y)
            losses = np.array(m.acts["losses"])
            m.zero_grad()
            m.backward()
            results.append((loss, losses, {k: np.array(v) for k, v in m.grads.items()}))
            params = {k: np.array(v) for k, v in m.params.items()}
    (lg, sg, gg), (lc, sc, gc) = results
    P = {k: torch.tensor(v, dtype=torch.float64, device=REF_DEVICE, requires_grad=True) for k, v in params.items()}
    losses64 = _loss_with(P, cfg, x, y, reduction="none")
    loss64 = losses64.mean()
    loss64.backward()
    g64 = {k: p.grad.double().cpu().numpy() for k, p in P.items()}
    l64, s64 = float(loss64.detach()), losses64.detach().view(B, T).cpu().numpy()
    del P, loss64, losses64
    if REF_DEVICE == "cuda":
        torch.cuda.empty_cache()
    rows = [compare("loss", np.float64(lg), np.float64(lc), np.float64(l64)), compare("losses", sg, sc, s64)]
    rows += rows_for(gg, gc, g64, PARAM_NAMES, "grad.")
    return rows
