"""The built-in callbacks (metrics, progress, TensorBoard, sampling, checkpoints with
keep-best), replacing them, on_train_begin, and TensorBoard event files read back."""

import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pyllmc import Trainer, TrainerConfig
from pyllmc.callbacks import BEST_DIR, Callback, MetricsCallback, ProgressCallback
from pyllmc.checkpoint import list_checkpoints, read_state
from pyllmc.data import write_shard
from pyllmc.model import GPTConfig
from pyllmc.tensorboard import EventWriter, crc32c, masked_crc, read_events
from pyllmc.tokenizer import ByteTokenizer


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("cbdata")
    rng = np.random.default_rng(0)
    text = "".join(f"{a}+{b}={a + b}\n" for a, b in rng.integers(0, 100, size=(600, 2))).encode()
    toks = np.frombuffer(text, dtype=np.uint8).astype(np.uint16)
    write_shard(d / "train_000000.bin", toks[:-800])
    write_shard(d / "val_000000.bin", toks[-800:])
    ByteTokenizer().save(d / "tokenizer.bin")
    return d


def cfg(data, out, **kw):
    base = dict(model=GPTConfig(32, 257, 384, 1, 2, 32), data=str(data / "train_000000.bin"),
                val_data=str(data / "val_000000.bin"), batch_size=2, seq_len=16, steps=8, lr=3e-3, threads=1,
                progress="none", plot=False, out_dir=str(out) if out else None, eval_every=2, eval_batches=2)
    base.update(kw)
    return TrainerConfig(**base)


def rows(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


# ---------------------------------------------------------------- event files
def test_crc32c_and_records():
    assert crc32c(b"123456789") == 0xE3069283  # the standard CRC-32C check value
    assert crc32c(b"") == 0


def test_event_file_round_trip(tmp_path):
    with EventWriter(tmp_path) as w:
        w.add_scalar("train/loss", 2.5, 1, wall_time=10.0)
        w.add_scalar("train/loss", 1.25, 2, wall_time=11.0)
        w.add_scalar("val/loss", -0.5, 3_000_000_000, wall_time=12.0)
    (f,) = list(tmp_path.glob("events.out.tfevents.*"))
    ev = read_events(f)
    assert [(e.tag, e.step, e.value, e.wall_time) for e in ev] == [
        ("train/loss", 1, 2.5, 10.0), ("train/loss", 2, 1.25, 11.0), ("val/loss", 3_000_000_000, -0.5, 12.0)]
    raw = f.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    assert struct.unpack("<I", raw[8:12])[0] == masked_crc(raw[:8])
    assert b"brain.Event:2" in raw[12:12 + n]  # the file_version record comes first
    bad = tmp_path / "bad" / f.name
    bad.parent.mkdir()
    bad.write_bytes(raw[:-1] + bytes([raw[-1] ^ 1]))
    with pytest.raises(Exception, match="bad data CRC"):
        read_events(bad)


def test_trainer_reports_to_tensorboard(data, tmp_path):
    with Trainer(cfg(data, tmp_path / "r", report_to=["tensorboard"])) as t:
        h = t.train()
    (f,) = list((tmp_path / "r" / "tensorboard").glob("events.out.tfevents.*"))
    ev = read_events(f)
    loss = [(e.step, e.value) for e in ev if e.tag == "train/loss"]
    assert loss == [(r["step"], float(np.float32(r["loss"]))) for r in h.rows]
    val = [(e.step, e.value) for e in ev if e.tag == "val/loss"]
    assert val == [(s, float(np.float32(v))) for s, v in h.val_losses] and [s for s, _ in val] == [2, 4, 6, 8]
    assert {e.tag for e in ev} == {"train/loss", "train/lr", "train/grad_norm", "train/tokens_per_s", "val/loss"}
    # TensorBoard itself reads them, when it is installed
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        return
    acc = EventAccumulator(str(f.parent))
    acc.Reload()
    assert [(s.step, s.value) for s in acc.Scalars("train/loss")] == loss


def test_cli_report_to_tensorboard(data, tmp_path):
    r = subprocess.run([sys.executable, "-m", "pyllmc", "train", "--model", "d1", "--max-seq-len", "16",
                        "--data", str(data / "train_000000.bin"), "--steps", "3", "--batch", "1", "--seq", "8",
                        "--threads", "1", "--progress", "none", "--no-plot", "--report-to", "tensorboard",
                        "--out", str(tmp_path / "c")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    (f,) = list((tmp_path / "c" / "tensorboard").glob("events.out.tfevents.*"))
    assert [e.step for e in read_events(f) if e.tag == "train/loss"] == [1, 2, 3]


# ---------------------------------------------------------------- callbacks
class Recorder(Callback):
    def __init__(self):
        self.events = []

    def on_train_begin(self, st):
        self.events.append(("begin", st.step, self.trainer is not None))

    def on_step_end(self, st):
        self.events.append(("step", st.step))

    def on_save(self, st):
        self.events.append(("save", st.step, Path(st.checkpoint).name))

    def on_train_end(self, st):
        self.events.append(("end", st.step))


def test_on_train_begin_and_order(data, tmp_path):
    rec = Recorder()
    with Trainer(cfg(data, tmp_path / "r", stop_at=3, save_every=2), callbacks=[rec]) as t:
        t.train()
    assert rec.events == [("begin", 0, True), ("step", 1), ("step", 2), ("save", 2, "ckpt_00000002"),
                          ("step", 3), ("save", 3, "ckpt_00000003"), ("end", 3)]
    rec2 = Recorder()
    with Trainer(cfg(data, tmp_path / "r", resume=True, save_every=2), callbacks=[rec2]) as t:
        t.train()
    assert rec2.events[0] == ("begin", 3, True) and rec2.events[-1] == ("end", 8)


def test_a_stopping_callback_still_gets_a_checkpoint(data, tmp_path):
    class StopAt3(Callback):
        def on_step_end(self, st):
            return st.step == 3

    with Trainer(cfg(data, tmp_path / "r"), callbacks=[StopAt3()]) as t:
        h = t.train()
    assert h.final_step == 3 and h.stop_reason == "callback (on_step_end)"
    assert [s for s, _ in list_checkpoints(tmp_path / "r")] == [3]


def test_replacing_and_dropping_the_built_in_callbacks(data, tmp_path):
    class MoreMetrics(MetricsCallback):
        def row(self, st):
            r = super().row(st)
            r["tokens_seen"] = st.tokens_seen
            return r

    class Quiet(ProgressCallback):
        def __init__(self):
            super().__init__()
            self.lines = []

        def on_step_end(self, st):
            self.lines.append(st.step)

        def write(self, msg):
            self.lines.append(msg)

    q = Quiet()
    with Trainer(cfg(data, tmp_path / "a", progress="lines", steps=4), callbacks=[MoreMetrics(), q]) as t:
        t.train()
        assert sum(isinstance(c, MetricsCallback) for c in t.callbacks) == 1
        assert sum(isinstance(c, ProgressCallback) for c in t.callbacks) == 1
    assert [r["tokens_seen"] for r in rows(tmp_path / "a" / "metrics.jsonl")] == [32, 64, 96, 128]
    assert q.lines == [1, 2, 3, 4]
    with Trainer(cfg(data, tmp_path / "b", steps=2), default_callbacks=False) as t:
        h = t.train()
    assert len(h.rows) == 2  # the run itself is recorded in the History
    assert (tmp_path / "b" / "metrics.jsonl").read_bytes() == b"" and not list_checkpoints(tmp_path / "b")


# ---------------------------------------------------------------- keep-best
def test_keep_best_by_validation_loss(data, tmp_path):
    # a high constant lr: the validation loss falls, rises and falls again (4.87 ... 2.71 at
    # step 5 ... 2.96, 2.90, 2.76), so the best step is neither the first nor the last
    kw = dict(steps=9, lr=3e-2, warmup=0, schedule="constant", eval_every=1, keep_best=True, keep_last=1)
    with Trainer(cfg(data, tmp_path / "a", **kw)) as t:
        h = t.train()
    vals = h.val_losses
    best_step, best = min(vals, key=lambda sv: sv[1])
    assert 1 < best_step < 9, vals
    (ck,) = [p for _, p in list_checkpoints(tmp_path / "a" / BEST_DIR)]
    assert ck.name == f"ckpt_{best_step:08d}"
    assert read_state(ck)["val_loss"] == best
    # the best model is that step's: it gives that validation loss again
    with Trainer(cfg(data, None, model=str(ck / "model.bin"), steps=1)) as t2:
        assert t2.evaluate() == pytest.approx(best, rel=0, abs=0)
    # interrupted before and after the best step, then resumed: the same best checkpoint (after
    # it, the best loss so far is read back from DIR/best, so worse later steps do not replace it)
    for stop, name in ((best_step - 1, "b"), (best_step + 2, "c")):
        with Trainer(cfg(data, tmp_path / name, stop_at=stop, **kw)) as t:
            t.train()
        with Trainer(cfg(data, tmp_path / name, resume=True, **kw)) as t:
            t.train()
        (ck_b,) = [p for _, p in list_checkpoints(tmp_path / name / BEST_DIR)]
        assert ck_b.name == ck.name
        assert (ck_b / "model.bin").read_bytes() == (ck / "model.bin").read_bytes()


def test_tensorboard_after_a_crash_shows_each_step_once(data, tmp_path):
    """A run that died after its last checkpoint had logged later steps; the resumed run's
    event file purges them (file_version record at the resume step + 1)."""
    kw = dict(steps=8, save_every=4, keep_last=0, report_to=["tensorboard"], schedule="constant")
    with Trainer(cfg(data, tmp_path / "r", **kw)) as t:
        t.train()
    import shutil

    shutil.rmtree(tmp_path / "r" / "ckpt_00000008")  # as if it crashed before that save
    with Trainer(cfg(data, tmp_path / "r", resume=True, **kw)) as t:
        h = t.train()
    files = sorted((tmp_path / "r" / "tensorboard").glob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime)
    assert len(files) == 2
    raw = files[1].read_bytes()
    from pyllmc.tensorboard import _fields

    (n,) = struct.unpack("<Q", raw[:8])
    first = dict((num, v) for num, _, v in _fields(raw[12:12 + n]))
    assert first[2] == 5 and first[3] == b"brain.Event:2"  # purge from step 5 on
    assert [e.step for e in read_events(files[1]) if e.tag == "train/loss"] == [5, 6, 7, 8]
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        return
    acc = EventAccumulator(str(files[0].parent))
    acc.Reload()
    assert [(s.step, s.value) for s in acc.Scalars("train/loss")] == [
        (r["step"], float(np.float32(r["loss"]))) for r in h.rows]


def test_overwrite_removes_the_old_best_and_event_files(data, tmp_path):
    with Trainer(cfg(data, tmp_path / "r", steps=2, keep_best=True, report_to=["tensorboard"])) as t:
        t.train()
    assert (tmp_path / "r" / BEST_DIR).is_dir() and (tmp_path / "r" / "tensorboard").is_dir()
    with Trainer(cfg(data, tmp_path / "r", steps=2, overwrite=True)) as t:
        t.train()
    assert not (tmp_path / "r" / BEST_DIR).exists() and not (tmp_path / "r" / "tensorboard").exists()
