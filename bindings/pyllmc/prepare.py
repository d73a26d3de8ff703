"""Text files -> llm.c token shards plus a tokenizer file (``pyllmc prepare-data``).

Inputs are read in blocks of about 1 MiB cut at line ends (so no UTF-8 character or line
is split), tokenized block by block and streamed into shards of at most ``shard_tokens``
tokens: ``train_000000.bin``, ``train_000001.bin``, ... and ``val_000000.bin``, ...,
plus ``tokenizer.bin``. Each input file is one document, preceded by the end-of-text
token (``eot=True``). The last ``val_frac`` of the input bytes (cut at a line end) go to
the validation shards. With the byte tokenizer the result is exactly the bytes; with BPE,
tokenizing block by block can differ from tokenizing a whole file at once only where a
pre-token would span a block boundary (a run of blank lines), which is harmless.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, List, Optional, Sequence, Union

import numpy as np

from .data import ShardWriter
from .errors import FileError, InvalidArgumentError
from .tokenizer import ByteTokenizer, Tokenizer, load_tokenizer

BLOCK_BYTES = 1 << 20


@dataclass
class PrepareResult:
    out_dir: str
    tokenizer: str
    vocab_size: int
    train_shards: List[str] = field(default_factory=list)
    val_shards: List[str] = field(default_factory=list)
    train_tokens: int = 0
    val_tokens: int = 0
    input_bytes: int = 0


class _ShardSeries:
    """Shards ``{prefix}_000000.bin``, ... of at most ``limit`` tokens each."""

    def __init__(self, out: Path, prefix: str, limit: int):
        self.out, self.prefix, self.limit = out, prefix, limit
        self.paths: List[str] = []
        self.total = 0
        self._w: Optional[ShardWriter] = None

    def write(self, ids: np.ndarray) -> None:
        pos = 0
        while pos < ids.size:
            if self._w is None:
                path = self.out / f"{self.prefix}_{len(self.paths):06d}.bin"
                self._w = ShardWriter(path)
                self.paths.append(str(path))
            room = self.limit - self._w.count
            take = ids[pos: pos + room]
            self._w.write(take)
            pos += take.size
            self.total += int(take.size)
            if self._w.count >= self.limit:
                self._w.close()
                self._w = None

    def close(self) -> None:
        if self._w is not None:
            self._w.close()
            self._w = None

    def abort(self) -> None:
        if self._w is not None:
            self._w.abort()
            self._w = None


def _blocks(path: str) -> Iterator[bytes]:
    """Blocks of about BLOCK_BYTES that end at a newline (the last one may not)."""
    carry = b""
    with open(path, "rb") as f:
        while True:
            chunk = f.read(BLOCK_BYTES)
            if not chunk:
                break
            data = carry + chunk
            cut = data.rfind(b"\n")
            if cut < 0:
                carry = data
                continue
            yield data[: cut + 1]
            carry = data[cut + 1:]
    if carry:
        yield carry


def _encode(tok: Tokenizer, data: bytes) -> np.ndarray:
    if isinstance(tok, ByteTokenizer):
        return tok.encode_array(data)
    return np.asarray(tok.encode(data.decode("utf-8", errors="replace")), dtype=np.int64)


def prepare_data(
    inputs: Sequence[Union[str, "os.PathLike[str]"]],
    out_dir: Union[str, "os.PathLike[str]"],
    *,
    tokenizer: Any = "byte",
    val_frac: float = 0.1,
    shard_tokens: int = 100_000_000,
    eot: bool = True,
    progress: Optional[bool] = None,
) -> PrepareResult:
    """Tokenize ``inputs`` into shards in ``out_dir``; see the module docstring."""
    files = [os.fspath(p) for p in inputs]
    if not files:
        raise InvalidArgumentError("no input files given")
    for f in files:
        if not os.path.isfile(f):
            raise FileError(f"{f}: no such file")
    if not 0.0 <= val_frac < 1.0:
        raise InvalidArgumentError(f"val_frac must be in [0, 1), got {val_frac}")
    if shard_tokens < 1:
        raise InvalidArgumentError(f"shard_tokens must be >= 1, got {shard_tokens}")
    tok = load_tokenizer(tokenizer)
    if not tok.can_encode:
        raise InvalidArgumentError(f"tokenizer {tokenizer!r} cannot encode text")
    if tok.vocab_size > 65536:
        raise InvalidArgumentError(f"vocabulary of {tok.vocab_size} does not fit uint16 shards")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sizes = [os.path.getsize(f) for f in files]
    total = sum(sizes)
    split_at = int(total * (1.0 - val_frac)) if val_frac > 0 else total + 1
    if progress is None:
        progress = sys.stderr.isatty()
    bar = None
    if progress:
        try:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, unit="B", unit_scale=True, desc="tokenizing", file=sys.stderr)
        except ImportError:
            bar = None
    train = _ShardSeries(out, "train", shard_tokens)
    val = _ShardSeries(out, "val", shard_tokens)
    seen = 0
    eot_arr = np.array([tok.eot_id], dtype=np.int64)
    try:
        for f in files:
            first = True
            for block in _blocks(f):
                parts = [(block, seen < split_at)]
                if seen < split_at < seen + len(block):  # the train/val split is in this block
                    cut = block.find(b"\n", split_at - seen)
                    cut = len(block) if cut < 0 else cut + 1
                    parts = [(block[:cut], True), (block[cut:], False)]
                for part, to_train in parts:
                    if not part and not (eot and first):
                        continue
                    ids = _encode(tok, part) if part else np.zeros(0, dtype=np.int64)
                    if eot and first:
                        ids = np.concatenate([eot_arr, ids.astype(np.int64)])
                    first = False
                    (train if to_train else val).write(ids)
                seen += len(block)
                if bar is not None:
                    bar.update(len(block))
            if first and eot:  # empty file: still one document
                (train if seen < split_at else val).write(eot_arr)
        train.close()
        val.close()
    except BaseException:
        train.abort()
        val.abort()
        raise
    finally:
        if bar is not None:
            bar.close()
    tok_path = out / "tokenizer.bin"
    tok.save(tok_path)
    return PrepareResult(out_dir=str(out), tokenizer=str(tok_path), vocab_size=tok.vocab_size,
                         train_shards=train.paths, val_shards=val.paths, train_tokens=train.total,
                         val_tokens=val.total, input_bytes=total)
