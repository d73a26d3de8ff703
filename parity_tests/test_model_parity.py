"""The C core against the PyTorch reference (transformers GPT2LMHeadModel), layer by layer:
logits, loss, every activation, every parameter gradient, multi-step AdamW trajectories,
gradient accumulation and checkpoint interchange. Thresholds: pyllmc.reference.tolerance.

Set PYLLMC_PARITY_DUMP=dir to write every comparison row as JSON (for reports)."""
from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from pyllmc import GPTConfig, Model  # noqa: E402
from pyllmc.reference import (  # noqa: E402
    LockstepConfig, run_lockstep, PARAM_NAMES, ReferenceTrainer, adamw_on_arrays, as_llmc_config, capture, compare,
    compare_scalar, first_failure, format_rows, forward_backward_rows, hf_to_params,
    load_into_model, load_reference, make_config, model_params, model_tensors, pad_vocab,
    padded_columns, randomize_params, read_llmc_checkpoint, round_to_bf16, state_rows, to_dtype,
    write_llmc_checkpoint,
)
from pyllmc.reference.tolerance import ELEMENTWISE_RTOL  # noqa: E402

pytestmark = pytest.mark.parity


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """One thread for the reference, as for the C side: on small shared machines spinning
    OpenMP workers cost more than they bring for models this small."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

# id: (V, maxT, L, NH, C, B, T, threads)
CASES = {
    "v101": (101, 16, 2, 4, 32, 2, 8, 1),    # V not a multiple of 128 -> Vp = 128 (padding in play)
    "t1": (64, 8, 2, 2, 32, 3, 1, 2),        # T = 1 (single-token attention), V < 128; 2 threads
    "nh1": (96, 16, 2, 1, 48, 4, 16, 1),     # one head of size 48, T = maxT, B = 4
    "c64": (257, 24, 3, 4, 64, 1, 13, 1),    # B = 1, odd T < maxT, 3 layers, Vp = 384
    # several attention query blocks (64, 64, 2 rows) with 2 heads, at 1 and 2 threads
    "mb130": (211, 160, 2, 2, 32, 2, 130, 1),
    "mb131_2t": (211, 160, 2, 2, 32, 2, 131, 2),
}


def _dump(name, rows):
    d = os.environ.get("PYLLMC_PARITY_DUMP")
    if d:
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, re.sub(r"[^\w.-]", "_", name) + ".json"), "w") as f:
            json.dump(rows, f, indent=1, default=float)


def assert_rows(rows, what):
    bad = [r for r in rows if not r["passed"]]
    first = first_failure(rows)
    assert not bad, (f"{what}: {len(bad)} of {len(rows)} tensors out of tolerance; first divergence "
                     f"{first['name']}\n" + format_rows(bad))


def batch(V, B, T, seed):
    g = torch.Generator().manual_seed(seed)
    tok = torch.randint(0, V, (B, T + 1), generator=g)
    return tok[:, :-1].numpy().astype(np.int32), tok[:, 1:].numpy().astype(np.int32)


class Setup:
    """A randomised reference model (fp32 and fp64 copies) and a C model with the same weights."""

    def __init__(self, V, maxT, L, NH, C, B, T, threads=1, seed=0):
        self.V, self.maxT, self.L, self.NH, self.C, self.B, self.T = V, maxT, L, NH, C, B, T
        self.threads = threads
        self.Vp = pad_vocab(V)
        self.hf_config = make_config(vocab_size=V, n_positions=maxT, n_layer=L, n_head=NH, n_embd=C)
        self.ref = load_reference(self.hf_config, seed=seed)
        randomize_params(self.ref, seed=seed + 1)
        self.ref64 = to_dtype(self.ref, torch.float64)
        self.params = hf_to_params(self.ref, self.Vp)
        self.cfg = GPTConfig(max_seq_len=maxT, vocab_size=V, padded_vocab_size=self.Vp, num_layers=L,
                             num_heads=NH, channels=C)

    def c_model(self, max_batch=None, max_seq=None):
        m = Model.from_config(self.cfg, max_batch=max_batch or self.B, max_seq=max_seq or self.T, seed=123,
                              threads=self.threads)
        load_into_model(m, self.params)
        return m


@pytest.fixture(scope="module", params=list(CASES))
def setup(request):
    return Setup(*CASES[request.param])


def test_weights_load_exactly(setup):
    with setup.c_model() as m:
        got = model_params(m)
        for n in PARAM_NAMES:
            np.testing.assert_array_equal(got[n].view(np.uint32), setup.params[n].view(np.uint32), err_msg=n)


def test_forward_backward_parity(setup, request):
    x, y = batch(setup.V, setup.B, setup.T, seed=10)
    with setup.c_model() as m:
        out = forward_backward_rows(m, setup.ref, setup.ref64, x, y, setup.Vp)
        rows = out["rows"]
        _dump(request.node.name, rows)
        # the padded vocabulary columns: probabilities exactly 0, logits (wte rows are 0) 0
        assert not padded_columns(m, "probs", setup.V).any()
        assert not padded_columns(m, "logits", setup.V).any()
        # the logits() view is the unpadded logits
        lg = m.logits()
        assert lg.shape == (setup.B, setup.T, setup.V)
        np.testing.assert_array_equal(lg, m.acts["logits"][..., : setup.V])
        # attention probabilities above the diagonal (future positions) are exactly 0
        upper = np.triu_indices(setup.T, 1)
        for l in range(setup.L):
            assert not m.acts[f"h{l}.att"][:, :, upper[0], upper[1]].any(), f"h{l}.att masked entries"
        # the grad of the padded wte rows is exactly 0
        assert not model_tensors(m.grads)["wte"][setup.V:].any()
    assert_rows(rows, "forward/backward")
    # every activation and every gradient was compared
    names = {r["name"] for r in rows}
    assert {"loss", "encoded", "logits", "probs", "losses", "lnf", "grad.wte", "grad.lnfb"} <= names
    assert sum(n.startswith("grad.") for n in names) == 4 + 12 * setup.L
    assert sum(re.match(r"h\d+\.", n) is not None for n in names) == 15 * setup.L


def test_forward_without_targets(setup):
    x, y = batch(setup.V, setup.B, setup.T, seed=11)
    with setup.c_model() as m:
        assert m.forward(x) is None
        c_logits = np.array(m.logits(), copy=True)
        with torch.no_grad():
            r32 = setup.ref(torch.from_numpy(x).long()).logits.numpy()
            r64 = setup.ref64(torch.from_numpy(x).long()).logits.numpy()
        row = compare("logits", c_logits, r32, r64)
        assert row["passed"], format_rows([row])
        # the same logits as a forward with targets
        m.forward(x, y)
        np.testing.assert_array_equal(m.logits(), c_logits)


def _run_steps(setup, nsteps, lr, weight_decay, decay_matrices_only, grad_clip, request):
    """nsteps training steps through the lockstep engine (each step judged from the C core's
    own state: pyllmc.reference.lockstep), constant lr."""
    cfg = LockstepConfig(steps=nsteps, batch=setup.B, seq=setup.T, lr=lr, schedule="constant",
                         weight_decay=weight_decay, decay_matrices_only=decay_matrices_only, grad_clip=grad_clip,
                         threads=setup.threads)
    batches = [batch(setup.V, setup.B, setup.T, seed=100 + step) for step in range(1, nsteps + 1)]
    with setup.c_model() as m:
        res = run_lockstep(to_dtype(setup.ref, torch.float32), m, cfg, batches=batches)
        # wte padding rows stay exactly zero through AdamW (zero grad, zero weight)
        assert not model_tensors(m.params)["wte"][setup.V:].any()
        final = model_tensors(m.params)
    if grad_clip > 0:
        assert min(res.grad_norms_torch) > grad_clip, "the clipping run must actually clip"
    _dump(request.node.name, res.rows)
    # the parameters really moved (the test can see a broken update)
    moved = max(float(np.max(np.abs(final[n] - setup.params[n]))) for n in PARAM_NAMES)
    assert moved > 0.5 * lr
    # every step's update was compared, every tensor of every layer
    assert sum(1 for r in res.rows if r["phase"] == "update") == nsteps * 3 * (4 + 12 * setup.L)
    return res.rows, res.losses_c, res.losses_torch


def test_adamw_five_steps_weight_decay(setup, request):
    rows, lc, lt = _run_steps(setup, 5, lr=3e-3, weight_decay=0.1, decay_matrices_only=False,
                              grad_clip=0.0, request=request)
    assert_rows(rows, f"5 AdamW steps (losses C {lc} torch {lt})")


def test_adamw_five_steps_clipped_matrix_decay(setup, request):
    rows, lc, lt = _run_steps(setup, 5, lr=3e-3, weight_decay=0.1, decay_matrices_only=True,
                              grad_clip=0.05, request=request)
    assert_rows(rows, f"5 clipped AdamW steps (losses C {lc} torch {lt})")


def _random_grads(setup, rng, scale):
    g = {n: (rng.standard_normal(a.shape) * scale).astype(np.float32) for n, a in setup.params.items()}
    g["wte"][setup.V:] = 0.0  # the padded rows never get a gradient
    return g


@pytest.mark.parametrize("decay_matrices_only", [False, True])
def test_adamw_isolated(decay_matrices_only, request):
    """AdamW alone: the same gradients written into the C grads and given to
    torch.optim.AdamW; params, m and v must agree to a few ulp (elementwise math)."""
    s = Setup(*CASES["v101"], seed=11)
    rng = np.random.default_rng(5)
    hp = dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.1, decay_matrices_only=decay_matrices_only)
    # gradients of very different sizes (Adam's eps matters for the small ones)
    steps = [_random_grads(s, rng, scale) for scale in (1e-1, 1e-3, 1e-6, 1e-2)]
    with s.c_model() as m:
        for t, g in enumerate(steps, 1):
            for n in PARAM_NAMES:
                m.grads[n][...] = g[n]
            m.adamw_step(hp["lr"], t=t, beta1=hp["beta1"], beta2=hp["beta2"], eps=hp["eps"],
                         weight_decay=hp["weight_decay"], decay_matrices_only=decay_matrices_only)
        c = {"params": model_tensors(m.params), "adam_m": model_tensors(m.adam_m),
             "adam_v": model_tensors(m.adam_v)}
    r32 = adamw_on_arrays(s.params, steps, **hp)
    r64 = adamw_on_arrays(s.params, steps, **hp, dtype=torch.float64)
    rows = []
    for kind in ("params", "adam_m", "adam_v"):
        rows += state_rows(c[kind], r32[kind], r64[kind], "" if kind == "params" else kind + ".",
                           step=len(steps), rtol=ELEMENTWISE_RTOL)
    _dump(request.node.name, rows)
    assert_rows(rows, "AdamW on identical gradients")


def test_grad_norm_and_clip_isolated(request):
    s = Setup(*CASES["c64"], seed=12)
    rng = np.random.default_rng(6)
    g = _random_grads(s, rng, 1e-2)
    ref = adamw_on_arrays(s.params, [g], lr=0.0, dtype=torch.float64)
    norm64 = ref["grad_norms"][0]
    norm32 = adamw_on_arrays(s.params, [g], lr=0.0)["grad_norms"][0]
    with s.c_model() as m:
        for n in PARAM_NAMES:
            m.grads[n][...] = g[n]
        rows = [compare_scalar("grad_norm", m.grad_norm(), norm32, norm64)]
        # no clipping when the norm is below max_norm: grads untouched
        before = model_tensors(m.grads)
        assert m.clip_grad_norm(10 * norm64) == pytest.approx(norm64, rel=1e-5)
        after = model_tensors(m.grads)
        for n in PARAM_NAMES:
            np.testing.assert_array_equal(after[n], before[n], err_msg=n)
        # clipping to a quarter of the norm: torch's coefficient max_norm / (norm + 1e-6)
        max_norm = norm64 / 4
        nc = m.clip_grad_norm(max_norm)
        rows.append(compare_scalar("clip_norm_before", nc, norm32, norm64))
        coef = max_norm / (norm64 + 1e-6)
        expect64 = {n: g[n].astype(np.float64) * coef for n in PARAM_NAMES}
        expect32 = {n: (torch.from_numpy(g[n]) * torch.tensor(max_norm / (norm32 + 1e-6), dtype=torch.float32)).numpy()
                    for n in PARAM_NAMES}
        rows += state_rows(model_tensors(m.grads), expect32, expect64, "clipped.", rtol=ELEMENTWISE_RTOL)
        # the norm after clipping: coef * norm (not max_norm itself: torch's + 1e-6)
        norm_after32 = float(torch.linalg.vector_norm(torch.stack(
            [torch.linalg.vector_norm(torch.from_numpy(expect32[n])) for n in PARAM_NAMES])))
        rows.append(compare_scalar("norm_after_clip", m.grad_norm(), norm_after32, coef * norm64))
    _dump(request.node.name, rows)
    assert_rows(rows, "grad norm / clipping")


def test_gradient_accumulation(request):
    s = Setup(*CASES["v101"][:5], B=4, T=8, seed=5)
    x, y = batch(s.V, 4, 8, seed=21)
    with s.c_model(max_batch=4) as m:
        m.zero_grad()
        for half in (slice(0, 2), slice(2, 4)):
            m.forward(x[half], y[half])
            m.backward(0.5)
        acc = model_tensors(m.grads)
        m.zero_grad()
        full_loss = m.forward(x, y)
        m.backward(1.0)
        full = model_tensors(m.grads)
    # reference: one backward over the full batch, fp32 and fp64
    ref_full = capture(s.ref, x, y, padded_vocab_size=s.Vp).grads
    ref_full64 = capture(s.ref64, x, y, padded_vocab_size=s.Vp).grads
    # the reference's own micro-batch accumulation agrees too (sanity of the harness)
    ref_acc = ReferenceTrainer(to_dtype(s.ref, torch.float32), padded_vocab_size=s.Vp).step(
        [(x[:2], y[:2]), (x[2:], y[2:])])["grads"]
    rows = state_rows(acc, ref_full, ref_full64, "grad_accum.")
    rows += state_rows(acc, full, None, "accum_vs_full.")
    rows += state_rows(ref_acc, ref_full, ref_full64, "ref_accum.")
    _dump(request.node.name, rows)
    assert_rows(rows, "gradient accumulation")
    assert np.isfinite(full_loss)


def test_save_and_load_round_trip(tmp_path):
    s = Setup(*CASES["v101"], seed=7)
    x, y = batch(s.V, s.B, s.T, seed=31)
    with s.c_model() as m:
        loss1 = m.forward(x, y)
        logits1 = np.array(m.logits(), copy=True)
        p = tmp_path / "c.bin"
        m.save(p)
    # the C core's file is byte-identical to the reference writer's v3 file
    q = tmp_path / "ref.bin"
    write_llmc_checkpoint(q, s.params, as_llmc_config(s.cfg), version=3)
    assert p.read_bytes() == q.read_bytes()
    cfg2, p2 = read_llmc_checkpoint(p)
    assert cfg2 == as_llmc_config(s.cfg)
    for n in PARAM_NAMES:
        np.testing.assert_array_equal(p2[n].view(np.uint32), s.params[n].view(np.uint32), err_msg=n)
    with Model.from_checkpoint(p, max_batch=s.B, max_seq=s.T, threads=1) as m2:
        assert m2.config == s.cfg
        got = model_params(m2)
        for n in PARAM_NAMES:
            np.testing.assert_array_equal(got[n].view(np.uint32), s.params[n].view(np.uint32), err_msg=n)
        # same weights, same inputs -> the same numbers (the core is deterministic)
        assert m2.forward(x, y) == loss1
        np.testing.assert_array_equal(m2.logits(), logits1)
        # and saving again reproduces the file
        m2.save(tmp_path / "again.bin")
    assert (tmp_path / "again.bin").read_bytes() == p.read_bytes()


@pytest.mark.parametrize("version", [3, 5])
def test_reference_checkpoint_loads_into_c(tmp_path, version):
    s = Setup(*CASES["c64"], seed=9)
    path = tmp_path / f"ref_v{version}.bin"
    write_llmc_checkpoint(path, s.params, as_llmc_config(s.cfg), version=version)
    expected = s.params if version == 3 else {n: round_to_bf16(a) for n, a in s.params.items()}
    if version == 5:  # rounding really happened
        assert any(not np.array_equal(expected[n], s.params[n]) for n in PARAM_NAMES)
    with Model.from_checkpoint(path, max_batch=s.B, max_seq=s.T, threads=1) as m:
        assert m.config == s.cfg
        got = model_params(m)
        for n in PARAM_NAMES:
            np.testing.assert_array_equal(got[n].view(np.uint32), expected[n].view(np.uint32), err_msg=n)
        # and the loaded model computes what the reference computes with those weights
        x, y = batch(s.V, s.B, s.T, seed=41)
        ref = load_reference(str(path))
        loss_c = m.forward(x, y)
        r = capture(ref, x, y, backward=False)
        r64 = capture(to_dtype(ref, torch.float64), x, y, backward=False)
        row = compare_scalar("loss", loss_c, r.loss, r64.loss)
        assert row["passed"], format_rows([row])


@pytest.mark.slow
def test_d12_shape_parity(request):
    """GPT-2 124M shape (d12, V=50257 -> Vp=50304, maxT=1024) with random GPT-2 init."""
    B, T = 2, 32
    ref = load_reference("d12", seed=0)
    ref64 = to_dtype(ref, torch.float64)
    params = hf_to_params(ref, 50304)
    cfg = GPTConfig(max_seq_len=1024, vocab_size=50257, padded_vocab_size=50304, num_layers=12,
                    num_heads=12, channels=768)
    x, y = batch(50257, B, T, seed=51)
    with Model.from_config(cfg, max_batch=B, max_seq=T) as m:
        load_into_model(m, params)
        out = forward_backward_rows(m, ref, ref64, x, y, 50304)
    _dump(request.node.name, out["rows"])
    assert_rows(out["rows"], "d12 forward/backward")
