"""Property test over the host functions' whole argument space: any function, any i32 / i64
/ f32 values (live handles, stale ones, boundaries of memory, NaN, inf, extremes) and random
bytes in the guest's buffers. The only outcome allowed is a status code: no trap (which is
what a Python exception escaping into wasmtime would become), no crash, no "internal error",
and no write outside the buffers a call was given (guest memory outside them is checked
unchanged after failed calls).

Bounded where the argument space would only mean "run for a long time": ``max_tokens`` and
``batches`` are taken modulo 64, ``timeout_ms`` is at most 50 ms, and the guest's host
memory is capped (``max_host_memory``) so a random model config is refused, not allocated.
"""

from __future__ import annotations

from collections import Counter

import pytest

from wasm_guests import Driver, make_shards, require_wasmtime, wrapper_module

require_wasmtime()

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from pyllmc.wasm import abi  # noqa: E402
from pyllmc.wasm.host import GuestResult, Host  # noqa: E402

PAGES = 4
MEM = PAGES * 65536
SCRATCH = (1024, 1024 + 8192)  # random bytes go here; the Driver's objects live above it
OUTCOMES: Counter = Counter()  # (function, status) over the run, checked by the last test


@pytest.fixture(scope="module")
def guest(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz")
    make_shards(d, 4000, names=("train_000.bin",))
    with open(d / "tok.bin", "wb") as f:
        from pyllmc.tokenizer import ByteTokenizer

        ByteTokenizer().save(f.name)
    g = Host(threads=1, max_host_memory="256M", max_handles=64).instantiate(wrapper_module(pages=PAGES),
                                                                          dirs=[(str(d), "/data")])
    drv = Driver(g, start=SCRATCH[1])
    # live objects of every kind, and a finished job
    m = drv.model()
    tl = drv.loader("/data/train_000.bin", 2, 16)
    drv.tokenizer()
    j = drv.job(drv.model(), drv.loader("/data/train_000.bin", 2, 16), '{"steps": 1, "plot": false}')
    assert drv.call("job_wait", j, -1) == 0
    # useful strings in memory for random pointers to land on
    strings = [drv.buf(s) for s in (b"/data/train_000.bin", b"/data/tok.bin", b"byte", b"/data/x.bin", b"{}",
                                    b'{"steps": 2, "plot": false}', b"/data/../etc", b"hello")]
    yield g, drv, strings, (m, tl)
    g.close()


SPECIAL = [0, 1, -1, 2, 4, 2**31 - 1, -(2**31), MEM, MEM - 1, MEM - 4, MEM - 8, MEM - 48, SCRATCH[0], SCRATCH[0] + 1,
           65536, 1 << 16 | 1, 2 << 16 | 1]
# i32 values: fixed specials, any integer, or ("handle"/"string", index, variant) resolved at
# call time against the guest's current handles and strings (a strategy must not depend on state)
I32 = st.one_of(st.sampled_from(SPECIAL), st.integers(-(2**31), 2**31 - 1), st.integers(0, 4096),
                st.tuples(st.sampled_from(["handle", "string_ptr", "string_len"]), st.integers(0, 63),
                          st.sampled_from(["as_is", "plus1", "other_gen"])))


def _resolve(v, g, strings):
    if not isinstance(v, tuple):
        return v
    what, k, variant = v
    if what == "handle":
        hs = [h for h, _, _ in g.context.handles.items()] or [1 << 16 | 1]
        h = hs[k % len(hs)]
        return {"as_is": h, "plus1": h + 1, "other_gen": h ^ (1 << 16)}[variant]
    p, n = strings[k % len(strings)]
    return p if what == "string_ptr" else n


I64 = st.one_of(st.sampled_from([0, 1, -1, 2**63 - 1, -(2**63)]), st.integers(-(2**63), 2**63 - 1))
F32 = st.floats(width=32, allow_nan=True, allow_infinity=True)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(data=st.data(), fn=st.sampled_from(sorted(abi.FUNCTIONS)), noise=st.binary(min_size=0, max_size=512),
       at=st.integers(SCRATCH[0], SCRATCH[1] - 512))
def test_only_status_codes(guest, data, fn, noise, at):
    g, drv, strings, keep = guest
    g.write(at, noise)
    args = []
    params = abi.FUNCTIONS[fn].params
    pair_len = {}
    for pname, t in params:
        if pname in pair_len:
            v = pair_len.pop(pname)
        elif pname + "_len" in dict(params) or (pname == "config_json"):
            # a (pointer, length) pair: often one of the prepared strings, else two random i32
            k = data.draw(st.one_of(st.none(), st.integers(0, 63)), label=pname)
            lname = "config_len" if pname == "config_json" else pname + "_len"
            if k is None:
                v = _resolve(data.draw(I32, label=pname), g, strings)
                pair_len[lname] = _resolve(data.draw(I32, label=lname), g, strings)
            else:
                v, pair_len[lname] = strings[k % len(strings)]
        else:
            v = _resolve(data.draw({"i32": I32, "i64": I64, "f32": F32}[t], label=pname), g, strings)
        if pname in ("max_tokens", "batches"):
            v = v % 64
        if pname == "timeout_ms":
            v = min(v, 50)
        args.append(v)
    before = g.read(0, SCRATCH[0])  # below every buffer a call could legally be given
    size = g.memory_size
    r = g.call("w_" + fn, *args)
    assert not isinstance(r, GuestResult), f"{fn}{tuple(args)} ended the guest: {r}"
    if fn == "abi_version":
        assert r == 1
    else:
        assert r in abi.STATUS_NAMES.keys(), (fn, args, r)
        assert "internal error" not in g.last_error, g.last_error
        if r != 0:
            assert g.last_error.startswith(fn + ":"), (fn, g.last_error)
    OUTCOMES[(fn, abi.status_name(r) if fn != "abi_version" else "version")] += 1
    assert g.memory_size == size
    # pointers into [0, 1024) other than NULL are legal buffers; only check when none was given
    ptrs = [a & 0xFFFFFFFF for (p, t), a in zip(abi.FUNCTIONS[fn].params, args) if t == "i32"]
    if r != 0 and not any(0 < p < SCRATCH[0] for p in ptrs):
        assert g.read(0, SCRATCH[0]) == before
    # stop any job the fuzzer managed to start, so the next examples are not all BAD_STATE
    for _h, kind, obj in list(g.context.handles.items()):
        if kind == "job" and obj.job.running:
            obj.job.stop()
            obj.job.wait(30)


def test_the_fuzzer_reached_every_function_and_both_outcomes():
    """The property above is only worth something if the random calls reach the host code:
    every function called, failures of several kinds, and successful calls too."""
    print(sorted(OUTCOMES.items()))
    called = {fn for fn, _ in OUTCOMES}
    assert called == set(abi.FUNCTIONS)
    statuses = {s for _, s in OUTCOMES}
    assert {"OK", "INVALID_ARGUMENT"} <= statuses and len(statuses) >= 3, statuses
