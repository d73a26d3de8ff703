"""TrainerConfig files and the `pyllmc train` command line generated from it: config round
trips, --config layering, resume by path (bit-identical), overrides allowed and refused on
resume, the run-directory lock, errors that name the flag, and the internal-error path."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pyllmc import InvalidArgumentError, StateError, Trainer, TrainerConfig
from pyllmc.cli import build_parser, main
from pyllmc.config import config_fields, flag_name, read_config_file
from pyllmc.data import write_shard
from pyllmc.tokenizer import ByteTokenizer


def pyllmc(*args, env=None, timeout=300):
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "pyllmc", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=e)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("cfgdata")
    text = "".join(f"Line {i}: a config file and a resumed run.\n" for i in range(200)).encode()
    toks = np.frombuffer(text, dtype=np.uint8).astype(np.uint16)
    write_shard(d / "train_000000.bin", toks[: len(toks) * 9 // 10])
    write_shard(d / "val_000000.bin", toks[len(toks) * 9 // 10:])
    ByteTokenizer().save(d / "tokenizer.bin")
    return d


SMALL = ["--model", "d1", "--max-seq-len", "32", "--batch", "2", "--seq", "16", "--lr", "3e-3", "--warmup", "2",
         "--threads", "1", "--eval-every", "4", "--eval-batches", "2", "--progress", "none", "--grad-accum", "2",
         "--save-every", "3", "--no-plot"]


def _one_line_exit_2(r, *needles):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1, err
    for n in needles:
        assert str(n) in err, err
    return err


def _rows(path):
    return [{k: v for k, v in json.loads(line).items() if k not in ("ms", "tokens_per_s")}
            for line in Path(path).read_text().splitlines()]


# ---------------------------------------------------------------- the config itself
def _non_default_config(tmp_path):
    """A config where every plain field differs from its default."""
    return TrainerConfig(
        model="d2", data=str(tmp_path / "t_*.bin"), val_data="v.bin", tokenizer="byte", vocab_size=300,
        max_seq_len=128, batch_size=3, seq_len=32, grad_accum=2, total_batch_tokens=192, steps=77, lr=1.25e-3,
        schedule="wsd", warmup=5, final_frac=0.05, wsd_decay_frac=0.3, beta1=0.8, beta2=0.99, eps=1e-6,
        weight_decay=0.01, decay_matrices_only=False, grad_clip=0.5, on_nonfinite="skip", max_skips=3,
        shuffle=False, seed=7, threads=2, device="cpu", precision="bf16", nproc=2, zero=1, dist_check_every=7, dist_timeout=30.0,
        eval_every=10, eval_batches=3, sample_every=20,
        sample_tokens=16, sample_prompt='say "hi"\n\tand \\ bye', sample_temperature=0.7, sample_top_k=40,
        out_dir="runs/x", save_every=25, keep_last=0, keep_best=True, resume=True, stop_at=50, overwrite=True,
        progress="lines", log_every=5, plot=False, report_to=["tensorboard"])


def test_every_field_differs_in_the_round_trip_config(tmp_path):
    cfg, default = _non_default_config(tmp_path), TrainerConfig()
    same = [f.name for f in config_fields() if getattr(cfg, f.name) == getattr(default, f.name)]
    assert same == ["device"]  # cpu is the only device every machine has


@pytest.mark.parametrize("suffix", [".toml", ".json"])
def test_config_file_round_trip(tmp_path, suffix):
    cfg = _non_default_config(tmp_path)
    cfg.validate()
    path = tmp_path / ("run" + suffix)
    cfg.to_file(path)
    back = TrainerConfig.from_file(path)
    assert back == cfg
    assert TrainerConfig.from_dict(cfg.to_dict()) == cfg
    # an override on top of the file
    assert TrainerConfig.from_file(path, lr=0.5).lr == 0.5


def test_config_keys_by_flag_name_and_unknown_keys(tmp_path):
    p = tmp_path / "run.toml"
    p.write_text('batch = 8\nseq = 32\n"grad-clip" = 2\ndata = "x.bin"\n[ignored]\n')
    with pytest.raises(Exception, match=r"\[ignored\] tables are not settings"):
        read_config_file(p)
    p.write_text('batch = 8\nseq = 32\n"grad-clip" = 2\ndata = "x.bin"\nlr = 1\n')
    cfg = TrainerConfig.from_file(p)
    assert (cfg.batch_size, cfg.seq_len, cfg.grad_clip, cfg.lr) == (8, 32, 2.0, 1.0)
    assert isinstance(cfg.lr, float)
    p.write_text("batch_sise = 8\n")
    with pytest.raises(InvalidArgumentError,
                       match=r"run.toml: unknown setting 'batch_sise' \(did you mean 'batch_size'\?\)"):
        TrainerConfig.from_file(p)
    p.write_text("batch = [\n")
    with pytest.raises(Exception, match="not valid TOML"):
        TrainerConfig.from_file(p)
    with pytest.raises(InvalidArgumentError, match="batch_size must be an integer >= 1, got 0"):
        TrainerConfig(data="x", batch_size=0).validate()
    with pytest.raises(InvalidArgumentError, match="batch_size must be an integer, got '8'"):
        TrainerConfig(data="x", batch_size="8").validate()


def test_every_field_has_help_and_a_flag_or_is_handled_by_the_cli():
    """Flags come from the dataclass: a new TrainerConfig field must say what it is."""
    p = build_parser()
    train = p._subparsers._group_actions[0].choices["train"]
    by_dest = {a.dest: a for a in train._actions}
    for f in config_fields():
        assert f.metadata.get("help"), f"TrainerConfig.{f.name} has no help text (use config.setting)"
        if f.metadata.get("cli", True):
            a = by_dest[f.name]
            assert flag_name(f.name) in a.option_strings and a.help
    text = train.format_help()
    for needle in ("(default 4)", "--batch N", "--shuffle [on|off], --no-shuffle", "--total-batch-tokens",
                   "--sample-temperature", "--sample-top-k", "--report-to", "examples:", "--resume runs/d6"):
        assert needle in text, needle
    assert all(a.help for a in train._actions), [a.dest for a in train._actions if not a.help]


# ---------------------------------------------------------------- the command line
def test_defaults_and_missing_data(data, tmp_path):
    _one_line_exit_2(pyllmc("train"), "--data is required", "prepare-data")
    # only --data (and a small model, so the test is quick): the defaults run
    r = pyllmc("train", "--data", data / "train_000000.bin", "--model", "d1", "--steps", "3",
               "--out", tmp_path / "d", "--progress", "none", "--threads", "1")
    assert r.returncode == 0, r.stderr
    saved = read_config_file(tmp_path / "d" / "config.toml")
    assert (saved["batch_size"], saved["seq_len"], saved["lr"], saved["schedule"]) == (4, 64, 3e-4, "cosine")


def test_errors_name_the_flag_and_the_fix(data, tmp_path):
    base = ["--data", data / "train_000000.bin", "--out", tmp_path / "o"]
    _one_line_exit_2(pyllmc("train", *base, "--batch", "0"), "--batch", "must be an integer >= 1, got 0")
    _one_line_exit_2(pyllmc("train", *base, "--warmup", "500", "--steps", "10"), "--warmup")
    _one_line_exit_2(pyllmc("train", *base, "--beta1", "1.5"), "--beta1 must be in [0, 1)")
    _one_line_exit_2(pyllmc("train", *base, "--shuffle", "maybe"), "--shuffle", "on or off")
    _one_line_exit_2(pyllmc("train", *base, "--report-to", "wandb"), "--report-to", "tensorboard")
    _one_line_exit_2(pyllmc("train", "--data", tmp_path / "missing.bin", "--out", tmp_path / "m"),
                     f"--data {tmp_path / 'missing.bin'}: no such file")
    text = tmp_path / "input.txt"
    text.write_text("To be, or not to be, that is the question.\n" * 50)
    _one_line_exit_2(pyllmc("train", "--data", text, "--out", tmp_path / "t"), f"--data {text}", "text file",
                     f"pyllmc prepare-data {text}")
    cfgf = tmp_path / "bad.toml"
    cfgf.write_text("batch = 0\n")
    _one_line_exit_2(pyllmc("train", *base, "--config", cfgf), "--batch must be an integer >= 1")
    cfgf.write_text("bach = 4\n")
    _one_line_exit_2(pyllmc("train", *base, "--config", cfgf), "bad.toml", "unknown setting 'bach'")


def test_config_file_then_flags(data, tmp_path):
    cfgf = tmp_path / "run.toml"
    TrainerConfig(model="d1", data=str(data / "train_000000.bin"), max_seq_len=32, batch_size=2, seq_len=16,
                  steps=4, lr=1e-3, threads=1, progress="none", plot=False).to_file(cfgf)
    r = pyllmc("train", "--config", cfgf, "--lr", "2e-3", "--steps", "3", "--out", tmp_path / "run")
    assert r.returncode == 0, r.stderr
    saved = TrainerConfig.from_file(tmp_path / "run" / "config.toml")
    assert (saved.lr, saved.steps, saved.batch_size, saved.model) == (2e-3, 3, 2, "d1")
    assert [row["step"] for row in _rows(tmp_path / "run" / "metrics.jsonl")] == [1, 2, 3]


def test_resume_by_path_bit_identical_and_overrides(data, tmp_path):
    d = ["--data", data / "train_000000.bin", "--val-data", data / "val_000000.bin", "--steps", "8"]
    a = pyllmc("train", *SMALL, *d, "--out", tmp_path / "a")
    assert a.returncode == 0, a.stderr
    b1 = pyllmc("train", *SMALL, *d, "--out", tmp_path / "b", "--stop-at", "5")
    assert b1.returncode == 0, b1.stderr
    assert f"pyllmc train --resume {tmp_path / 'b'}" in b1.stdout
    # refused: a setting that would change the run; one line naming the flag, nothing written
    before = (tmp_path / "b" / "metrics.jsonl").read_bytes()
    _one_line_exit_2(pyllmc("train", "--resume", tmp_path / "b", "--lr", "1e-2"), "--lr", "cannot change when resuming",
                     "--lr 0.003")
    _one_line_exit_2(pyllmc("train", "--resume", tmp_path / "b", "--batch", "4"), "--batch")
    _one_line_exit_2(pyllmc("train", "--resume", tmp_path / "b", "--no-shuffle"), "--shuffle")
    _one_line_exit_2(pyllmc("train", "--resume", tmp_path / "b", "--out", tmp_path / "c"), "different")
    _one_line_exit_2(pyllmc("train", "--resume", tmp_path / "nope"), "nope", "no such run directory")
    _one_line_exit_2(pyllmc("train", "--resume", tmp_path / "b", "--overwrite"), "--overwrite", "--resume")
    assert (tmp_path / "b" / "metrics.jsonl").read_bytes() == before
    # nothing but the path: the saved settings, bit-identical to the uninterrupted run
    b2 = pyllmc("train", "--resume", tmp_path / "b")
    assert b2.returncode == 0, b2.stderr
    assert "resumed at step 5" in b2.stdout and "done: step 8/8" in b2.stdout
    for f in ("model.bin", "optimizer.bin"):
        assert (tmp_path / "a/ckpt_00000008" / f).read_bytes() == (tmp_path / "b/ckpt_00000008" / f).read_bytes()
    assert _rows(tmp_path / "a/metrics.jsonl") == _rows(tmp_path / "b/metrics.jsonl")
    # allowed: more steps and other cadences, said so; the saved config follows
    b3 = pyllmc("train", "--resume", tmp_path / "b", "--steps", "10", "--eval-every", "5")
    assert b3.returncode == 0, b3.stderr
    assert "resume: --steps 8 -> --steps 10 (so the result differs from an uninterrupted run)" in b3.stdout
    assert "resume: --eval-every 4 -> --eval-every 5" in b3.stdout
    assert "done: step 10/10" in b3.stdout
    saved = TrainerConfig.from_file(tmp_path / "b" / "config.toml")
    assert (saved.steps, saved.eval_every, saved.lr) == (10, 5, 3e-3)
    assert [r["step"] for r in _rows(tmp_path / "b/metrics.jsonl")] == list(range(1, 11))


def test_a_second_trainer_on_the_run_directory_is_refused(data, tmp_path):
    cfg = TrainerConfig(model="d1", data=str(data / "train_000000.bin"), max_seq_len=32, batch_size=2, seq_len=16,
                        steps=2, threads=1, progress="none", plot=False, out_dir=str(tmp_path / "run"))
    t1 = Trainer(cfg)
    t1.setup()
    with pytest.raises(StateError, match=f"another trainer \\(pid {os.getpid()}\\) is using this run directory"):
        Trainer(dataclasses.replace(cfg, overwrite=True)).setup()
    r = pyllmc("train", "--model", "d1", "--data", data / "train_000000.bin", "--out", tmp_path / "run",
               "--overwrite", "--steps", "2")
    _one_line_exit_2(r, str(tmp_path / "run"), "another trainer")
    t1.train()
    t1.close()  # releases the lock
    t2 = Trainer(dataclasses.replace(cfg, resume=True, steps=3))
    assert t2.train().final_step == 3
    t2.close()


def test_the_lock_goes_with_a_killed_process(tmp_path):
    code = ("import sys, time; from pyllmc.runlock import RunLock; l = RunLock(sys.argv[1]); "
            "print('locked', flush=True); time.sleep(60)")
    p = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "locked"
        from pyllmc.runlock import RunLock

        with pytest.raises(StateError, match=f"pid {p.pid}"):
            RunLock(tmp_path)
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    with RunLock(tmp_path) as lock:  # the kernel dropped the dead process's lock
        assert lock.held


def test_internal_error_is_not_bad_input(monkeypatch, capsys):
    import pyllmc.cli_train as cli_train

    def boom(args):
        raise ValueError("an unexpected bug")

    monkeypatch.setattr(cli_train, "resolve_config", boom)
    assert main(["train", "--data", "x.bin"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "in boom" in err
    assert err.strip().splitlines()[-1].startswith("pyllmc: internal error")
    assert "ValueError: an unexpected bug" in err.strip().splitlines()[-1]
    # a typed input error stays one line and exit 2; --debug adds its traceback
    monkeypatch.setattr(cli_train, "resolve_config", lambda a: (_ for _ in ()).throw(
        InvalidArgumentError("batch_size must be an integer >= 1, got 0", field="batch_size")))
    assert main(["train"]) == 2
    assert capsys.readouterr().err == "pyllmc: error: --batch must be an integer >= 1, got 0\n"
    assert main(["train", "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.endswith("pyllmc: error: --batch must be an integer >= 1, got 0\n")


def test_one_flag_vocabulary_across_commands():
    p = build_parser()
    sub = p._subparsers._group_actions[0].choices
    parse = lambda *a: p.parse_args(list(a))  # noqa: E731
    # --no-plot everywhere pictures are written; the old spellings still work
    assert parse("train", "--no-plot").plot is False and parse("demo", "--no-plot").plot is False
    for cmd, extra in (("bench", ["--model", "d1"]), ("parity", ["--model", "d1"])):
        assert parse(cmd, *extra, "--no-plot").plot is False and parse(cmd, *extra).plot is True
    assert parse("bench", "--model", "d1", "--no-plots").plot is False
    assert parse("parity", "--model", "d1", "--no-heatmap").plot is False
    # booleans are --x / --no-x (and --x on|off)
    assert parse("train", "--shuffle", "off").shuffle is False and parse("train", "--no-shuffle").shuffle is False
    assert parse("train", "--shuffle").shuffle is True and parse("train", "--decay-all").decay_matrices_only is False
    assert parse("demo", "--no-parity").parity is False
    assert parse("bench", "--model", "d1", "--no-kernels").kernels is False
    assert parse("parity", "--model", "d1", "--no-fp64").fp64 is False
    # --threads 0 is the OpenMP default (all cores) everywhere; demo's tuning is "auto"
    assert parse("train", "--threads", "0").threads == 0
    assert parse("sample", "--model", "d1", "--threads", "0").threads == 0
    assert parse("parity", "--model", "d1", "--threads", "0").threads == 0
    assert parse("bench", "--model", "d1", "--threads", "0").threads == [os.cpu_count()]
    assert parse("demo", "--threads", "0").threads == 0 and parse("demo").threads == "auto"
    # one default output root
    assert parse("bench", "--model", "d1").out == "runs/bench"
    assert parse("parity", "--model", "d1").out == "runs/parity"
    assert parse("demo").out == "runs/demo"
    assert "(default runs/train)" in sub["train"].format_help()
    for name, sp in sub.items():
        assert all(a.help for a in sp._actions), (name, [a.dest for a in sp._actions if not a.help])


from hypothesis import given, settings, strategies as st  # noqa: E402


@settings(max_examples=200, deadline=None)
@given(text=st.text(), lr=st.floats(allow_nan=False), steps=st.integers(1, 2**63 - 1),
       tags=st.lists(st.text(max_size=5), max_size=3))
def test_toml_writer_round_trips_any_value(text, lr, steps, tags):
    from pyllmc.config import _toml_module, to_toml

    doc = {"sample_prompt": text, "lr": lr, "steps": steps, "report_to": tags}
    assert _toml_module().loads(to_toml(doc)) == doc  # tomllib, or tomli before Python 3.11


def test_a_new_field_with_metadata_is_a_flag():
    """How precision / nproc / zero arrive: a field declared with setting() is a flag with its
    help, choices and default, and its typed value is a setting."""
    from pyllmc.cli import _Parser
    from pyllmc.cli_args import add_config_flags, given_settings
    from pyllmc.config import setting

    @dataclasses.dataclass
    class Extended(TrainerConfig):
        precision: str = setting("fp32", choices=("fp32", "bf16"), help="GEMM input precision")
        zero: int = setting(0, min=0, help="ZeRO stage for the AdamW state")

    p = _Parser(prog="t")
    add_config_flags(p, cls=Extended)
    text = p.format_help()
    assert "--precision {fp32,bf16}" in text and "GEMM input precision (default fp32)" in text
    assert "--zero N" in text
    args = p.parse_args(["--precision", "bf16", "--zero", "1", "--batch", "8"])
    assert given_settings(args, cls=Extended) == {"precision": "bf16", "zero": 1, "batch_size": 8}
    with pytest.raises(SystemExit):
        p.parse_args(["--precision", "fp8"])
    with pytest.raises(InvalidArgumentError, match="precision must be one of fp32, bf16"):
        Extended(data="x", precision="fp16").validate()


def test_numpy_and_path_values_are_written_as_plain_values(tmp_path):
    cfg = TrainerConfig(data=tmp_path / "x.bin", lr=np.float32(0.5), steps=np.int64(7))
    cfg.validate()
    cfg.to_file(tmp_path / "c.toml")
    back = TrainerConfig.from_file(tmp_path / "c.toml")
    assert (back.data, back.lr, back.steps) == (str(tmp_path / "x.bin"), 0.5, 7)
    back.validate()


def test_switches_next_to_positional_arguments():
    p = build_parser()
    a = p.parse_args(["prepare-data", "--eot", "in.txt", "--out", "d"])  # --eot does not take in.txt
    assert a.eot is True and a.inputs == ["in.txt"]
    assert p.parse_args(["prepare-data", "in.txt", "--no-eot", "--out", "d"]).eot is False
    assert p.parse_args(["bench", "--model", "d1", "--no-compile"]).compile is False
