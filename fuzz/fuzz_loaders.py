"""Fuzz harness for pyllmc's Python-facing file readers (atheris, or a built-in mutator).

    python fuzz/fuzz_loaders.py TARGET [--seconds S] [--runs N] [--seed K] [--artifacts DIR]
                                [--work DIR] [--no-atheris] [SEED_DIR ...]
    python fuzz/fuzz_loaders.py TARGET --replay FILE...

The invariant, for every target: hostile bytes make the reader either succeed (and what it
returns is then usable: batches in range, a decodable vocabulary, a model that runs a forward)
or raise a ``pyllmc.errors.PyllmcError`` subclass. Any other exception (KeyError, TypeError,
IndexError, RecursionError, a bare OSError, ...) is a crash: the CLI would print a traceback
for it instead of one line. A hang would show as a stalled run (timeouts, -timeout).

Targets (``TARGETS``): shard (read_shard_header/read_shard/DataLoader in both modes),
tokenizer (read_tokenizer_bin, decode, load_tokenizer), checkpoint_py (the reference reader
read_llmc_checkpoint), checkpoint_model (Model.from_checkpoint + one forward: the C loader
through the binding), optimizer (read_optimizer_state), state_json (checkpoint read_state and
DataLoader.load_state of its "data"), hf_config (load_hf_dir_params with a fuzzed config.json
next to a valid tiny model.safetensors).

With atheris (``pip install atheris``) the run is coverage-guided libFuzzer; without it (or
with --no-atheris) a deterministic mutation loop from --seed. Both print ``Done N runs``.
Crashing inputs go to --artifacts (crash-<sha1>); `--replay` re-runs saved inputs, and
parity_tests/test_fuzz_regressions.py replays every file under fuzz/regressions/.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import struct
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable, List, Optional

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SEEDS = {
    "shard": [HERE / "corpus" / "shard"],
    "tokenizer": [HERE / "corpus" / "tokenizer"],
    "checkpoint_py": [ROOT / "core_c" / "fuzz" / "corpus" / "checkpoint"],
    "checkpoint_model": [ROOT / "core_c" / "fuzz" / "corpus" / "checkpoint"],
    "optimizer": [HERE / "corpus" / "optimizer"],
    "state_json": [HERE / "corpus" / "state_json"],
    "hf_config": [HERE / "corpus" / "hf_config"],
}


class Harness:
    """One target: ``run(data)`` feeds the bytes to the reader in a scratch directory."""

    def __init__(self, target: str, workdir: Path):
        if target not in SEEDS:
            raise SystemExit(f"unknown target {target!r}; one of {', '.join(SEEDS)}")
        self.target = target
        self.dir = workdir
        self.count = 0
        self.fn: Callable[[bytes], None] = getattr(self, "_" + target)
        from pyllmc.errors import PyllmcError

        self.typed = PyllmcError
        if target == "hf_config":
            self._write_tiny_safetensors()

    def _fresh(self, name: str) -> Path:
        # a new file per input: a memory map of the previous one (np.memmap in read_shard)
        # must never see its file truncated under it
        self.count += 1
        d = self.dir / f"in{self.count % 4}"
        if d.exists():
            shutil.rmtree(d)
        d.mkdir()
        return d / name

    def run(self, data: bytes) -> None:
        """Raises (a non-typed exception or AssertionError) only on a real finding."""
        try:
            self.fn(data)
        except self.typed:
            pass

    # ------------------------------------------------------------------ targets
    def _shard(self, data: bytes) -> None:
        from pyllmc.data import DataLoader, read_shard, read_shard_header

        p = self._fresh("shard.bin")
        p.write_bytes(data)
        n = read_shard_header(p)
        assert len(read_shard(p)) == n
        for shuffle in (False, True):
            try:
                dl = DataLoader(p, 1, 2, shuffle=shuffle, vocab_size=50)
            except self.typed:
                continue
            for _ in range(3):
                x, y = dl.next_batch()
                assert x.shape == y.shape == (1, 2) and int(x.max()) < 50 and int(y.max()) < 50
            del dl

    def _tokenizer(self, data: bytes) -> None:
        from pyllmc.tokenizer import load_tokenizer, read_tokenizer_bin

        p = self._fresh("tokenizer.bin")
        p.write_bytes(data)
        tok = read_tokenizer_bin(p)
        assert 0 <= tok.eot_id < tok.vocab_size
        tok.decode(range(min(tok.vocab_size, 300)))
        load_tokenizer(str(p))

    def _checkpoint_py(self, data: bytes) -> None:
        from pyllmc.reference import read_llmc_checkpoint

        p = self._fresh("model.bin")
        p.write_bytes(data)
        cfg, params = read_llmc_checkpoint(p)
        assert params["wte"].shape == (cfg.padded_vocab_size, cfg.channels)

    def _checkpoint_model(self, data: bytes) -> None:
        import numpy as np

        from pyllmc import Model

        p = self._fresh("model.bin")
        p.write_bytes(data)
        with Model.from_checkpoint(p, max_batch=1, max_seq=1, threads=1) as m:
            V = m.config.vocab_size
            m.forward(np.zeros((1, 1), np.int32), np.full((1, 1), V - 1, np.int32))

    def _optimizer(self, data: bytes) -> None:
        from pyllmc.checkpoint import read_optimizer_state

        p = self._fresh("optimizer.bin")
        p.write_bytes(data)
        m, v, _ = read_optimizer_state(p)
        assert m.shape == v.shape
        read_optimizer_state(p, num_params=6)

    def _state_json(self, data: bytes) -> None:
        from pyllmc.checkpoint import read_state
        from pyllmc.data import DataLoader, write_shard

        p = self._fresh("state.json")
        p.write_bytes(data)
        (p.parent / "model.bin").write_bytes(b"")
        (p.parent / "optimizer.bin").write_bytes(b"")
        doc = read_state(p.parent)
        if "data" in doc:
            shard = p.parent / "train.bin"
            write_shard(shard, list(range(40)))
            DataLoader(shard, 2, 4).load_state(doc["data"])

    def _write_tiny_safetensors(self) -> None:
        import numpy as np
        from safetensors.numpy import save_file

        V, T, C, L = 11, 8, 8, 1
        rng = np.random.default_rng(0)
        t = {"wte.weight": (V, C), "wpe.weight": (T, C), "ln_f.weight": (C,), "ln_f.bias": (C,)}
        for l in range(L):
            t.update({f"h.{l}.ln_1.weight": (C,), f"h.{l}.ln_1.bias": (C,), f"h.{l}.attn.c_attn.weight": (C, 3 * C),
                      f"h.{l}.attn.c_attn.bias": (3 * C,), f"h.{l}.attn.c_proj.weight": (C, C),
                      f"h.{l}.attn.c_proj.bias": (C,), f"h.{l}.ln_2.weight": (C,), f"h.{l}.ln_2.bias": (C,),
                      f"h.{l}.mlp.c_fc.weight": (C, 4 * C), f"h.{l}.mlp.c_fc.bias": (4 * C,),
                      f"h.{l}.mlp.c_proj.weight": (4 * C, C), f"h.{l}.mlp.c_proj.bias": (C,)})
        self.safetensors = self.dir / "tiny.safetensors"
        save_file({k: rng.standard_normal(s).astype(np.float32) for k, s in t.items()}, str(self.safetensors))

    def _hf_config(self, data: bytes) -> None:
        from pyllmc.reference import load_hf_dir_params

        p = self._fresh("config.json")
        p.write_bytes(data)
        shutil.copyfile(self.safetensors, p.parent / "model.safetensors")
        cfg, params = load_hf_dir_params(p.parent)
        assert params["wte"].shape == (cfg.padded_vocab_size, cfg.channels)


# ---------------------------------------------------------------------- built-in mutator
_INTERESTING = [0, -1, 1, 2, 7, 8, 255, 256, 1024, 65535, 65536, 50257, 2**31 - 1, -2**31, 20240520,
                20240328, 20240326, 20250117]


def mutate(rng: random.Random, data: bytes, pool: List[bytes], max_len: int) -> bytes:
    """A few random edits (the same kinds as core_c/fuzz/standalone_main.c), plus text-ish
    ones for the JSON targets: digits, quotes and brackets."""
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(8)
        if op == 0 and b:
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        elif op == 1 and b:
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif op == 2 and len(b) >= 4:
            slot = rng.randrange(len(b) // 4)
            if rng.random() < 0.5:
                slot %= 16
            b[slot * 4: slot * 4 + 4] = struct.pack("<i", rng.choice(_INTERESTING))
        elif op == 3 and b:
            del b[rng.randrange(len(b)):]
        elif op == 4:
            pos = rng.randrange(len(b) + 1)
            b[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif op == 5 and pool:
            other = rng.choice(pool)
            if other:
                start = rng.randrange(len(other))
                pos = rng.randrange(len(b) + 1)
                b[pos:] = other[start:]
        elif op == 6:
            pos = rng.randrange(len(b) + 1)
            b[pos:pos] = rng.choice([b"-1", b"0", b"1e309", b"null", b'"x"', b"[", b"{", b"]", b"}",
                                     b"99999999999999999999", b"true", b"NaN"])
        elif op == 7 and b:
            pos = rng.randrange(len(b))
            b[pos:pos + 1] = b""
    return bytes(b[:max_len])


def read_seeds(dirs: List[Path]) -> List[bytes]:
    out = []
    for d in dirs:
        if d.is_file():
            out.append(d.read_bytes())
        elif d.is_dir():
            out += [p.read_bytes() for p in sorted(d.iterdir()) if p.is_file()]
    return out


def save_crash(artifacts: Path, data: bytes) -> Path:
    artifacts.mkdir(parents=True, exist_ok=True)
    p = artifacts / f"crash-{hashlib.sha1(data).hexdigest()}"
    p.write_bytes(data)
    return p


def run_builtin(h: Harness, seeds: List[bytes], seconds: float, runs: Optional[int], seed: int,
                artifacts: Path, max_len: int) -> int:
    rng = random.Random(seed)
    pool = list(seeds) or [b""]
    done = 0
    t_end = time.monotonic() + seconds
    inputs = iter(list(seeds))  # every seed once first
    while (runs is None or done < runs) and time.monotonic() < t_end:
        data = next(inputs, None)
        if data is None:
            data = mutate(rng, rng.choice(pool), pool, max_len)
        try:
            h.run(data)
        except Exception:
            traceback.print_exc()
            path = save_crash(artifacts, data)
            print(f"==CRASH== {h.target}: non-typed exception; input saved to {path}", file=sys.stderr)
            print(f"Done {done + 1} runs (crashed)", file=sys.stderr)
            return 1
        done += 1
        if rng.random() < 0.02 and len(pool) < 2000:
            pool.append(data)  # a crude corpus: keep some mutants as parents
    print(f"Done {done} runs in {seconds:.0f} second(s) (built-in mutator, seed {seed})", file=sys.stderr)
    return 0


def run_atheris(h: Harness, seed_dirs: List[Path], work: Path, seconds: float, runs: Optional[int],
                seed: int, artifacts: Path, max_len: int) -> int:
    import atheris

    artifacts.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)

    def one(data: bytes) -> None:
        h.run(data)

    args = [sys.argv[0], f"-max_total_time={int(seconds)}", f"-seed={seed}", f"-max_len={max_len}",
            f"-artifact_prefix={artifacts}/", "-print_final_stats=1", "-timeout=20", "-rss_limit_mb=4096"]
    if runs is not None:
        args.append(f"-runs={runs}")
    args += [str(work)] + [str(d) for d in seed_dirs if d.exists()]
    atheris.Setup(args, one)
    atheris.Fuzz()  # exits the process
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("target", choices=sorted(SEEDS))
    ap.add_argument("seeds", nargs="*", type=Path, help="seed corpus directories (default: the checked-in ones)")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--runs", type=int, default=None)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--max-len", type=int, default=8192)
    ap.add_argument("--artifacts", type=Path, default=Path("build-fuzz") / "crashes")
    ap.add_argument("--work", type=Path, default=None, help="working corpus directory (atheris adds to it)")
    ap.add_argument("--no-atheris", action="store_true", help="use the built-in mutator even if atheris is installed")
    ap.add_argument("--replay", nargs="+", type=Path, help="run these inputs once each; exit 1 if any crashes")
    a = ap.parse_args(argv)

    use_atheris = not a.no_atheris and a.replay is None
    if use_atheris:
        try:
            import atheris
        except ImportError:
            print("fuzz_loaders: atheris is not installed: using the built-in mutator", file=sys.stderr)
            use_atheris = False
    if a.target in ("checkpoint_py", "hf_config"):
        import torch  # noqa: F401  (pyllmc.reference needs it; imported before instrumentation)
    if use_atheris:
        with atheris.instrument_imports(include=["pyllmc"]):
            import pyllmc  # noqa: F401
            import pyllmc.checkpoint  # noqa: F401
            import pyllmc.data  # noqa: F401
            import pyllmc.tokenizer  # noqa: F401
            if a.target in ("checkpoint_py", "hf_config"):
                import pyllmc.reference  # noqa: F401

    scratch = Path(tempfile.mkdtemp(prefix=f"pyllmc-fuzz-{a.target}-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
    try:
        h = Harness(a.target, scratch)
        if a.replay is not None:
            bad = 0
            for p in a.replay:
                try:
                    h.run(p.read_bytes())
                    print(f"{p}: ok")
                except Exception as e:
                    bad += 1
                    print(f"{p}: CRASH {type(e).__name__}: {e}")
            print(f"Done {len(a.replay)} runs (replay)")
            return 1 if bad else 0
        seed_dirs = a.seeds or SEEDS[a.target]
        if use_atheris:
            work = a.work or Path("build-fuzz") / "corpus" / a.target
            return run_atheris(h, seed_dirs, work, a.seconds, a.runs, a.seed, a.artifacts, a.max_len)
        return run_builtin(h, read_seeds(seed_dirs), a.seconds, a.runs, a.seed, a.artifacts, a.max_len)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
