"""llm.c token shards (docs/formats.md) and the data loader of the Trainer.

Shard: 256 int32 header ([0] magic 20240520, [1] version 1, [2] number of tokens N), then
N uint16 tokens; the file is exactly 1024 + 2*N bytes. Shards are memory-mapped.

``DataLoader(shards, B, T, shuffle=..., seed=...)`` yields ``(inputs, targets)`` int32
arrays of shape (B, T):

- ``shuffle=False`` (the contract of docs/formats.md): a batch reads the B*T+1 consecutive tokens
  starting at the current position; inputs are the first B*T, targets the same window
  shifted by one. The position starts at token 0 of the first shard and advances by B*T;
  when fewer than B*T+1 tokens remain in the shard, the loader moves to the start of the
  next shard (after the last, back to the first). With one shard that is large enough,
  batch i reads tokens [i*B*T, i*B*T + B*T + 1).
- ``shuffle=True``: each shard is cut into windows of T+1 tokens at stride T
  (window k = tokens [k*T, k*T + T + 1)); an epoch visits the shards in a random order and,
  inside each shard, its windows in a random order, B windows per batch (left-over windows
  that do not fill a batch are skipped). The orders are drawn from ``seed`` and the epoch
  number only, so the loader's whole state is three integers (``state()`` /
  ``load_state()``) and a resumed run sees the same batches as an uninterrupted one.

Token ids must be below the model's vocabulary size; a larger id raises
``BadFormatError`` naming the shard and the token's position in it.
"""

from __future__ import annotations

import glob as _glob
import os
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from .atomic import AtomicFile
from .errors import BadFormatError, FileError, InvalidArgumentError

SHARD_MAGIC = 20240520
SHARD_VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4

PathLike = Union[str, "os.PathLike[str]"]


# ------------------------------------------------------------------ shard files
def read_shard_header(path: PathLike) -> int:
    """Validate a shard's header and size; return its number of tokens."""
    path = os.fspath(path)
    from ._files import read_header_ints  # regular files only: a FIFO or device never blocks/hangs

    h, size = read_header_ints(path, "token shard", BadFormatError, HEADER_BYTES)
    if int(h[0]) != SHARD_MAGIC:
        raise BadFormatError(f"{path}: bad shard magic {int(h[0])} (expected {SHARD_MAGIC})")
    if int(h[1]) != SHARD_VERSION:
        raise BadFormatError(f"{path}: unsupported shard version {int(h[1])} (expected {SHARD_VERSION})")
    n = int(h[2])
    if n < 0:
        raise BadFormatError(f"{path}: negative token count {n}")
    if size != HEADER_BYTES + 2 * n:
        raise BadFormatError(f"{path}: file is {size} bytes but its header says {n} tokens ({HEADER_BYTES + 2 * n} bytes)")
    return n


def read_shard(path: PathLike, *, mmap: bool = True) -> np.ndarray:
    """The tokens of a shard as a uint16 array (memory-mapped by default)."""
    n = read_shard_header(path)
    if n == 0:
        return np.zeros(0, dtype=np.uint16)
    if mmap:
        return np.memmap(os.fspath(path), dtype="<u2", mode="r", offset=HEADER_BYTES, shape=(n,))
    return np.fromfile(os.fspath(path), dtype="<u2", offset=HEADER_BYTES, count=n)


def write_shard(path: PathLike, tokens: Any) -> int:
    """Write ``tokens`` (ids < 65536) as one shard, atomically. Returns the token count."""
    arr = np.asarray(tokens)
    if arr.ndim != 1:
        arr = arr.reshape(-1)
    if arr.size and (not np.issubdtype(arr.dtype, np.integer) or int(arr.min()) < 0 or int(arr.max()) > 65535):
        raise InvalidArgumentError("shard tokens must be integers in [0, 65535]")
    with ShardWriter(path) as w:
        w.write(arr)
    return int(arr.size)


class ShardWriter:
    """Streams tokens into one shard: a temporary file (pyllmc.atomic.AtomicFile) whose
    header is filled in on ``close()``, then fsynced and renamed, so a reader never sees a
    partial shard; ``abort()`` (or an exception in a ``with`` block) removes it."""

    def __init__(self, path: PathLike):
        self.path = os.fspath(path)
        self.count = 0
        self._af = AtomicFile(self.path, "wb", what="shard")
        self._f = self._af.file
        try:
            self._f.write(b"\0" * HEADER_BYTES)
        except OSError as e:
            self._af.abort()
            raise FileError(f"{self.path}: cannot write shard: {e.strerror or e}") from None

    def write(self, tokens: Any) -> None:
        arr = np.ascontiguousarray(tokens, dtype="<u2")
        try:
            self._f.write(arr.tobytes())
        except OSError as e:
            self.abort()
            raise FileError(f"{self.path}: cannot write shard: {e.strerror or e}") from None
        self.count += int(arr.size)

    def close(self) -> None:
        if self._f is None:
            return
        if self.count > 2**31 - 1:
            self.abort()
            raise InvalidArgumentError(f"{self.path}: {self.count} tokens do not fit one shard (int32 count)")
        header = np.zeros(HEADER_INTS, dtype="<i4")
        header[0], header[1], header[2] = SHARD_MAGIC, SHARD_VERSION, self.count
        f, self._f = self._f, None
        try:
            f.seek(0)
            f.write(header.tobytes())
        except OSError as e:
            self._af.abort()
            raise FileError(f"{self.path}: cannot write shard: {e.strerror or e}") from None
        self._af.commit()

    def abort(self) -> None:
        self._f = None
        self._af.abort()

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def resolve_shards(spec: Union[PathLike, Sequence[PathLike]]) -> List[str]:
    """Shard paths from one file, a list of files, or a glob pattern (sorted)."""
    if spec is None:
        raise InvalidArgumentError("no data given")
    if isinstance(spec, (str, os.PathLike)):
        items = [os.fspath(spec)]
    else:
        items = [os.fspath(s) for s in spec]
    if not items:
        raise InvalidArgumentError("no data shards given (empty list)")
    out: List[str] = []
    for s in items:
        if _glob.has_magic(s) and not os.path.exists(s):
            matches = sorted(_glob.glob(s))
            if not matches:
                raise FileError(f"{s}: no files match this pattern")
            out.extend(matches)
        else:
            if not os.path.exists(s):
                raise FileError(f"{s}: no such file")
            out.append(s)
    return out


# ------------------------------------------------------------------ loader
@dataclass
class _Shard:
    path: str
    ntok: int
    tokens: Optional[np.ndarray] = None

    def data(self) -> np.ndarray:
        if self.tokens is None:
            self.tokens = read_shard(self.path)
        return self.tokens


class DataLoader:
    """Batches of (inputs, targets) from token shards; see the module docstring."""

    def __init__(
        self,
        shards: Union[PathLike, Sequence[PathLike]],
        batch_size: int,
        seq_len: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        vocab_size: Optional[int] = None,
    ):
        if int(batch_size) < 1 or int(seq_len) < 1:
            raise InvalidArgumentError(f"batch size and sequence length must be >= 1 (got B={batch_size}, T={seq_len})")
        self.B, self.T = int(batch_size), int(seq_len)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.vocab_size = None if vocab_size is None else int(vocab_size)
        self.paths = resolve_shards(shards)
        self.shards = [_Shard(p, read_shard_header(p)) for p in self.paths]
        for s in self.shards:
            if self.shuffle:
                if (s.ntok - 1) // self.T < self.B:
                    raise BadFormatError(
                        f"{s.path}: {s.ntok} tokens hold {(max(s.ntok, 1) - 1) // self.T} windows of T+1 = {self.T + 1} "
                        f"tokens, fewer than one shuffled batch of B = {self.B}")
            elif s.ntok < self.B * self.T + 1:
                raise BadFormatError(
                    f"{s.path}: {s.ntok} tokens, fewer than one batch needs (B*T+1 = {self.B * self.T + 1})")
        self.num_tokens = sum(s.ntok for s in self.shards)
        self._perm_cache: Dict[Tuple[int, int], np.ndarray] = {}
        self.reset()

    # -------------------------------------------------------------- state
    def map_all(self) -> None:
        """Map every shard now instead of when first read: what the loader reads is then
        fixed, whatever happens to the paths later (a shard replaced, a symlink swapped in)."""
        for sh in self.shards:
            sh.data()

    def reset(self) -> None:
        """Back to the start: epoch 0, first shard, position 0."""
        self.epoch = 0
        self.shard_index = 0  # index into the (epoch's) shard order
        self.position = 0  # sequential: token offset; shuffled: window cursor in the shard order
        self.batches_served = 0

    def state(self) -> Dict[str, int]:
        """The loader's position, JSON-serialisable; ``load_state`` restores it."""
        return {"epoch": self.epoch, "shard_index": self.shard_index, "position": self.position,
                "batches_served": self.batches_served, "shuffle": int(self.shuffle), "seed": self.seed,
                "B": self.B, "T": self.T, "num_shards": len(self.shards)}

    def load_state(self, state: Dict[str, int]) -> None:
        # The state comes from a checkpoint's state.json, i.e. from a file: every field is
        # checked for presence and type, so a damaged file is an InvalidArgumentError, never
        # a KeyError/TypeError (or a negative epoch reaching the RNG's seed sequence).
        if not isinstance(state, dict):
            raise InvalidArgumentError(f"data loader state must be a dict, got {type(state).__name__}")

        def field(k: str, default: Optional[int] = None) -> int:
            v = state.get(k, default)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise InvalidArgumentError(f"data loader state: {k!r} must be an integer, got {v!r}")
            return int(v)

        for k, mine in (("shuffle", int(self.shuffle)), ("seed", self.seed), ("B", self.B), ("T", self.T),
                        ("num_shards", len(self.shards))):
            if k in state and field(k) != mine:
                raise InvalidArgumentError(
                    f"data loader state was saved with {k} = {state[k]}, this loader has {k} = {mine}")
        epoch, shard_index, position = field("epoch"), field("shard_index"), field("position")
        batches_served = field("batches_served", 0)
        if epoch < 0 or not 0 <= shard_index < len(self.shards) or position < 0 or batches_served < 0:
            raise InvalidArgumentError(f"data loader state {state} is out of range for {len(self.shards)} shards")
        self.epoch, self.shard_index, self.position = epoch, shard_index, position
        self.batches_served = batches_served

    # -------------------------------------------------------------- orders
    def _rng(self, *keys: int) -> np.random.Generator:
        return np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed & (2**63 - 1), *keys])))

    def _shard_order(self, epoch: int) -> np.ndarray:
        key = (epoch, -1)
        perm = self._perm_cache.get(key)
        if perm is None:
            n = len(self.shards)
            perm = self._rng(epoch, 0x5EED).permutation(n) if (self.shuffle and n > 1) else np.arange(n)
            self._remember(key, perm)
        return perm

    def _window_order(self, epoch: int, shard: int) -> np.ndarray:
        key = (epoch, shard)
        perm = self._perm_cache.get(key)
        if perm is None:
            nwin = (self.shards[shard].ntok - 1) // self.T
            perm = self._rng(epoch, shard + 1).permutation(nwin)
            self._remember(key, perm)
        return perm

    def _remember(self, key: Tuple[int, int], perm: np.ndarray) -> None:
        if len(self._perm_cache) > 8:
            self._perm_cache.clear()
        self._perm_cache[key] = perm

    def _current_shard(self) -> int:
        return int(self._shard_order(self.epoch)[self.shard_index])

    def _advance_shard(self) -> None:
        self.shard_index += 1
        self.position = 0
        if self.shard_index >= len(self.shards):
            self.shard_index = 0
            self.epoch += 1

    # -------------------------------------------------------------- batches
    def _check_ids(self, buf: np.ndarray, shard: _Shard, starts: np.ndarray, width: int) -> None:
        if self.vocab_size is None or buf.size == 0:
            return
        if int(buf.max()) < self.vocab_size:
            return
        flat = np.argwhere(buf.reshape(len(starts), width) >= self.vocab_size)[0]
        row, col = int(flat[0]), int(flat[1])
        pos = int(starts[row]) + col
        tok = int(buf.reshape(len(starts), width)[row, col])
        raise BadFormatError(
            f"{shard.path}: token {pos} has id {tok}, not below the model's vocabulary size {self.vocab_size}")

    def peek_position(self) -> Tuple[str, int]:
        """(shard path, token offset) where the next batch starts (sequential mode)."""
        return self.shards[self._current_shard()].path, self.position

    def next_batch(self) -> Tuple[np.ndarray, np.ndarray]:
        """The next (inputs, targets), each int32 of shape (B, T)."""
        B, T = self.B, self.T
        if not self.shuffle:
            shard = self.shards[self._current_shard()]
            if self.position + B * T + 1 > shard.ntok:
                self._advance_shard()
                shard = self.shards[self._current_shard()]
            start = self.position
            buf = np.asarray(shard.data()[start: start + B * T + 1])
            self._check_ids(buf, shard, np.array([start]), B * T + 1)
            buf = buf.astype(np.int32)
            self.position += B * T
            self.batches_served += 1
            return buf[:-1].reshape(B, T), buf[1:].reshape(B, T)
        # shuffled windows
        idx = self._current_shard()
        nwin = (self.shards[idx].ntok - 1) // T
        if self.position + B > nwin:
            self._advance_shard()
            idx = self._current_shard()
        shard = self.shards[idx]
        order = self._window_order(self.epoch, idx)
        starts = order[self.position: self.position + B].astype(np.int64) * T
        data = shard.data()
        rows = np.stack([np.asarray(data[s: s + T + 1]) for s in starts])
        self._check_ids(rows, shard, starts, T + 1)
        rows = rows.astype(np.int32)
        self.position += B
        self.batches_served += 1
        return np.ascontiguousarray(rows[:, :-1]), np.ascontiguousarray(rows[:, 1:])

    def __iter__(self) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
        while True:
            yield self.next_batch()

    def batches_per_epoch(self) -> int:
        """Batches until the loader wraps (approximately, for progress display)."""
        if self.shuffle:
            return sum(((s.ntok - 1) // self.T) // self.B for s in self.shards)
        return sum((s.ntok - 1) // (self.B * self.T) for s in self.shards)

    def __repr__(self) -> str:
        return (f"DataLoader({len(self.shards)} shard(s), {self.num_tokens} tokens, B={self.B}, T={self.T}, "
                f"shuffle={self.shuffle})")
