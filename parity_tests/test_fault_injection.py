"""The harness finds bugs and says where: faults injected into the C side must be reported as
the first divergence, naming exactly the layer and tensor that was broken.

- a kernel's output: Model.debug_set_fault(name, delta) (llmc_debug_set_fault in the C core)
  adds delta to element 0 of that activation right after the kernel that produces it;
- a weight: one element of one layer's parameter moved through the zero-copy params view.

Tiny randomised models (no parameter is 0 or 1, activations O(1)), one lockstep step each."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from pyllmc import GPTConfig, Model  # noqa: E402
from pyllmc.errors import InvalidArgumentError, PyllmcError  # noqa: E402
from pyllmc.reference import (  # noqa: E402
    LockstepConfig, activation_names, load_reference, make_config, randomize_params, run_lockstep,
)
from pyllmc.reference.lockstep import apply_weight_fault, c_model_for  # noqa: E402

pytestmark = pytest.mark.parity

V, MAXT, L, NH, C, B, T = 211, 16, 3, 2, 32, 2, 12


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """The reference runs on one thread here, like the C side (small shared test machines:
    spinning OpenMP workers cost more than they bring for models this small)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def reference():
    ref = load_reference(make_config(vocab_size=V, n_positions=MAXT, n_layer=L, n_head=NH, n_embd=C), seed=0)
    return randomize_params(ref, seed=1)


CFG = dict(steps=1, batch=B, seq=T, seed=3, threads=1)


def run_with(fault=None, weight_fault=None, steps=1):
    ref = reference()
    cfg = LockstepConfig(**{**CFG, "steps": steps})
    m = c_model_for(ref, cfg)
    try:
        if weight_fault:
            apply_weight_fault(m, *weight_fault)
        if fault:
            m.debug_set_fault(*fault)
        return run_lockstep(ref, m, cfg)
    finally:
        m.close()


# ------------------------------------------------------------------ the C API


def tiny_c():
    cfg = GPTConfig(max_seq_len=MAXT, vocab_size=V, padded_vocab_size=256, num_layers=L, num_heads=NH, channels=C)
    return Model.from_config(cfg, max_batch=B, max_seq=T, threads=1, seed=5)


def test_debug_fault_moves_exactly_one_element_of_one_tensor():
    x = np.random.default_rng(0).integers(0, V, size=(B, T))
    names = activation_names(L)
    with tiny_c() as m:
        m.forward(x, x)
        clean = {n: np.array(a, copy=True) for n, a in m.acts.items()}
        target = "h1.fch"
        m.debug_set_fault(target, 0.75)
        m.forward(x, x)
        faulty = {n: np.array(a, copy=True) for n, a in m.acts.items()}
        i = names.index(target)
        for n in names[:i]:  # everything computed before the faulty kernel is untouched
            np.testing.assert_array_equal(faulty[n], clean[n], err_msg=n)
        diff = faulty[target] - clean[target]
        assert np.count_nonzero(diff) == 1 and diff.reshape(-1)[0] == np.float32(
            np.float32(clean[target].reshape(-1)[0]) + np.float32(0.75)) - clean[target].reshape(-1)[0]
        assert not np.array_equal(faulty["h1.fch_gelu"], clean["h1.fch_gelu"])  # and it flows downstream
        assert not np.array_equal(faulty["logits"], clean["logits"])
        # the fault stays armed for every forward until cleared
        m.forward(x, x)
        np.testing.assert_array_equal(m.acts[target], faulty[target])
        m.debug_set_fault(None)
        m.forward(x, x)
        for n in names:
            np.testing.assert_array_equal(m.acts[n], clean[n], err_msg=n)
        m.debug_set_fault("logits", 1.0)
        m.debug_set_fault("", 0.0)  # "" clears too
        m.forward(x, x)
        np.testing.assert_array_equal(m.acts["logits"], clean["logits"])


@pytest.mark.parametrize("name", ["nope", "wte", "h3.fch", "h0.qkvw", "grad.wte", "H0.fch"])
def test_debug_fault_rejects_unknown_names(name):
    with tiny_c() as m:
        with pytest.raises(InvalidArgumentError, match="no activation named"):
            m.debug_set_fault(name, 1.0)


def test_debug_fault_rejects_bad_arguments():
    with tiny_c() as m:
        with pytest.raises(InvalidArgumentError):
            m.debug_set_fault(3, 1.0)
        with pytest.raises(InvalidArgumentError):
            m.debug_set_fault("h0.fch", "big")
    m.close()
    with pytest.raises(PyllmcError):
        m.debug_set_fault("h0.fch", 1.0)


def test_weight_fault_rejects_bad_names():
    with tiny_c() as m:
        for bad in ("h0.fch", "h9.fcw", "qkvw", "h0.wte", "nope"):
            with pytest.raises(InvalidArgumentError):
                apply_weight_fault(m, bad, 1.0)


# ------------------------------------------------------------------ the harness localises faults


def test_clean_run_has_no_divergence():
    res = run_with()
    assert res.passed and res.first_divergence is None


@pytest.mark.parametrize("target,delta", [
    ("encoded", 0.25),
    ("h0.ln1", 0.25),
    ("h1.qkv", 0.25),
    ("h2.att", 0.25),        # element 0 is the first row's only probability (1.0)
    ("h0.atty", 0.25),
    ("h1.attproj", 0.25),
    ("h2.residual2", 0.25),
    ("h1.ln2_rstd", 0.25),   # used only by backward: the forward tensor itself must be named
    ("h2.fch_gelu", 0.25),
    ("h0.residual3", 0.25),
    ("lnf", 0.25),
    ("logits", 0.25),
    ("probs", 0.1),
    ("h1.fch", float("nan")),  # a NaN out of a kernel
])
def test_kernel_fault_is_the_first_divergence(target, delta):
    res = run_with(fault=(target, delta))
    first = res.first_divergence
    assert first is not None, "the injected fault was not detected"
    assert (first["name"], first["step"], first["phase"]) == (target, 1, "forward"), first["name"]
    assert first["worst_index"] == [0] * len(first["shape"])  # and the element: index 0
    assert not res.passed
    # everything before it in data-flow order passed
    i = res.rows.index(first)
    assert all(r["passed"] for r in res.rows[:i])


@pytest.mark.parametrize("param,first_act", [
    ("h1.fcw", "h1.fch"),
    ("h2.qkvb", "h2.qkv"),
    ("h0.ln2w", "h0.ln2"),
    ("wpe", "encoded"),
    ("lnfb", "lnf"),
])
def test_weight_fault_is_localised(param, first_act):
    """A weight moved in the C model after loading (zero-copy view): the step-0 comparison of
    the loaded parameters names it, and the first activation computed from it is the first
    forward divergence."""
    res = run_with(weight_fault=(param, 0.05))
    first = res.first_divergence
    assert first is not None and (first["name"], first["step"], first["phase"]) == (param, 0, "init")
    init_bad = [r["name"] for r in res.rows if r["phase"] == "init" and not r["passed"]]
    assert init_bad == [param]
    fwd = res.first_in_phase("forward")
    assert fwd is not None and fwd["name"] == first_act


def test_fault_in_a_later_step_names_that_step():
    """A fault armed between steps: everything of step 1 passes, step 2 names the tensor."""
    ref = reference()
    cfg = LockstepConfig(**{**CFG, "steps": 2})
    m = c_model_for(ref, cfg)

    class ArmAfterFirstForward:
        """A C model whose fault is armed by the first adamw_step (after step 1)."""

        def __init__(self, model):
            self._m = model

        def __getattr__(self, name):
            return getattr(self._m, name)

        def adamw_step(self, *a, **kw):
            self._m.adamw_step(*a, **kw)
            self._m.debug_set_fault("h2.fcproj", 0.25)

    try:
        res = run_lockstep(ref, ArmAfterFirstForward(m), cfg)
    finally:
        m.close()
    first = res.first_divergence
    assert first is not None and (first["name"], first["step"]) == ("h2.fcproj", 2)
    assert all(r["passed"] for r in res.rows if r["step"] <= 1)
