"""The lockstep engine and its reports (pyllmc.reference.lockstep, report, heatmap): every
activation, gradient, parameter and AdamW moment of every layer is compared at every step,
in data-flow order, with fp64 attribution; multi-step trajectories with weight decay,
clipping and an LR schedule agree; parity.json follows the contract of docs/design.md exactly.
Small randomised models on a few shapes; the GPT-2 124M shape runs as a slow test in
test_parity_cli.py (the acceptance command) and test_model_parity.py."""
from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from pyllmc.reference import (  # noqa: E402
    LAYER_PARAMS, PARAM_NAMES, LockstepConfig, activation_names, backward_param_order,
    forward_param_order, load_reference, make_batches, make_config, randomize_params, run_lockstep,
    run_parity, tensor_kind,
)
from pyllmc.reference import heatmap, report  # noqa: E402
from pyllmc.reference.lockstep import c_model_for  # noqa: E402
from pyllmc.schedule import LRSchedule  # noqa: E402

pytestmark = pytest.mark.parity


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# id: (V, maxT, L, NH, C, B, T, threads)
SHAPES = {
    "v101_nh1": (101, 16, 2, 1, 48, 2, 16, 1),   # V not a multiple of 128, one head, T = maxT
    "b1_odd": (257, 24, 3, 3, 36, 1, 13, 1),     # B = 1, odd T, head size 12, Vp = 384
    # three attention query blocks (64, 64, 2 rows), 2 heads, B = 2, on 2 threads
    "mb130_2t": (211, 160, 2, 2, 32, 2, 130, 2),
}


def reference(shape, seed=0):
    V, maxT, L, NH, C = shape[:5]
    ref = load_reference(make_config(vocab_size=V, n_positions=maxT, n_layer=L, n_head=NH, n_embd=C), seed=seed)
    return randomize_params(ref, seed=seed + 1)


def lockstep(shape, **kw):
    V, maxT, L, NH, C, B, T, threads = shape
    ref = reference(shape)
    cfg = LockstepConfig(**{**dict(steps=3, batch=B, seq=T, seed=4, threads=threads, lr=3e-3,
                                   warmup=0, grad_clip=0.5, weight_decay=0.1), **kw})
    m = c_model_for(ref, cfg)
    try:
        return run_lockstep(ref, m, cfg, model_name="test")
    finally:
        m.close()


@pytest.fixture(scope="module", params=list(SHAPES))
def result(request):
    return SHAPES[request.param], lockstep(SHAPES[request.param])


def expected_names(L):
    acts = activation_names(L) + ["loss"]
    grads = [f"grad.h{l}.{n}" if l is not None else f"grad.{n}" for n, l in backward_param_order(L)] + ["grad_norm"]
    state = []
    for n, l in forward_param_order(L):
        base = f"h{l}.{n}" if l is not None else n
        state += [f"adam_m.{base}", f"adam_v.{base}", base]
    return acts, grads, state


def test_every_tensor_of_every_layer_at_every_step_in_data_flow_order(result):
    shape, res = result
    L = shape[2]
    acts, grads, state = expected_names(L)
    init = [r["name"] for r in res.rows if r["step"] == 0]
    assert init == [f"h{l}.{n}" if l is not None else n for n, l in forward_param_order(L)]
    for step in (1, 2, 3):
        names = [r["name"] for r in res.rows if r["step"] == step]
        assert names == acts + grads + state, f"step {step}"
    assert len(res.rows) == len(init) + 3 * (len(acts) + len(grads) + len(state))
    # per layer and kind: 15 activations and 12 parameters (x grad, m, v, value) per layer
    assert len(init) == 4 + 12 * L and len(acts) == 15 * L + 8 and len(grads) == 12 * L + 5
    # the phases come in data-flow order within a step
    order = {"init": 0, "forward": 1, "backward": 2, "update": 3}
    keys = [(r["step"], order[r["phase"]]) for r in res.rows]
    assert keys == sorted(keys)


def test_lockstep_passes_with_fp64_attribution(result):
    shape, res = result
    bad = [r for r in res.rows if not r["passed"]]
    assert not bad, report.format_row(bad[0])
    assert res.first_divergence is None
    # the loaded weights are the reference's, bit for bit
    assert all(r["max_abs"] == 0.0 for r in res.rows if r["phase"] == "init")
    # fp64 ran: every row after step 0 carries the attribution numbers
    for r in res.rows:
        if r["phase"] != "init":
            assert r["rmse_c_vs_64"] is not None and r["rmse_32_vs_64"] >= 0 and "max_rel_vs_64" in r


def test_trajectory_with_decay_clipping_and_schedule(result):
    shape, res = result
    V = shape[0]
    sched = LRSchedule(lr=3e-3, steps=3, kind="cosine", warmup=0, final_frac=0.1)
    assert res.lrs == pytest.approx(sched.values())
    assert len(set(res.lrs)) == 3  # the rate really changes from step to step
    # clipping at 0.5 was active (the gradient norm exceeded it)
    assert max(res.grad_norms_torch) > 0.5
    assert res.losses_c == pytest.approx(res.losses_torch, rel=1e-5)
    assert all(abs(a - b) < 1e-4 for a, b in zip(res.losses_c, res.losses_fp64))
    assert math.log(V) * 0.2 < res.losses_c[0] < math.log(V) * 5
    # the parameters moved by about lr per step (AdamW): the run tests a real trajectory
    moved = [r for r in res.rows if r["phase"] == "update" and r["kind"] in LAYER_PARAMS and r["step"] == 3]
    assert moved and all(r["ref_rms"] > 0 for r in moved)


def test_rows_name_kind_and_layer():
    assert tensor_kind("h3.qkv") == ("qkv", 3)
    assert tensor_kind("grad.h11.fcprojw") == ("grad.fcprojw", 11)
    assert tensor_kind("adam_v.h0.ln1b") == ("adam_v.ln1b", 0)
    assert tensor_kind("adam_m.wte") == ("adam_m.wte", None)
    assert tensor_kind("logits") == ("logits", None)
    order = backward_param_order(2)
    assert order[:2] == [("lnfw", None), ("lnfb", None)] and order[-1] == ("wte", None)
    assert order.index(("fcprojw", 1)) < order.index(("qkvw", 1)) < order.index(("fcprojw", 0))
    assert sorted(n for n, _ in forward_param_order(3)) == sorted(
        [n for n in PARAM_NAMES if n not in LAYER_PARAMS] + [n for n in LAYER_PARAMS] * 3)


def test_batches_are_windows_of_one_token_stream():
    b = make_batches(50, 3, 7, 2, seed=1)
    assert len(b) == 2 and b[0][0].shape == (3, 7) and b[0][0].dtype == np.int32
    np.testing.assert_array_equal(b[0][0][:, 1:], b[0][1][:, :-1])
    assert b[0][0].max() < 50 and not np.array_equal(b[0][0], b[1][0])
    np.testing.assert_array_equal(make_batches(50, 3, 7, 2, seed=1)[1][1], b[1][1])


# ------------------------------------------------------------------ reports


def test_reports_follow_the_contract(result, tmp_path):
    shape, res = result
    paths = report.write_reports(res, str(tmp_path))
    raw = (tmp_path / "parity.json").read_text()
    d = json.loads(raw, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert set(d) == {"passed", "first_divergence", "tensors", "losses"}
    assert d["passed"] is True and d["first_divergence"] is None
    assert len(d["tensors"]) == len(res.rows)
    for t in d["tensors"]:
        assert set(t) == {"name", "step", "max_abs", "max_rel", "rmse", "passed"}
        assert isinstance(t["name"], str) and isinstance(t["step"], int) and isinstance(t["passed"], bool)
        assert all(isinstance(t[k], float) for k in ("max_abs", "max_rel", "rmse"))
    assert set(d["losses"]) == {"c", "torch"} and d["losses"]["c"] == res.losses_c
    detail = json.loads((tmp_path / "parity_detail.json").read_text())
    assert detail["config"]["steps"] == 3 and len(detail["tensors"]) == len(res.rows)
    kinds = {k["kind"] for k in detail["worst_per_kind"]}
    assert {"qkv", "att", "grad.qkvw", "adam_v.fcw", "fcprojw", "logits", "loss"} <= kinds
    # the human report lists every tensor of every layer
    text = (tmp_path / "report.txt").read_text()
    for r in res.rows:
        assert re.search(rf"^  {re.escape(r['name'])}\s", text, re.M), r["name"]
    assert "PASS" in text and "first divergence: none" in text
    # heatmaps: the self-contained HTML always, the PNG when matplotlib is there
    html = (tmp_path / "heatmap.html").read_text()
    assert "<script" not in html and "http" not in html.split("<body>", 1)[1]
    for k in ("ln1", "fch_gelu", "grad.qkvw", "adam_m.wte", "logits"):
        assert f">{k}<" in html
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "heatmap.png" not in paths
    else:
        assert (tmp_path / "heatmap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_heatmap_cells_follow_the_worst_row(result):
    shape, res = result
    L = shape[2]
    parts = {(p["panel"], p["part"]): p for p in heatmap.heatmap_data(res)}
    acts = parts[("activations", "layers")]
    assert acts["rows"] == [f"h{l}" for l in range(L)] and acts["cols"][0] == "ln1"
    j = acts["cols"].index("qkv")
    for l in range(L):
        worst = max(r["tol_ratio"] for r in res.rows if r["name"] == f"h{l}.qkv")
        assert acts["values"][l][j] == worst
    assert heatmap.colour(0.01, False) != heatmap.colour(5.0, True)
    assert heatmap.colour(None, False) == "#ffffff"


def test_failed_report(tmp_path):
    """A failing run: exit-relevant fields, the first divergence in both JSON files and the text."""
    shape = SHAPES["v101_nh1"]
    ref = reference(shape)
    cfg = LockstepConfig(steps=1, batch=2, seq=8, threads=1)
    m = c_model_for(ref, cfg)
    try:
        m.debug_set_fault("h1.ln2", 0.5)
        res = run_lockstep(ref, m, cfg, model_name="faulty", faults=["kernel output h1.ln2 += 0.5"])
    finally:
        m.close()
    report.write_reports(res, str(tmp_path), heatmaps=False)
    d = json.loads((tmp_path / "parity.json").read_text())
    assert d["passed"] is False and d["first_divergence"] == "h1.ln2"
    assert any(not t["passed"] for t in d["tensors"])
    detail = json.loads((tmp_path / "parity_detail.json").read_text())
    assert detail["first_divergence"]["name"] == "h1.ln2" and detail["faults"]
    text = "\n".join(report.summary_lines(res))
    assert "first divergence: h1.ln2 (step 1, forward)" in text and text.splitlines()[-1].startswith("FAIL")


def test_nonfinite_values_are_valid_json(tmp_path):
    shape = SHAPES["v101_nh1"]
    ref = reference(shape)
    cfg = LockstepConfig(steps=1, batch=2, seq=8, threads=1)
    m = c_model_for(ref, cfg)
    try:
        m.debug_set_fault("logits", float("inf"))
        res = run_lockstep(ref, m, cfg)
    finally:
        m.close()
    report.write_reports(res, str(tmp_path), heatmaps=False)
    d = json.loads((tmp_path / "parity.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert d["first_divergence"] == "logits"
    row = next(t for t in d["tensors"] if t["name"] == "logits")
    assert row["passed"] is False and row["max_abs"] is None  # inf is not JSON: null


# ------------------------------------------------------------------ model sources


def test_run_parity_from_a_local_hf_directory(tmp_path):
    """The from_pretrained path (what a hub id goes through) on a directory saved here."""
    ref = reference(SHAPES["b1_odd"])
    ref.save_pretrained(tmp_path / "hf")
    res = run_parity(str(tmp_path / "hf"), LockstepConfig(steps=1, batch=1, seq=5, threads=1))
    assert res.passed and res.model == str(tmp_path / "hf")
    assert res.shape["num_layers"] == 3 and res.shape["vocab_size"] == 257


def test_anchored_references_never_alias_the_c_model():
    """lockstep.anchor copies the C core's state into the references: a torch tensor sharing
    the C model's memory would let torch's in-place AdamW and clipping write into the C state,
    and the comparisons would then compare the C core with itself (all AdamW bugs invisible)."""
    import torch as _torch

    from pyllmc.reference.convert import hf_parameter
    from pyllmc.reference.lockstep import anchor
    from pyllmc.reference.torch_optim import ReferenceTrainer

    shape = SHAPES["v101_nh1"]
    ref = reference(shape)
    cfg = LockstepConfig(steps=1, batch=2, seq=8, threads=1)
    m = c_model_for(ref, cfg)
    try:
        x, y = make_batches(shape[0], 2, 8, 1, seed=0)[0]
        m.forward(x, y)
        m.backward(1.0, accumulate=False)
        tr = ReferenceTrainer(ref, lr=1e-3, padded_vocab_size=int(m.config.padded_vocab_size))
        anchor(tr, m, shape[2], ("param", "grad", "adam"), step=1)
        c_buffers = [np.asarray(getattr(m, k)[n]) for k in ("params", "grads", "adam_m", "adam_v") for n in PARAM_NAMES]
        for name, layer in forward_param_order(shape[2]):
            p, _ = hf_parameter(tr.model, name, layer)
            st = tr.opt.state[p]
            for t in (p.data, p.grad, st["exp_avg"], st["exp_avg_sq"]):
                assert isinstance(t, _torch.Tensor)
                a = t.numpy()
                assert not any(np.shares_memory(a, b) for b in c_buffers), (name, layer)
        # and the values are the C core's
        g = np.asarray(m.grads["lnfw"])
        np.testing.assert_array_equal(hf_parameter(tr.model, "lnfw")[0].grad.numpy(), g)
    finally:
        m.close()
