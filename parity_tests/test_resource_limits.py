"""A model or batch too large for memory is a clear OutOfMemoryError (issue 8 §2), never an OOM
kill, a crash or a half-built model; the CLI turns it into one line and exit status 2.

Everything runs in ONE subprocess whose address space is capped with
``resource.setrlimit(RLIMIT_AS, ...)`` at what it already uses plus a small headroom, so every
large allocation of the C core fails for real (calloc returns NULL) whatever the machine's
memory and overcommit settings. After the failures the same process still creates and trains
a small model: the failed creations freed what they had allocated and broke nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

HEADROOM_MB = 512  # above the interpreter's own address space: small models fit, d12 does not

_SCRIPT = textwrap.dedent(r"""
    import contextlib, io, json, os, resource, struct, sys, tempfile, traceback
    import numpy as np
    import pyllmc
    from pyllmc import GPTConfig, Model
    from pyllmc.cli import main
    from pyllmc.data import write_shard

    tmp = tempfile.mkdtemp()
    # inputs made BEFORE the cap: a sparse checkpoint whose header is valid and whose size
    # matches it (600 MB of zero parameters; the loader allocates 4 copies + activations)
    big = os.path.join(tmp, "big.bin")
    maxT, V, Vp, L, NH, C = 1024, 50257, 50304, 12, 12, 768
    nparams = Vp * C + maxT * C + L * (12 * C * C + 13 * C) + 2 * C
    with open(big, "wb") as f:
        h = [0] * 256
        h[:8] = [20240326, 3, maxT, V, L, NH, C, Vp]
        f.write(struct.pack("<256i", *h))
        f.truncate(1024 + 4 * nparams)
    shard = os.path.join(tmp, "train.bin")
    write_shard(shard, np.arange(64 * 1024 + 1) % 200)

    def vm_bytes():
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmSize")

    limit = vm_bytes() + int(sys.argv[1]) * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    def attempt(fn):
        try:
            fn()
            return {"ok": True}
        except BaseException as e:
            return {"ok": False, "type": type(e).__name__, "mro": [c.__name__ for c in type(e).__mro__],
                    "msg": str(e), "tb": traceback.format_exc()[-1500:]}

    def cli(argv):
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                rc = main(argv)
        except SystemExit as e:
            rc = e.code
        except BaseException:
            return {"ok": False, "type": "traceback", "mro": [], "msg": traceback.format_exc()[-1500:], "rc": None}
        return {"ok": rc == 0, "rc": rc, "msg": err.getvalue(), "type": "", "mro": []}

    def create(cfg, **kw):
        with Model.from_config(cfg, threads=1, **kw):
            pass

    out = {"limit_mb": limit >> 20}
    out["d12_model"] = attempt(lambda: create(GPTConfig.from_size("d12"), max_batch=1))
    out["d48_model"] = attempt(lambda: create(GPTConfig.from_size("d48"), max_batch=1))
    out["small_model_huge_batch"] = attempt(lambda: create(GPTConfig(1024, 257, 384, 2, 2, 64), max_batch=65536))
    out["small_model_huge_seq"] = attempt(lambda: create(GPTConfig(2**20, 257, 384, 1, 1, 16), max_batch=1))
    out["load_big_checkpoint"] = attempt(lambda: Model.from_checkpoint(big, max_batch=1, threads=1).close())
    out["cli_sample_d12"] = cli(["sample", "--model", "d12", "--tokenizer", "byte", "--max-tokens", "1"])
    out["cli_sample_big_checkpoint"] = cli(["sample", "--model", big, "--tokenizer", "byte", "--max-tokens", "1"])
    out["cli_train_huge_batch"] = cli(["train", "--model", "d1", "--vocab-size", "257", "--data", shard,
                                       "--steps", "1", "--batch", "64", "--seq", "1024", "--max-seq-len", "1024",
                                       "--lr", "1e-3", "--progress", "none", "--no-plot", "--shuffle", "off",
                                       "--grad-accum", "1", "--out", os.path.join(tmp, "run")])

    # still healthy: a small model is created and trained under the same cap
    def small_step():
        with Model.from_config(GPTConfig(16, 60, 64, 2, 2, 16), max_batch=2, threads=1, seed=1) as m:
            x = np.arange(16).reshape(2, 8) % 60
            l0 = m.forward(x, x)
            for t in range(1, 4):
                m.zero_grad(); m.forward(x, x); m.backward(); m.adamw_step(1e-2, t=t)
            assert m.forward(x, x) < l0
    out["small_model_after"] = attempt(small_step)
    sys.__stdout__.write(json.dumps(out))
""")


@pytest.fixture(scope="module")
def results():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.run([sys.executable, "-c", _SCRIPT, str(HEADROOM_MB)], capture_output=True, text=True,
                       timeout=600, env=env)
    # the process itself must survive: no OOM kill (-9), no abort (-6), no segfault (-11)
    assert p.returncode == 0, f"subprocess died with {p.returncode}: {p.stderr[-3000:]}"
    return json.loads(p.stdout)


OOM_CASES = ["d12_model", "d48_model", "small_model_huge_batch", "small_model_huge_seq", "load_big_checkpoint"]


@pytest.mark.parametrize("case", OOM_CASES)
def test_too_large_is_out_of_memory_error(results, case):
    r = results[case]
    assert not r["ok"], f"{case} succeeded under a {results['limit_mb']} MB address-space cap"
    assert r["type"] == "OutOfMemoryError", f"{case}: {r['type']}: {r['msg']}\n{r.get('tb', '')}"
    assert "MemoryError" in r["mro"] and "PyllmcError" in r["mro"]
    assert "memory" in r["msg"].lower() or "allocate" in r["msg"].lower(), r["msg"]


def test_oom_loading_names_the_file(results):
    assert "big.bin" in results["load_big_checkpoint"]["msg"]


@pytest.mark.parametrize("case", ["cli_sample_d12", "cli_sample_big_checkpoint", "cli_train_huge_batch"])
def test_cli_out_of_memory_is_one_line_exit_2(results, case):
    r = results[case]
    assert r["type"] != "traceback", r["msg"]
    lines = [ln for ln in r["msg"].splitlines() if ln.strip()]
    assert r["rc"] == 2 and len(lines) == 1, (r["rc"], r["msg"])
    assert "memory" in lines[0].lower(), lines[0]


def test_process_still_healthy_after_failures(results):
    assert results["small_model_after"]["ok"], results["small_model_after"]
