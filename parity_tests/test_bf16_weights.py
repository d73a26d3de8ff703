"""The bf16 copy of the weights that a CPU bf16 model keeps (core_c/src/bf16_weights.c): the
matmuls read it instead of rounding the fp32 weights at every call, so it must equal
round(master weights) whenever a forward or backward runs, after every way the weights change.

The reference for "equal to round(master)" is a fresh model given the same fp32 weights by
copy_from_host: its copy is made from them at its first forward. Same weights, same bf16
operands, so the logits and the loss are bitwise the same; a stale copy (the old weights'
image) gives other logits, which every test checks is a visible difference (the weights moved
enough to change their bf16 image). The parameters are read with copy_to_host, never through
a view, except in the test of views: a view makes the model remake the copy at every call."""

import numpy as np
import pytest

from pyllmc import GPTConfig, Model

CFG = GPTConfig(32, 97, 128, 2, 2, 32)
B, T = 2, 16


def _model(seed=5):
    return Model.from_config(CFG, max_batch=B, max_seq=T, threads=2, seed=seed, precision="bf16")


def _batch(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, CFG.vocab_size, size=(B, T), dtype=np.int32)
    y = rng.integers(0, CFG.vocab_size, size=(B, T), dtype=np.int32)
    return x, y


def _logits(m, x, y):
    loss = m.forward(x, y)
    return loss, m.copy_to_host("acts", "logits")


def _fresh_logits(params, x, y):
    """logits of a new model holding these fp32 weights (its copy made from them)"""
    ref = _model(seed=99)
    ref.copy_from_host("params", None, params)
    out = _logits(ref, x, y)
    ref.close()
    return out


def _step(m, x, y, t):
    m.forward(x, y)
    m.backward(accumulate=False)
    m.adamw_step(3e-3, t=t, weight_decay=0.1)


def _assert_same(got, want):
    assert got[0] == want[0]
    np.testing.assert_array_equal(got[1], want[1])


def _assert_moved(before, after):
    """the weights changed their bf16 image: a stale copy would have been seen"""
    assert not np.array_equal(before[1], after[1])


def test_copy_follows_every_adamw_step():
    m = _model()
    x, y = _batch()
    prev = _logits(m, x, y)
    for t in range(1, 5):
        _step(m, x, y, t)
        got = _logits(m, x, y)
        _assert_same(got, _fresh_logits(m.copy_to_host("params"), x, y))
        _assert_moved(prev, got)
        prev = got


def test_copy_follows_copy_from_host_whole_and_one_tensor():
    m = _model()
    x, y = _batch(1)
    _step(m, x, y, 1)
    before = _logits(m, x, y)
    p = m.copy_to_host("params")
    m.copy_from_host("params", None, p * np.float32(1.01))
    got = _logits(m, x, y)
    _assert_same(got, _fresh_logits(p * np.float32(1.01), x, y))
    _assert_moved(before, got)
    # one named tensor, between a forward and the next
    w = m.copy_to_host("params", "fcw")
    m.copy_from_host("params", "fcw", -w)
    got2 = _logits(m, x, y)
    _assert_same(got2, _fresh_logits(m.copy_to_host("params"), x, y))
    _assert_moved(got, got2)


def test_write_between_forward_and_backward_reaches_the_backward():
    """backward after a copy_from_host uses the new weights' image (as fp32 uses the new
    weights): its input gradients, and so every weight gradient below the classifier, differ
    from those of the same forward and backward without the write. A stale copy would give
    exactly the latter."""
    x, y = _batch(2)
    a, c = _model(), _model()
    for m in (a, c):
        m.forward(x, y)
    # a weight that the backward reads only as a matmul operand (the copy), nowhere in fp32
    a.copy_from_host("params", "fcprojw", a.copy_to_host("params", "fcprojw") * np.float32(0.97))
    a.backward(accumulate=False)
    c.backward(accumulate=False)
    ga, gc = a.copy_to_host("grads"), c.copy_to_host("grads")
    assert np.isfinite(ga).all()
    assert not np.array_equal(ga, gc)


def test_copy_after_save_and_load(tmp_path):
    m = _model()
    x, y = _batch(3)
    for t in range(1, 3):
        _step(m, x, y, t)
    want = _logits(m, x, y)
    path = tmp_path / "m.bin"
    m.save(path)
    loaded = Model.from_checkpoint(path, max_batch=B, max_seq=T, threads=2, precision="bf16")
    _assert_same(_logits(loaded, x, y), want)


def test_writes_through_a_view_are_seen():
    m = _model()
    x, y = _batch(4)
    _step(m, x, y, 1)
    before = _logits(m, x, y)
    view = m.params["qkvw"]  # hands out the parameter pointer
    view *= np.float32(1.5)
    got = _logits(m, x, y)
    _assert_same(got, _fresh_logits(m.copy_to_host("params"), x, y))
    _assert_moved(before, got)
    _step(m, x, y, 2)  # and after an update, with the view still out
    view[...] = np.float32(0.01)
    _assert_same(_logits(m, x, y), _fresh_logits(m.copy_to_host("params"), x, y))


@pytest.mark.parametrize("cut", [1, 1000, None])
def test_adamw_step_range_keeps_the_copy(cut):
    """ZeRO-1's update in two slices: the same weights, the same copy, as one adamw_step"""
    x, y = _batch(5)
    a, b = _model(), _model()
    n = a.copy_to_host("params").size
    cut = n // 2 if cut is None else cut
    for t in range(1, 3):
        for m in (a, b):
            m.forward(x, y)
            m.backward(accumulate=False)
        a.adamw_step(3e-3, t=t, weight_decay=0.1)
        b.adamw_step_range(3e-3, t=t, offset=0, count=cut, weight_decay=0.1)
        b.adamw_step_range(3e-3, t=t, offset=cut, count=n - cut, weight_decay=0.1)
        np.testing.assert_array_equal(a.copy_to_host("params"), b.copy_to_host("params"))
        _assert_same(_logits(b, x, y), _logits(a, x, y))
    _assert_same(_logits(b, x, y), _fresh_logits(b.copy_to_host("params"), x, y))


def test_fp32_model_unaffected():
    """the fp32 path has no copy: a copy_from_host write is seen as before"""
    m = Model.from_config(CFG, max_batch=B, max_seq=T, threads=2, seed=5)
    x, y = _batch(6)
    p = m.copy_to_host("params") * np.float32(1.01)
    m.copy_from_host("params", None, p)
    ref = Model.from_config(CFG, max_batch=B, max_seq=T, threads=2, seed=99)
    ref.copy_from_host("params", None, p)
    assert m.forward(x, y) == ref.forward(x, y)
