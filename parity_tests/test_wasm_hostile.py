"""Hostile guests, systematically: every handle argument of every host function given a bad,
stale, mistyped or never-issued handle, and every pointer argument given out-of-bounds
places (negative lengths, the last byte past the end, a range wrapping past 4 GiB, NULL,
a huge length). Each must be INVALID_ARGUMENT, name the call, and write nothing through the
out pointers; the same buffers placed in the last bytes of memory must work.

The cases are generated from the ABI table (pyllmc.wasm.abi), so a new function without a
spec here fails ``test_every_function_has_a_spec``.
"""

from __future__ import annotations

import struct

import pytest

from wasm_guests import Driver, make_shards, require_wasmtime, wrapper_module

require_wasmtime()

from pyllmc.wasm import Host, abi  # noqa: E402

PAGES = 4
MEM = PAGES * 65536
HANDLE_KIND = {"model": "model", "loader": "loader", "train_loader": "loader", "val_loader": "loader",
               "tok": "tokenizer", "job": "job"}

# (pointer param, length param or None, element size, fixed element count when no length param)
POINTERS = {
    "last_error": [("buf", "cap", 1, None), ("out_len", None, 4, 1)],
    "model_create": [("config", None, 4, 6), ("out_model", None, 4, 1)],
    "model_load": [("path", "path_len", 1, None), ("out_model", None, 4, 1)],
    "model_save": [("path", "path_len", 1, None)],
    "model_num_params": [("out", None, 8, 1)],
    "model_free": [],
    "dataloader_create": [("pattern", "pattern_len", 1, None), ("out_loader", None, 4, 1)],
    "dataloader_free": [],
    "tokenizer_load": [("spec", "spec_len", 1, None), ("out_tok", None, 4, 1)],
    "tokenizer_encode": [("text", "text_len", 1, None), ("out_ids", "cap", 4, None), ("out_n", None, 4, 1)],
    "tokenizer_decode": [("ids", "n", 4, None), ("out", "cap", 1, None), ("out_len", None, 4, 1)],
    "tokenizer_free": [],
    "train_step": [("out_loss", None, 4, 1)],
    "evaluate": [("out_loss", None, 4, 1)],
    "sample": [("prompt", "prompt_len", 1, None), ("out", "cap", 1, None), ("out_len", None, 4, 1)],
    "train_start": [("config_json", "config_len", 1, None), ("out_job", None, 4, 1)],
    "job_status": [("out_status", None, 48, 1)],
    "job_wait": [],
    "job_stop": [],
    "job_free": [],
    "job_error": [("buf", "cap", 1, None), ("out_len", None, 4, 1)],
    "abi_version": [],
}
OUT = {fn: set(v) for fn, v in abi.OUT_PARAMS.items()}


def test_every_function_has_a_spec():
    assert set(POINTERS) == set(abi.FUNCTIONS)
    for fn, specs in POINTERS.items():
        names = dict(abi.FUNCTIONS[fn].params)
        for p, ln, _, _ in specs:
            assert p in names and (ln is None or ln in names)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile")
    make_shards(d, 3000, names=("train_000.bin",))
    from pyllmc import GPTConfig, Model

    Model.from_config(GPTConfig(64, 257, 384, 2, 2, 64), max_batch=1, max_seq=16, seed=3).save(str(d / "m.bin"))
    return d


class Case:
    """A guest with one live object of each kind (plus a finished job) and a valid argument
    list for a function; inputs and outputs are placed by the Driver."""

    def __init__(self, data, fn):
        self.inst = Host(threads=1).instantiate(wrapper_module(pages=PAGES), dirs=[(str(data), "/data")])
        self.d = d = Driver(self.inst)
        self.fn = fn
        self.h = {"model": d.model(), "loader": d.loader("/data/train_000.bin", 2, 16), "tokenizer": d.tokenizer()}
        vl = d.loader("/data/train_000.bin", 2, 16)
        self.h["val"] = vl
        m2 = d.model()
        job = d.job(m2, d.loader("/data/train_000.bin", 2, 16), '{"steps": 1, "plot": false}')
        assert d.call("job_wait", job, -1) == 0
        self.h["job"] = job
        self.inputs = {}
        self.outs = {}
        self.args = self._valid_args()

    def close(self):
        self.inst.close()

    def _input(self, name, data: bytes):
        p, n = self.d.buf(data)
        self.inputs[name] = data
        return p, n

    def _out(self, name, nbytes):
        p = self.d.out(nbytes)
        self.outs[name] = nbytes
        return p

    def _valid_args(self):
        fn, h = self.fn, self.h
        a = {}
        for pname, _t in abi.FUNCTIONS[fn].params:
            if pname in HANDLE_KIND:
                a[pname] = {"model": h["model"], "loader": h["loader"], "train_loader": h["loader"],
                            "val_loader": h["val"], "tok": h["tokenizer"], "job": h["job"]}[pname]
        inputs = {"config": struct.pack("<6i", 64, 257, 384, 2, 2, 64), "path": b"/data/m.bin",
                  "pattern": b"/data/train_*.bin", "spec": b"byte", "text": b"hi", "ids": struct.pack("<2i", 104, 105),
                  "prompt": b"hi", "config_json": b'{"steps": 1, "plot": false}'}
        if fn == "model_save":
            inputs["path"] = b"/data/saved.bin"
        for p, ln, elem, count in POINTERS[fn]:
            if p in (OUT.get(fn) or ()):
                n = count if count is not None else 16
                if ln is not None:
                    a[ln] = n
                a[p] = self._out(p, n * elem)
            else:
                ptr, nbytes = self._input(p, inputs[p])
                a[p] = ptr
                if ln is not None:
                    a[ln] = nbytes // elem
        scalars = {"seed": 1, "batch": 2, "seq": 16, "shuffle": 0, "lr": 1e-3, "batches": 1, "max_tokens": 2,
                   "temperature": 1.0, "top_k": 0, "timeout_ms": 0}
        for pname, _t in abi.FUNCTIONS[fn].params:
            if pname not in a:
                a[pname] = scalars[pname]
        return a

    def call(self, args=None):
        a = self.args if args is None else args
        return self.d.call(self.fn, *[a[p] for p, _ in abi.FUNCTIONS[self.fn].params])

    def outs_untouched(self, args) -> bool:
        for p, n in self.outs.items():
            ptr = args[p] & 0xFFFFFFFF
            if ptr == self.args[p] and self.inst.read(ptr, n) != b"\xAB" * n:
                return False
        return True


HANDLE_CASES = [(fn, p) for fn, sig in abi.FUNCTIONS.items() for p, _ in sig.params if p in HANDLE_KIND]
BAD_HANDLES = ["zero", "negative", "never_issued", "high_index", "stale", "wrong_kind", "int_max"]


# val_loader 0 is valid ("no validation loader"), so it has no "zero" case
HANDLE_MATRIX = [(fn, p, bad) for fn, p in HANDLE_CASES for bad in BAD_HANDLES
                 if not (bad == "zero" and p == "val_loader")]


@pytest.mark.parametrize("fn,param,bad", HANDLE_MATRIX, ids=[f"{f}.{p}-{b}" for f, p, b in HANDLE_MATRIX])
def test_bad_handles(data, fn, param, bad):
    c = Case(data, fn)
    try:
        kind = HANDLE_KIND[param]
        d = c.d
        if bad == "zero":
            v = 0
        elif bad == "negative":
            v = -5
        elif bad == "never_issued":
            v = (7 << 16) | 1  # slot 1 exists but never had generation 7
        elif bad == "high_index":
            v = (1 << 16) | 999
        elif bad == "int_max":
            v = 2**31 - 1
        elif bad == "stale":
            if kind == "model":
                v = d.model()
                assert d.call("model_free", v) == 0
            elif kind == "loader":
                v = d.loader("/data/train_000.bin", 2, 16)
                assert d.call("dataloader_free", v) == 0
            elif kind == "tokenizer":
                v = d.tokenizer()
                assert d.call("tokenizer_free", v) == 0
            else:
                v = d.job(d.model(), d.loader("/data/train_000.bin", 2, 16), '{"steps": 1, "plot": false}')
                assert d.call("job_free", v) == 0
            # reuse the slot: the stale handle's slot now holds a live object of the same kind
            if kind == "model":
                assert (d.model() & 0xFFFF) == (v & 0xFFFF)
        else:  # wrong_kind: a live handle of another kind
            v = c.h["tokenizer"] if kind != "tokenizer" else c.h["model"]
        args = dict(c.args)
        args[param] = v
        st = c.call(args)
        assert st == abi.INVALID_ARGUMENT, (st, d.error)
        assert d.error.startswith(fn + ":") and param.split("_")[-1] in d.error or kind in d.error, d.error
        if bad == "stale":
            assert "stale" in d.error
        if bad == "wrong_kind":
            assert "handle, not a" in d.error
        assert c.outs_untouched(args)
    finally:
        c.close()


POINTER_CASES = [(fn, spec) for fn, specs in POINTERS.items() for spec in specs]
BAD_POINTERS = ["past_end", "wraps_4gib", "null", "huge_length", "negative_length", "far_out"]


# length corruptions only where the length is an argument (not for fixed-size pointers)
POINTER_MATRIX = [(fn, spec, bad) for fn, spec in POINTER_CASES for bad in BAD_POINTERS
                  if spec[1] is not None or bad not in ("huge_length", "negative_length")]


@pytest.mark.parametrize("fn,spec,bad", POINTER_MATRIX, ids=[f"{f}.{s[0]}-{b}" for f, s, b in POINTER_MATRIX])
def test_bad_pointers(data, fn, spec, bad):
    p, ln, elem, count = spec
    c = Case(data, fn)
    try:
        args = dict(c.args)
        nbytes = (args[ln] if ln else count) * elem
        if bad == "past_end":
            args[p] = MEM - nbytes + 1
        elif bad == "wraps_4gib":
            args[p] = -max(2, nbytes // 2)  # 0xFFFFFFFx: ptr + len wraps past 2^32
        elif bad == "null":
            args[p] = 0
        elif bad == "far_out":
            args[p] = 2**31 - 1
        elif bad == "huge_length":
            args[ln] = 2**31 - 1
        elif bad == "negative_length":
            args[ln] = -1
        st = c.call(args)
        assert st == abi.INVALID_ARGUMENT, (st, c.d.error)
        assert c.d.error.startswith(fn + ":"), c.d.error
        assert c.outs_untouched(args)
    finally:
        c.close()


@pytest.mark.parametrize("fn,spec", POINTER_CASES, ids=[f"{f}.{s[0]}" for f, s in POINTER_CASES])
def test_buffers_in_the_last_bytes_of_memory_work(data, fn, spec):
    """The same call with this buffer moved to the very end of memory gives the same status
    as with the buffer elsewhere (bounds are inclusive of the last byte)."""
    p, ln, elem, count = spec
    base = Case(data, fn)
    try:
        expected = base.call()
    finally:
        base.close()
    c = Case(data, fn)
    try:
        args = dict(c.args)
        nbytes = (args[ln] if ln else count) * elem
        end = MEM - nbytes
        if p in c.inputs:
            c.inst.write(end, c.inputs[p])
        args[p] = end
        st = c.call(args)
        assert st == expected, (st, expected, c.d.error)
    finally:
        c.close()


def test_last_bytes_written_exactly(data):
    c = Case(data, "model_num_params")
    try:
        d = c.d
        m = c.h["model"]
        assert d.call("model_num_params", m, MEM - 8) == 0
        assert struct.unpack("<q", c.inst.read(MEM - 8, 8))[0] > 0
        assert d.call("model_num_params", m, MEM - 7) == abi.INVALID_ARGUMENT
        assert "outside the guest memory" in d.error
    finally:
        c.close()


def test_output_buffers_truncate_and_report_the_full_length(data):
    c = Case(data, "tokenizer_encode")
    try:
        d = c.d
        t = c.h["tokenizer"]
        text = d.buf(b"abcdefgh")
        ids, n = d.out(64), d.out(4)
        assert d.call("tokenizer_encode", t, *text, ids, 3, n) == 0 and d.i32(n) == 8
        assert struct.unpack("<3i", c.inst.read(ids, 12)) == tuple(b"abc")
        assert c.inst.read(ids + 12, 4) == b"\xAB" * 4  # nothing past cap
        out, ol = d.out(8), d.out(4)
        assert d.call("last_error", out, 0, ol) == 0  # cap 0: only the length
        # a failed call, then last_error in a small buffer
        assert d.call("model_free", 12345) == abi.INVALID_ARGUMENT
        assert d.call("last_error", out, 8, ol) == 0
        full = d.error.encode()
        assert d.i32(ol) == len(full) and c.inst.read(out, 8) == full[:8]
    finally:
        c.close()


def test_bad_scalar_arguments(data):
    """Negative sizes, NaN/inf floats, bad flags: INVALID_ARGUMENT, never a crash."""
    cases = [
        ("dataloader_create", {"batch": 0}), ("dataloader_create", {"seq": -3}), ("dataloader_create", {"shuffle": 2}),
        ("train_step", {"lr": float("nan")}), ("train_step", {"lr": float("inf")}), ("train_step", {"lr": -1.0}),
        ("evaluate", {"batches": 0}), ("evaluate", {"batches": -1}),
        ("sample", {"max_tokens": -1}), ("sample", {"top_k": -1}), ("sample", {"temperature": float("nan")}),
        ("sample", {"temperature": float("-inf")}), ("job_wait", {"timeout_ms": -2}),
        ("tokenizer_decode", {"n": -1}),
    ]
    for fn, over in cases:
        c = Case(data, fn)
        try:
            args = dict(c.args)
            args.update(over)
            assert c.call(args) == abi.INVALID_ARGUMENT, (fn, over, c.d.error)
            assert c.outs_untouched(args)
        finally:
            c.close()
    # model configs the core cannot build
    for cfg in [(0, 257, 384, 2, 2, 64), (64, 257, 100, 2, 2, 64), (64, 257, 384, 2, 3, 64), (64, -1, 384, 2, 2, 64),
                (64, 257, 384, 2, 128, 64), (2**31 - 1, 257, 384, 2, 2, 64)]:
        c = Case(data, "model_create")
        try:
            c.inst.write(c.args["config"], struct.pack("<6i", *cfg))
            st = c.call()
            assert st in (abi.INVALID_ARGUMENT, abi.OUT_OF_MEMORY), (cfg, st, c.d.error)
            assert c.outs_untouched(c.args)
        finally:
            c.close()


def test_token_ids_outside_the_vocabulary(data):
    c = Case(data, "tokenizer_decode")
    try:
        c.inst.write(c.args["ids"], struct.pack("<2i", 300, -1))
        assert c.call() == abi.INVALID_ARGUMENT and "outside the vocabulary" in c.d.error
        assert c.outs_untouched(c.args)
    finally:
        c.close()
    c = Case(data, "tokenizer_encode")
    try:  # not UTF-8
        c.inst.write(c.args["text"], b"\xff\xfe")
        assert c.call() == abi.INVALID_ARGUMENT and "UTF-8" in c.d.error
    finally:
        c.close()
