"""Numerical faults (issue 8): a NaN/inf loss or gradient is detected, the first tensor that
went non-finite in data-flow order is named with its layer, and the Trainer stops with
NonFiniteError or skips the update when configured."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pyllmc import GPTConfig, Model, NonFiniteError, PyllmcError, Trainer, TrainerConfig
from pyllmc.data import write_shard
from pyllmc.numerics import activation_order, diagnose_gradients, diagnose_loss, parameter_order

CFG = GPTConfig(max_seq_len=16, vocab_size=257, padded_vocab_size=384, num_layers=2, num_heads=2, channels=32)
B, T = 2, 16


@pytest.fixture(scope="module")
def shard(tmp_path_factory):
    d = tmp_path_factory.mktemp("nf")
    toks = np.frombuffer(b"the cat sat on the mat; the dog sat on the log. " * 40, dtype=np.uint8)
    write_shard(d / "train.bin", toks.astype(np.uint16))
    return d / "train.bin"


def batch(seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 257, size=(B, T)), rng.integers(0, 257, size=(B, T))


def test_orders_follow_the_data_flow():
    with Model.from_config(CFG, max_batch=B, threads=1) as m:
        m.forward(*batch())
        order = activation_order(m.acts.keys())
    layer = ["ln1_mean", "ln1_rstd", "ln1", "qkv", "att", "atty", "attproj", "residual2",
             "ln2_mean", "ln2_rstd", "ln2", "fch", "fch_gelu", "fcproj", "residual3"]
    want = ["encoded"] + [f"h{l}.{n}" for l in range(2) for n in layer] + \
        ["lnf_mean", "lnf_rstd", "lnf", "logits", "probs", "losses"]
    assert order == want  # the table itself is grouped by kind, not by layer
    fwd = parameter_order(2)
    bwd = parameter_order(2, backward=True)
    assert fwd[:3] == [("wte", None), ("wpe", None), ("ln1w", 0)] and fwd[-1] == ("lnfb", None)
    assert bwd[:4] == [("lnfw", None), ("lnfb", None), ("fcprojw", 1), ("fcprojb", 1)]
    assert bwd[-4:] == [("ln1w", 0), ("ln1b", 0), ("wpe", None), ("wte", None)]
    assert sorted(fwd, key=str) == sorted(bwd, key=str) and len(fwd) == 2 + 12 * 2 + 2


@pytest.mark.parametrize("param,index,first", [
    ("wpe", (3, 0), "encoded"),
    ("ln1w", (1, 4), "h1.ln1"),
    ("qkvw", (0, 5, 3), "h0.qkv"),
    ("attprojw", (1, 2, 7), "h1.attproj"),
    ("fcw", (1, 5, 3), "h1.fch"),
    ("fcprojw", (0, 9, 100), "h0.fcproj"),
    ("lnfw", (6,), "lnf"),
])
def test_inf_weight_names_first_activation_and_parameter(param, index, first):
    x, y = batch(1)
    with Model.from_config(CFG, max_batch=B, threads=1, seed=2) as m:
        assert np.isfinite(m.forward(x, y))
        m.params[param][index] = np.inf  # through the zero-copy view
        loss = m.forward(x, y)
        assert not np.isfinite(loss)
        r = diagnose_loss(m, 7, loss)
    layer = index[0] if param not in ("wpe", "lnfw") else None
    pname = f"h{layer}.{param}" if layer is not None else param
    assert r.first is not None and r.first.kind == "acts" and r.first.name == first
    assert r.tensor == f"acts {first}" and r.layer == (None if first in ("encoded", "lnf") else layer)
    assert [f.name for f in r.bad_params] == [pname]
    assert r.bad_params[0].count == 1 and r.bad_params[0].index == tuple(index[1:] if layer is not None else index)
    msg = r.message
    assert msg.startswith("step 7: the loss is nan") and f"acts {first}" in msg and pname in msg


def test_finite_weight_that_overflows_is_found_without_bad_parameters():
    with Model.from_config(CFG, max_batch=B, threads=1, seed=2) as m:
        m.params["fcw"][1] = 1e38  # finite, but every dot product with it overflows float32
        x, y = batch(2)
        loss = m.forward(x, y)
        r = diagnose_loss(m, 1, loss)
    assert r.tensor == "acts h1.fch" and r.layer == 1 and r.bad_params == []


def test_gradient_fault_named_in_backward_order():
    x, y = batch(3)
    with Model.from_config(CFG, max_batch=B, threads=1, seed=2) as m:
        m.forward(x, y)
        m.zero_grad()
        m.backward()
        assert np.isfinite(m.grad_norm())
        m.grads["qkvw"][1, 2, 2] = np.nan  # layer 1's gradient is computed before layer 0's and wte's
        m.grads["qkvw"][0, 0, 0] = np.inf
        m.grads["wte"][5, 5] = np.nan
        norm = m.grad_norm()
        assert not np.isfinite(norm)
        r = diagnose_gradients(m, 4, norm)
        assert r.tensor == "grads h1.qkvw" and r.layer == 1 and r.first.nan == 1 and r.first.index == (2, 2)
        assert "step 4: the gradient norm is nan" in r.message and "grads h1.qkvw" in r.message
        # every gradient finite, but their sum of squares beyond float32
        m.zero_grad()
        m.grads["fcb"][0, 0] = 3e38
        m.grads["fcb"][1, 0] = 3e38
        norm = m.grad_norm()
        assert np.isinf(norm)
        r = diagnose_gradients(m, 5, norm)
        assert r.first is None and "overflowed" in r.message


@pytest.mark.parametrize("name,value", [("encoded", np.nan), ("h0.residual2", np.inf), ("h1.fch_gelu", np.nan),
                                        ("h1.attproj", -np.inf), ("lnf", np.nan)])
def test_nonfinite_activation_from_a_kernel_is_named(name, value):
    """The C core's fault hook puts a NaN/inf into one activation right after the kernel that
    produces it, with every parameter finite: that activation is the one named."""
    x, y = batch(4)
    with Model.from_config(CFG, max_batch=B, threads=1, seed=2) as m:
        m.debug_set_fault(name, value)
        loss = m.forward(x, y)
        assert not np.isfinite(loss)
        r = diagnose_loss(m, 2, loss, micro_batch=1, micro_batches=4)
    assert r.tensor == f"acts {name}" and r.bad_params == []
    assert r.layer == (int(name[1]) if name.startswith("h") else None)
    assert "(micro-batch 2 of 4)" in r.message and f"acts {name}" in r.message


def test_activation_only_the_backward_reads_is_named_before_the_gradients():
    """A NaN in the attention probabilities leaves the loss finite (the forward has already
    used its own copy) but poisons the backward: the activation came first in data flow, and
    the first bad gradient in backward order is layer 0's qkvw."""
    x, y = batch(5)
    with Model.from_config(CFG, max_batch=B, threads=1, seed=2) as m:
        m.debug_set_fault("h0.att", np.nan)
        assert np.isfinite(m.forward(x, y))
        m.zero_grad()
        m.backward()
        norm = m.grad_norm()
        assert np.isnan(norm)
        r = diagnose_gradients(m, 9, norm)
    assert r.tensor == "acts h0.att" and r.layer == 0 and r.first_grad.label == "grads h0.qkvw"
    assert "first non-finite gradient in backward order: grads h0.qkvw" in r.message
    assert r.as_dict()["grad"] == "grads h0.qkvw"


def cfg(shard, out=None, **kw):
    base = dict(model=CFG, data=str(shard), batch_size=B, seq_len=T, steps=6, lr=1e-3, threads=1,
                progress="none", plot=False, shuffle=False, out_dir=None if out is None else str(out))
    base.update(kw)
    return TrainerConfig(**base)


def test_trainer_stops_naming_step_tensor_and_layer(shard, tmp_path):
    ends = []
    t = Trainer(cfg(shard, tmp_path / "r", save_every=1))

    def poison(status):
        if status.step == 2:
            t.model.params["fcw"][1, 0, :] = np.inf

    t.add_callback("step_end", poison)
    t.add_callback("train_end", ends.append)
    with t:
        with pytest.raises(NonFiniteError) as ei:
            t.train()
        e = ei.value
        assert isinstance(e, PyllmcError) and isinstance(e, FloatingPointError)
        assert e.step == 3 and e.tensor == "acts h1.fch" and e.layer == 1
        assert "step 3" in str(e) and "acts h1.fch" in str(e) and "h1.fcw" in str(e)
        h = t.history
        assert h.final_step == 2 and h.stop_reason == "non-finite loss at step 3 (first: acts h1.fch)"
        assert h.faults and h.faults[0]["tensor"] == "acts h1.fch"
        assert t.status.running is False and t.status.stop_reason == h.stop_reason
    assert len(ends) == 1 and ends[0].stop_reason == h.stop_reason
    rows = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    # the broken state is never checkpointed: the newest checkpoint is the last good step
    assert sorted(p.name for p in (tmp_path / "r").glob("ckpt_*")) == ["ckpt_00000001", "ckpt_00000002"]


def test_trainer_skips_a_nonfinite_gradient_update(shard):
    snaps = {}
    t = Trainer(cfg(shard, on_nonfinite="skip", steps=5))
    t.setup()
    m = t.model
    real_backward = m.backward
    calls = {"n": 0}

    def backward_with_nan(loss_scale=1.0, **kw):
        real_backward(loss_scale, **kw)
        calls["n"] += 1
        if calls["n"] == 3:  # step 3's gradients
            m.grads["fcprojb"][0, 4] = np.nan

    m.backward = backward_with_nan
    t.add_callback("step_end", lambda s: snaps.__setitem__(s.step, (m.flat("params").copy(),
                                                                    m.flat("adam_m").copy())))
    with t:
        h = t.train()
        assert t.status.skipped_steps == 1
    assert h.final_step == 5 and h.stop_reason is None and h.skipped_steps == [3]
    row = h.rows[2]
    assert row["skipped"] is True and row["grad_norm"] is None and row["nonfinite"] == "grads h0.fcprojb"
    assert np.isfinite(row["loss"])
    # no update at step 3: parameters and AdamW state unchanged; later steps update again
    assert np.array_equal(snaps[3][0], snaps[2][0]) and np.array_equal(snaps[3][1], snaps[2][1])
    assert not np.array_equal(snaps[4][0], snaps[3][0])
    assert all(np.isfinite(r["loss"]) and np.isfinite(r["grad_norm"]) for r in h.rows if r["step"] != 3)
    assert np.isfinite(snaps[5][0]).all()


def test_trainer_skips_a_transient_nonfinite_loss(shard, tmp_path):
    """A kernel output goes NaN for one step only (fault set after step 2, cleared after
    step 3): step 3's update is skipped, its row says so with null loss, training goes on."""
    snaps = {}
    t = Trainer(cfg(shard, tmp_path / "r", on_nonfinite="skip", steps=5, plot=True))

    def on_step(s):
        snaps[s.step] = t.model.flat("params").copy()
        if s.step == 2:
            t.model.debug_set_fault("h1.fch_gelu", np.inf)
        if s.step == 3:
            t.model.debug_set_fault(None)

    t.add_callback("step_end", on_step)
    with t:
        h = t.train()
    rows = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5] and h.skipped_steps == [3]
    assert rows[2]["skipped"] is True and rows[2]["loss"] is None and rows[2]["nonfinite"] == "acts h1.fch_gelu"
    assert all("skipped" not in r and np.isfinite(r["loss"]) for i, r in enumerate(rows) if i != 2)
    assert np.array_equal(snaps[3], snaps[2]) and not np.array_equal(snaps[4], snaps[3])
    assert h.faults[0]["tensor"] == "acts h1.fch_gelu" and h.loss_curve  # the curve leaves step 3 out


def test_skip_mode_still_stops_for_bad_parameters_and_too_many_skips(shard):
    t = Trainer(cfg(shard, on_nonfinite="skip"))
    t.add_callback("step_end", lambda s: t.model.params["qkvw"].__setitem__((0, 1, 1), np.nan) if s.step == 1 else None)
    with t, pytest.raises(NonFiniteError, match="parameters themselves are non-finite") as ei:
        t.train()
    assert ei.value.step == 2 and ei.value.tensor == "acts h0.qkv"

    t = Trainer(cfg(shard, on_nonfinite="skip", max_skips=2))
    t.setup()
    t.model.params["fcw"][1] = 1e38  # finite weights whose products overflow: every step is non-finite
    with t, pytest.raises(NonFiniteError, match="3 steps in a row") as ei:
        t.train()
    assert ei.value.step == 3 and ei.value.tensor == "acts h1.fch"
    assert t.history.skipped_steps == [1, 2]
    with pytest.raises(PyllmcError, match="on_nonfinite"):
        Trainer(cfg(shard, on_nonfinite="ignore"))


def test_cli_diverged_run_is_one_line_exit_1(shard, tmp_path):
    with Model.from_config(CFG, max_batch=1, threads=1, seed=1) as m:
        m.params["attprojw"][1, 3, 3] = np.inf
        m.save(tmp_path / "bad.bin")
    r = subprocess.run([sys.executable, "-m", "pyllmc", "train", "--model", tmp_path / "bad.bin", "--data", shard,
                        "--steps", "3", "--batch", "2", "--seq", "16", "--lr", "1e-3", "--threads", "1",
                        "--progress", "none", "--no-plot", "--out", tmp_path / "run"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, (r.stdout, r.stderr)
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in r.stderr
    assert "step 1" in err and "acts h1.attproj" in err and "h1.attprojw" in err
    assert not list(Path(tmp_path / "run").glob("ckpt_*"))


def test_loss_curve_leaves_out_nonfinite_steps(tmp_path):
    pytest.importorskip("matplotlib")
    from pyllmc.plotting import plot_loss_curve

    rows = [{"step": i, "loss": 3.0 - 0.05 * i} for i in range(1, 31)]
    rows[10]["loss"] = None  # a skipped step (metrics.jsonl writes null for NaN)
    rows[11]["loss"] = float("nan")
    rows[11]["val_loss"] = 2.5
    p = plot_loss_curve(rows, tmp_path / "loss.png")
    assert p is not None and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_loss_curve([{"step": 1, "loss": None}], tmp_path / "none.png") is None
