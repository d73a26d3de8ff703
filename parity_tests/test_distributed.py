"""Data-parallel training (pyllmc.distributed): 2 ranks over gloo on 127.0.0.1.

- 2 ranks x B equal one process with grad_accum 2 (losses and every parameter, 10 steps);
- world size 1 equals the non-distributed path bit for bit (plain and ZeRO-1);
- ZeRO-1 equals plain data parallel; resume is bit-exact in both; a resume with another world
  size re-shards the optimizer state;
- a killed rank ends the run with an error naming it, within the timeout; torchrun's
  --max-restarts resumes from the newest checkpoint and finishes as an uninterrupted run.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.distributed as tdist  # noqa: E402

from pyllmc import GPTConfig, Trainer, TrainerConfig  # noqa: E402
from pyllmc.data import DataLoader, write_shard  # noqa: E402
from pyllmc.distributed import RankLoader, param_checksum, slice_bounds  # noqa: E402
from pyllmc.launch import free_port  # noqa: E402

pytestmark = pytest.mark.skipif(not tdist.is_available() or not tdist.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")

HERE = Path(__file__).resolve().parent
WORKER = str(HERE / "dist_worker.py")
TINY = dict(max_seq_len=32, vocab_size=257, padded_vocab_size=384, num_layers=2, num_heads=2, channels=32)
STEPS = 10


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("dist_data")
    words = b"to be or not that is the question whether tis nobler in mind suffer slings arrows".split()
    rng = np.random.default_rng(5)
    raw = b" ".join(words[i] for i in rng.integers(0, len(words), 12000))[:60000]
    write_shard(d / "train_000000.bin", np.frombuffer(raw, dtype=np.uint8).astype(np.uint16))
    return d


def spec(data, out=None, **kw):
    s = dict(model=TINY, data=str(data / "train_000000.bin"), batch_size=2, seq_len=16, steps=STEPS, lr=3e-3,
             warmup=2, threads=1, progress="none", plot=False, out_dir=None if out is None else str(out),
             dist_check_every=3, dist_timeout=30.0)
    s.update(kw)
    return s


def run_ranks(s, result_dir, nproc=2, env=None, timeout=240):
    """The worker under pyllmc.launch (as `pyllmc train --nproc` starts ranks); returns
    (exit status, stderr, per-rank results)."""
    result_dir = Path(result_dir)
    result_dir.mkdir(parents=True, exist_ok=True)
    s = dict(s, result_dir=str(result_dir))
    code = ("import sys; from pyllmc.launch import launch; "
            f"sys.exit(launch([sys.executable, {WORKER!r}, sys.argv[1]], {nproc}, grace=40))")
    p = subprocess.run([sys.executable, "-c", code, json.dumps(s)], capture_output=True, text=True,
                       timeout=timeout, env=dict(os.environ, **(env or {})))
    res = [dict(np.load(result_dir / f"rank{r}.npz")) for r in range(nproc) if (result_dir / f"rank{r}.npz").exists()]
    return p.returncode, p.stderr, res


def run_single(s):
    cfg = dict(s)
    cfg["model"] = GPTConfig(**cfg["model"])
    with Trainer(TrainerConfig(**cfg)) as t:
        h = t.train()
        return np.array(h.losses), t.model.flat("params").copy(), t


# ------------------------------------------------------------------ pieces, in process
def test_rank_loader_reads_the_rank_windows_of_each_global_batch(data):
    for shuffle in (False, True):
        one = DataLoader([str(data / "train_000000.bin")], 2, 16, shuffle=shuffle, seed=3)
        ranks = [RankLoader([str(data / "train_000000.bin")], 2, 16, rank=r, world=3, shuffle=shuffle, seed=3)
                 for r in range(3)]
        for _ in range(5):
            for r in range(3):  # rank r's batch = the r-th of 3 consecutive single-process batches
                x1, y1 = one.next_batch()
                xr, yr = ranks[r].next_batch()
                np.testing.assert_array_equal(xr, x1)
                np.testing.assert_array_equal(yr, y1)
        st = ranks[1].state()
        assert st["B"] == 2 and st["world_size"] == 3
        # the position is global: it loads into another world size and continues the data
        other = RankLoader([str(data / "train_000000.bin")], 2, 16, rank=0, world=1, shuffle=shuffle, seed=3)
        other.load_state(st)
        np.testing.assert_array_equal(other.next_batch()[0], one.next_batch()[0])


def test_slice_bounds_cover_the_buffer():
    for n, w in ((124_475_904, 2), (1000, 3), (17, 4), (5, 1)):
        b = slice_bounds(n, w)
        assert b[0][0] == 0 and sum(c for _, c in b) == n
        assert all(b[i][0] + b[i][1] == b[i + 1][0] for i in range(w - 1))
        assert all(o % 16 == 0 for o, _ in b)


def test_checksum_sees_one_changed_bit():
    p = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    q = p.copy()
    q.view(np.uint32)[123] ^= 1
    assert param_checksum(p) != param_checksum(q) and param_checksum(p) == param_checksum(p.copy())


@pytest.mark.parametrize("zero", [0, 1])
def test_world_size_one_is_the_plain_path_bit_for_bit(data, monkeypatch, zero, tmp_path):
    s = spec(data, out=tmp_path / "plain")
    losses0, params0, _ = run_single(s)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")
    losses1, params1, t = run_single(spec(data, out=tmp_path / "dp", zero=zero))
    assert not tdist.is_initialized()  # the Trainer closed the group it opened
    np.testing.assert_array_equal(losses1, losses0)
    assert params1.tobytes() == params0.tobytes()
    a = [json.loads(x) for x in (tmp_path / "plain" / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (tmp_path / "dp" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["loss"], r["grad_norm"]) for r in a] == [(r["loss"], r["grad_norm"]) for r in b]


def test_zero_without_a_process_group_is_refused(data):
    from pyllmc.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match="torchrun"):
        with Trainer(TrainerConfig(**dict(spec(data), model=GPTConfig(**TINY), zero=1))) as t:
            t.setup()


# ------------------------------------------------------------------ 2 and 3 processes
@pytest.mark.parametrize("nproc", [2, 3])
def test_point_to_point_reduce_scatter_and_all_gather(tmp_path, nproc):
    """Every element of each rank's slice is the sum over ranks, exactly once (integers, exact
    in fp32); the other slices are left alone; the all-gather then gives every rank every
    owner's slice; with 2 ranks the reduce-scatter is bitwise gloo's all-reduce. Reduced into
    a model's gradients, it gives the same sums and the slice's sum of squares."""
    code = ("import sys; from pyllmc.launch import launch; "
            f"sys.exit(launch([sys.executable, {str(HERE / 'dist_collectives_worker.py')!r}, sys.argv[1]], {nproc}))")
    p = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    res = [np.load(tmp_path / f"rank{r}.npz") for r in range(nproc)]
    n = res[0]["before"].size
    bounds = slice_bounds(n, nproc)
    total = sum(x["before"].astype(np.float64) for x in res)
    for r, x in enumerate(res):
        off, cnt = bounds[r]
        mine = np.zeros(n, dtype=bool)
        mine[off: off + cnt] = True
        np.testing.assert_array_equal(x["scattered"][mine], total[mine])
        np.testing.assert_array_equal(x["scattered"][~mine], x["before"][~mine])
        np.testing.assert_array_equal(x["gathered"], total)
        if nproc == 2:
            assert x["rs_random"][mine].tobytes() == x["ar_random"][mine].tobytes()
        else:  # another order of the three additions: rounding only
            np.testing.assert_allclose(x["rs_random"][mine], x["ar_random"][mine], rtol=1e-6, atol=1e-6)
        # into the model's gradients (Model.grad_add_range): the same sums as torch's adds,
        # and the slice's sum of squares (chunk by chunk: rounding of the double sum only)
        assert x["rs_model"].tobytes() == x["rs_torch"].tobytes()
        assert float(x["rs_sumsq"]) > 0
        np.testing.assert_allclose(float(x["rs_sumsq"]), float(x["sumsq_range"]), rtol=1e-13, atol=0)


@pytest.fixture(scope="module")
def dp_runs(data, tmp_path_factory):
    """2 ranks x B=2 (plain with the split update, plain with the all-reduce update, and
    ZeRO-1), and one process with grad_accum 2, 10 steps each."""
    root = tmp_path_factory.mktemp("dp_runs")
    out = {}
    for zero in (0, 1):
        rc, err, res = run_ranks(spec(data, zero=zero), root / f"zero{zero}")
        assert rc == 0, err[-3000:]
        out[zero] = res
    rc, err, out["all_reduce"] = run_ranks(spec(data), root / "all_reduce",
                                           env={"PYLLMC_TEST_PLAIN_DP_UPDATE": "all_reduce"})
    assert rc == 0, err[-3000:]
    out["single"] = run_single(spec(data, grad_accum=2))
    return out


def _key_bias_mask(cfg):
    """The attention key biases: their gradient is exactly zero in exact arithmetic (softmax
    ignores a constant added to every score), so in fp32 it is rounding noise whose sign any
    change of summation order may flip, and AdamW turns that into steps of about lr."""
    c = GPTConfig(**cfg)
    shapes = c.param_shapes()
    mask = np.zeros(c.num_params(), dtype=bool)
    off = 0
    for name, shp in shapes.items():
        if name == "qkvb":
            for layer in range(c.num_layers):
                base = off + layer * 3 * c.channels
                mask[base + c.channels: base + 2 * c.channels] = True
        off += int(np.prod(shp))
    return mask


def assert_same_trajectory(params, ref, lr=3e-3, steps=STEPS, atol=2e-6):
    kb = _key_bias_mask(TINY)
    np.testing.assert_allclose(params[~kb], ref[~kb], rtol=0, atol=atol)
    assert np.max(np.abs(params[kb] - ref[kb])) <= 2 * lr * steps


def test_two_ranks_equal_one_process_with_grad_accum(dp_runs):
    losses, params, _ = dp_runs["single"]
    for r in dp_runs[0]:
        # summation order differs (two buffers summed vs accumulated in one): fp32 rounding only
        np.testing.assert_allclose(r["losses"], losses, rtol=2e-6, atol=0)
        np.testing.assert_allclose(r["norms"][:1], [dp_runs["single"][2].history.rows[0]["grad_norm"]], rtol=1e-5)
        assert_same_trajectory(r["params"], params)
    assert dp_runs[0][0]["params"].tobytes() == dp_runs[0][1]["params"].tobytes()  # same on every rank


def test_split_update_equals_the_all_reduce_update(dp_runs):
    """Plain data parallel's split update (reduce-scatter, AdamW on the rank's slice,
    all-gather) against all-reduce + the whole AdamW on every rank: bit for bit. The gradient
    sums are the same (a + b on 2 ranks) and AdamW is elementwise; the norm is the sum of two
    slices' double sums of squares instead of one, which could in principle move the float32
    norm by an ulp but does not here (deterministic: same data, same code). And after train()
    every rank holds the whole, current optimizer state again (the moments of the other
    rank's slice are brought up to date)."""
    split, full = dp_runs[0], dp_runs["all_reduce"]
    for a, b in zip(split, full):
        for k in ("losses", "norms", "params", "adam_m", "adam_v"):
            assert a[k].size == b[k].size and a[k].tobytes() == b[k].tobytes(), k
    for k in ("params", "adam_m", "adam_v"):
        assert split[0][k].tobytes() == split[1][k].tobytes()


def test_zero1_equals_plain_data_parallel(dp_runs):
    plain, zero = dp_runs[0], dp_runs[1]
    np.testing.assert_allclose(zero[0]["losses"], plain[0]["losses"], rtol=1e-6, atol=0)
    assert_same_trajectory(zero[0]["params"], plain[0]["params"], atol=1e-6)
    assert zero[0]["params"].tobytes() == zero[1]["params"].tobytes()
    # each rank holds only its slice of the moments, and together they are plain DP's
    n = plain[0]["params"].size
    (o0, c0), (o1, c1) = slice_bounds(n, 2)
    assert zero[0]["adam_m"].size == c0 and zero[1]["adam_m"].size == c1 and c0 + c1 == n
    np.testing.assert_allclose(np.concatenate([zero[0]["adam_v"], zero[1]["adam_v"]]), plain[0]["adam_v"],
                               rtol=1e-5, atol=1e-12)


def _rows(path):
    return [{k: v for k, v in json.loads(x).items() if k not in ("ms", "tokens_per_s")}
            for x in Path(path).read_text().splitlines()]


@pytest.mark.parametrize("zero", [0, 1])
def test_resume_is_bit_exact(data, tmp_path, zero):
    rc, err, full = run_ranks(spec(data, out=tmp_path / "full", zero=zero, save_every=5), tmp_path / "r_full")
    assert rc == 0, err[-3000:]
    rc, err, _ = run_ranks(spec(data, out=tmp_path / "cut", zero=zero, stop_at=4), tmp_path / "r_cut1")
    assert rc == 0, err[-3000:]
    names = sorted(p.name for p in (tmp_path / "cut" / "ckpt_00000004").iterdir())
    assert names == (["model.bin", "optimizer.bin", "state.json"] if not zero else
                     ["model.bin", "optimizer.rank0.bin", "optimizer.rank1.bin", "state.json"])
    rc, err, res = run_ranks(spec(data, out=tmp_path / "cut", zero=zero, resume=True), tmp_path / "r_cut2")
    assert rc == 0, err[-3000:]
    assert _rows(tmp_path / "cut" / "metrics.jsonl") == _rows(tmp_path / "full" / "metrics.jsonl")
    for a, b in zip(res, full):
        assert a["params"].tobytes() == b["params"].tobytes()
        assert a["adam_m"].tobytes() == b["adam_m"].tobytes() and a["adam_v"].tobytes() == b["adam_v"].tobytes()
    for f in ("model.bin",) + (("optimizer.bin",) if not zero else ("optimizer.rank0.bin", "optimizer.rank1.bin")):
        assert (tmp_path / "cut" / "ckpt_00000010" / f).read_bytes() == (tmp_path / "full" / "ckpt_00000010" / f).read_bytes()


def test_resume_with_another_world_size_reshards(data, tmp_path):
    """A ZeRO-1 checkpoint of 2 ranks continues in 1 process (the slices are joined) and in
    2 plain ranks; the moments loaded are exactly the saved ones."""
    rc, err, _ = run_ranks(spec(data, out=tmp_path / "z", zero=1, stop_at=4), tmp_path / "r1")
    assert rc == 0, err[-3000:]
    ck = tmp_path / "z" / "ckpt_00000004"
    from pyllmc.checkpoint import load_checkpoint

    model, state = load_checkpoint(ck, max_batch=2, max_seq=16)
    halves = []
    for r in range(2):
        raw = np.fromfile(ck / f"optimizer.rank{r}.bin", dtype="<f4", offset=1024)
        halves.append(raw[: raw.size // 2])
    np.testing.assert_array_equal(model.flat("adam_m"), np.concatenate(halves))
    assert state["world_size"] == 2 and state["zero"] == 1
    model.close()
    # single process resumes it and finishes
    s = spec(data, out=tmp_path / "z", resume=True)
    s["model"] = GPTConfig(**TINY)
    with Trainer(TrainerConfig(**s)) as t:
        h = t.train()
    assert h.final_step == STEPS


def _children(pid):
    kids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                kids.append(int(d.name))
    return kids


def _rank_of(pid):
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    for e in env:
        if e.startswith(b"RANK="):
            return int(e[5:])
    return None


def test_killed_rank_ends_the_run_with_an_error_naming_it(data, tmp_path):
    """`pyllmc train --nproc 2`; rank 1 is SIGKILLed from outside mid-run: rank 0 fails its
    next collective and says so, the launcher names rank 1, all within the timeout."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "pyllmc", "train", "--nproc", "2", "--model", "d2", "--vocab-size", "257",
           "--max-seq-len", "32", "--data", str(data / "train_000000.bin"), "--steps", "100000", "--batch", "2",
           "--seq", "16", "--lr", "1e-3", "--threads", "1", "--out", str(out), "--progress", "lines",
           "--log-every", "1", "--no-plot", "--dist-timeout", "20"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            m = out / "metrics.jsonl"
            if m.exists() and len(m.read_text().splitlines()) >= 3:
                break
            time.sleep(0.2)
        victims = [k for k in _children(p.pid) if _rank_of(k) == 1]
        assert victims, "rank 1 not found"
        t_kill = time.monotonic()
        os.kill(victims[0], signal.SIGKILL)
        _, err = p.communicate(timeout=60)
        elapsed = time.monotonic() - t_kill
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert p.returncode == 1
    assert elapsed < 20 + 10, elapsed
    assert f"rank 1 (pid {victims[0]}) ended with signal SIGKILL" in err
    assert "pyllmc: data-parallel run failed: rank 0:" in err and "rank 1" in err.split("run failed: rank 0:")[1]
    assert "Traceback" not in err


def test_torchrun_max_restarts_resumes_from_the_newest_checkpoint(data, tmp_path):
    """torchrun --max-restarts 1: rank 1 dies after step 7 (first attempt only); the restarted
    group resumes from ckpt_00000006 and ends exactly as an uninterrupted run.
    (This needs the per-attempt store prefix of pyllmc.distributed: without it the restarted
    gloo workers time out connecting to the addresses of the dead ones.)"""
    rc, err, full = run_ranks(spec(data, out=tmp_path / "full", save_every=3), tmp_path / "r_full")
    assert rc == 0, err[-3000:]
    s = dict(spec(data, out=tmp_path / "run", save_every=3, resume=True), result_dir=str(tmp_path / "r_run"))
    (tmp_path / "r_run").mkdir()
    port = free_port()
    env = dict(os.environ, PYLLMC_TEST_KILL_AT="7:1", GLOO_SOCKET_IFNAME="lo")
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
                        "--max-restarts", "1", "--master-addr", "127.0.0.1", "--master-port", str(port),
                        WORKER, json.dumps(s)], capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    rows = _rows(tmp_path / "run" / "metrics.jsonl")
    assert rows == _rows(tmp_path / "full" / "metrics.jsonl")
    res = [dict(np.load(tmp_path / "r_run" / f"rank{r}.npz")) for r in range(2)]
    # the restarted workers ran only steps 7..10: their history holds the metrics up to the checkpoint
    assert res[0]["params"].tobytes() == full[0]["params"].tobytes()


def test_a_stop_requested_on_one_rank_ends_every_rank_at_the_same_step(data, tmp_path):
    """A callback of rank 1 alone returns True after step 3: the request travels with step 4's
    loss exchange, both ranks end after step 4 and write one checkpoint there; resuming
    finishes as the uninterrupted run does."""
    rc, err, full = run_ranks(spec(data, out=tmp_path / "full"), tmp_path / "r_full")
    assert rc == 0, err[-3000:]
    rc, err, res = run_ranks(spec(data, out=tmp_path / "run"), tmp_path / "r_run", env={"PYLLMC_TEST_STOP_AT": "3:1"})
    assert rc == 0, err[-3000:]
    assert [int(r["final_step"]) for r in res] == [4, 4]
    assert [p.name for p in sorted((tmp_path / "run").glob("ckpt_*"))] == ["ckpt_00000004"]
    rc, err, res = run_ranks(spec(data, out=tmp_path / "run", resume=True), tmp_path / "r_run2")
    assert rc == 0, err[-3000:]
    assert _rows(tmp_path / "run" / "metrics.jsonl") == _rows(tmp_path / "full" / "metrics.jsonl")
    assert res[0]["params"].tobytes() == full[0]["params"].tobytes()


@pytest.mark.parametrize("flags, message", [
    (["--zero", "1"], "zero=1 shards the optimizer state across data-parallel ranks"),
    (["--nproc", "0"], "--nproc: must be an integer >= 1"),
    (["--dist-timeout", "0"], "--dist-timeout must be a number of seconds > 0"),
])
def test_bad_data_parallel_flags_are_one_line_and_exit_2(data, tmp_path, flags, message):
    p = subprocess.run([sys.executable, "-m", "pyllmc", "train", "--model", "d1", "--vocab-size", "257",
                        "--data", str(data / "train_000000.bin"), "--steps", "2", "--batch", "2", "--seq", "16",
                        "--lr", "1e-3", "--out", str(tmp_path / "o"), *flags], capture_output=True, text=True,
                       timeout=120, env={k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")})
    assert p.returncode == 2
    assert message in p.stderr and len(p.stderr.strip().splitlines()) == 1
