"""Tokenizers: a byte-level one that always works offline, GPT-2 BPE when it is available
locally, and the llm.c ``tokenizer.bin`` file (docs/formats.md) to store a vocabulary.

- ``ByteTokenizer``: ids 0..255 are the bytes of the UTF-8 text, id 256 is end-of-text
  (vocabulary 257). Needs nothing.
- ``GPT2Tokenizer``: GPT-2's BPE (50257 tokens, end-of-text 50256) through ``tiktoken``
  when its encoding files are already in tiktoken's cache, or through transformers'
  ``GPT2TokenizerFast`` from a local directory or the local Hugging Face cache. Nothing is
  ever downloaded: when neither is available, ``UnsupportedError`` says so.
- ``TableTokenizer``: the vocabulary of a ``tokenizer.bin`` file. It decodes (that is what
  llm.c uses the file for); it encodes only when the table is the byte tokenizer's.

``load_tokenizer(spec)`` maps a spec to one of these: ``"byte"``, ``"gpt2"``, a path to a
``tokenizer.bin`` file, or a directory holding HF tokenizer files or a ``tokenizer.bin``.

tokenizer.bin (llm.c): header of 256 uint32 - [0] magic 20240328, [1] version 2,
[2] vocab size, [3] end-of-text id - then for each id one uint8 length (> 0) and that many
bytes. Version 1 has no slot 3 and implies end-of-text 50256.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Union

import numpy as np

from .atomic import atomic_write
from .errors import BadFormatError, FileError, InvalidArgumentError, UnsupportedError
from .shapes import GPT2_VOCAB

TOKENIZER_MAGIC = 20240328
HEADER_WORDS = 256
HEADER_BYTES = HEADER_WORDS * 4
EOT_TEXT = "<|endoftext|>"
GPT2_EOT = GPT2_VOCAB - 1

PathLike = Union[str, "os.PathLike[str]"]


class Tokenizer:
    """Base class: ``encode(text) -> ids``, ``decode(ids) -> text``, ``token_bytes(id)``."""

    name: str = "tokenizer"
    vocab_size: int = 0
    eot_id: int = 0

    def encode(self, text: str) -> List[int]:
        raise NotImplementedError

    @property
    def can_encode(self) -> bool:
        return True

    def token_bytes(self, token_id: int) -> bytes:
        raise NotImplementedError

    def decode_bytes(self, ids: Iterable[int], *, eot_text: bytes = EOT_TEXT.encode()) -> bytes:
        out = bytearray()
        for i in ids:
            i = int(i)
            if i == self.eot_id:
                out += eot_text
            elif 0 <= i < self.vocab_size:
                out += self.token_bytes(i)
            else:
                raise InvalidArgumentError(f"token id {i} is outside the vocabulary [0, {self.vocab_size})")
        return bytes(out)

    def decode(self, ids: Iterable[int], *, eot_text: str = EOT_TEXT) -> str:
        """Text of ``ids``; the end-of-text token becomes ``eot_text``, bad UTF-8 becomes U+FFFD."""
        return self.decode_bytes(ids, eot_text=eot_text.encode("utf-8")).decode("utf-8", errors="replace")

    def save(self, path: PathLike) -> None:
        """Write this vocabulary as an llm.c tokenizer.bin (version 2)."""
        write_tokenizer_bin(path, [self.token_bytes(i) if i != self.eot_id else EOT_TEXT.encode()
                                   for i in range(self.vocab_size)], self.eot_id)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size}, eot_id={self.eot_id})"


class ByteTokenizer(Tokenizer):
    """Bytes of the UTF-8 text (ids 0..255) plus end-of-text (id 256)."""

    name = "byte"
    vocab_size = 257
    eot_id = 256

    def encode(self, text: Union[str, bytes]) -> List[int]:
        data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        return list(data)

    def encode_array(self, data: Union[str, bytes]) -> np.ndarray:
        """Token ids of ``data`` as a uint16 array (fast path for large inputs)."""
        raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
        return np.frombuffer(raw, dtype=np.uint8).astype(np.uint16)

    def token_bytes(self, token_id: int) -> bytes:
        if token_id == self.eot_id:
            return EOT_TEXT.encode()
        if not 0 <= token_id < 256:
            raise InvalidArgumentError(f"token id {token_id} is outside the vocabulary [0, 257)")
        return bytes([token_id])


class TableTokenizer(Tokenizer):
    """The vocabulary stored in a tokenizer.bin: decodes; encodes only a byte-level table."""

    name = "table"

    def __init__(self, tokens: Sequence[bytes], eot_id: int, source: str = ""):
        self.tokens = list(tokens)
        self.vocab_size = len(self.tokens)
        self.eot_id = int(eot_id)
        self.source = source
        self._byte_level = self.vocab_size == 257 and self.eot_id == 256 and all(
            self.tokens[i] == bytes([i]) for i in range(256))

    @property
    def can_encode(self) -> bool:
        return self._byte_level

    def encode(self, text: str) -> List[int]:
        if not self._byte_level:
            raise UnsupportedError(
                f"{self.source or 'this tokenizer.bin'}: a tokenizer.bin holds no BPE merges, so it can only "
                "decode; use --tokenizer gpt2 (needs tiktoken or transformers' GPT-2 tokenizer cached locally) "
                "or --tokenizer byte")
        return list(text.encode("utf-8"))

    def token_bytes(self, token_id: int) -> bytes:
        return self.tokens[token_id]


def _bytes_to_unicode() -> Dict[int, str]:
    """GPT-2's reversible map from bytes to printable unicode characters (used by its BPE
    vocabulary files): printable Latin-1 bytes map to themselves, the other 68 bytes to
    code points 256, 257, ... in byte order."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    table = {b: chr(b) for b in keep}
    n = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + n)
            n += 1
    return table


_UNICODE_TO_BYTE = {c: b for b, c in _bytes_to_unicode().items()}


class GPT2Tokenizer(Tokenizer):
    """GPT-2 BPE through tiktoken or transformers (whichever is available locally)."""

    name = "gpt2"

    def __init__(self, backend: str, impl, source: str = ""):
        self.backend = backend  # "tiktoken" or "transformers"
        self._impl = impl
        self.source = source
        if backend == "tiktoken":
            self.vocab_size = int(impl.n_vocab)
            self.eot_id = int(impl.eot_token)
        else:
            self.vocab_size = int(len(impl))
            eot = impl.eos_token_id
            if eot is None:
                eot = impl.convert_tokens_to_ids(EOT_TEXT)
            if eot is None or eot < 0:
                raise BadFormatError(f"{source}: the tokenizer has no end-of-text token")
            self.eot_id = int(eot)
        self._cache: Dict[int, bytes] = {}

    def encode(self, text: str) -> List[int]:
        if self.backend == "tiktoken":
            return list(self._impl.encode_ordinary(text))
        return list(self._impl.encode(text, add_special_tokens=False))

    def token_bytes(self, token_id: int) -> bytes:
        b = self._cache.get(token_id)
        if b is not None:
            return b
        if not 0 <= token_id < self.vocab_size:
            raise InvalidArgumentError(f"token id {token_id} is outside the vocabulary [0, {self.vocab_size})")
        if self.backend == "tiktoken":
            b = self._impl.decode_single_token_bytes(token_id)
        else:
            tok = self._impl.convert_ids_to_tokens(token_id)
            if tok is None:
                b = b""
            elif all(c in _UNICODE_TO_BYTE for c in tok):
                b = bytes(_UNICODE_TO_BYTE[c] for c in tok)
            else:  # an added/special token stored as plain text
                b = tok.encode("utf-8")
        self._cache[token_id] = b
        return b


# ------------------------------------------------------------------ GPT-2 BPE (local only)
_TIKTOKEN_GPT2_FILES = (
    "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe",
    "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json",
)


def _tiktoken_cache_dir() -> Path:
    for var in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if os.environ.get(var):
            return Path(os.environ[var])
    return Path(tempfile.gettempdir()) / "data-gym-cache"


def _gpt2_via_tiktoken() -> Optional[GPT2Tokenizer]:
    try:
        import tiktoken  # noqa: F401
    except ImportError:
        return None
    cache = _tiktoken_cache_dir()
    # tiktoken names each cached file by the SHA-1 of its URL; only call it when both files
    # are there, so it never goes to the network.
    if not all((cache / hashlib.sha1(u.encode()).hexdigest()).is_file() for u in _TIKTOKEN_GPT2_FILES):
        return None
    try:
        enc = tiktoken.get_encoding("gpt2")
    except Exception:
        return None
    return GPT2Tokenizer("tiktoken", enc, source=f"tiktoken cache {cache}")


def _gpt2_via_transformers(name_or_dir: str = "gpt2") -> Optional[GPT2Tokenizer]:
    try:
        from transformers import GPT2TokenizerFast
    except ImportError:
        return None
    try:
        tok = GPT2TokenizerFast.from_pretrained(name_or_dir, local_files_only=True)
        wrapped = GPT2Tokenizer("transformers", tok, source=str(name_or_dir))
    except Exception:
        return None
    # some transformers versions return an empty tokenizer instead of failing
    if wrapped.vocab_size <= 256 or (name_or_dir == "gpt2" and wrapped.vocab_size != GPT2_VOCAB):
        return None
    return wrapped


def gpt2_tokenizer() -> GPT2Tokenizer:
    """GPT-2 BPE from tiktoken's cache or the local Hugging Face cache; never downloads."""
    tok = _gpt2_via_tiktoken() or _gpt2_via_transformers("gpt2")
    if tok is None:
        raise UnsupportedError(
            "GPT-2 BPE is not available offline: neither tiktoken with its gpt2 files cached nor "
            "transformers with the gpt2 tokenizer in the local Hugging Face cache was found "
            "(nothing is downloaded); use the byte tokenizer (--tokenizer byte) or pass a local "
            "tokenizer directory")
    return tok


# ------------------------------------------------------------------ tokenizer.bin
def write_tokenizer_bin(path: PathLike, tokens: Sequence[bytes], eot_id: int) -> None:
    """Write an llm.c tokenizer.bin (version 2) atomically."""
    V = len(tokens)
    if not 0 <= eot_id < V:
        raise InvalidArgumentError(f"end-of-text id {eot_id} is outside the vocabulary [0, {V})")
    header = np.zeros(HEADER_WORDS, dtype="<u4")
    header[0], header[1], header[2], header[3] = TOKENIZER_MAGIC, 2, V, eot_id
    body = bytearray()
    for i, t in enumerate(tokens):
        t = bytes(t)
        if not 0 < len(t) < 256:
            raise InvalidArgumentError(f"token {i} is {len(t)} bytes long; tokenizer.bin needs 1..255")
        body.append(len(t))
        body += t
    with atomic_write(path, "wb", what="tokenizer") as f:
        f.write(header.tobytes())
        f.write(bytes(body))


def read_tokenizer_bin(path: PathLike) -> TableTokenizer:
    """Read and validate an llm.c tokenizer.bin (version 1 or 2)."""
    path = os.fspath(path)
    from ._files import open_regular  # regular files only: a FIFO or /dev/zero never hangs

    f, _ = open_regular(path, "tokenizer")
    try:
        with f:
            data = f.read()
    except OSError as e:
        raise FileError(f"{path}: cannot read tokenizer: {e.strerror or e}") from None
    if len(data) < HEADER_BYTES:
        raise BadFormatError(f"{path}: {len(data)} bytes, shorter than the 1024-byte tokenizer header")
    h = np.frombuffer(data[:HEADER_BYTES], dtype="<u4")
    if int(h[0]) != TOKENIZER_MAGIC:
        raise BadFormatError(f"{path}: bad tokenizer magic {int(h[0])} (expected {TOKENIZER_MAGIC})")
    version, V = int(h[1]), int(h[2])
    if version == 1:
        eot = GPT2_EOT
    elif version == 2:
        eot = int(h[3])
    else:
        raise BadFormatError(f"{path}: unsupported tokenizer version {version} (1 or 2)")
    if V < 1:
        raise BadFormatError(f"{path}: vocabulary size {V} must be positive")
    if not 0 <= eot < V:
        raise BadFormatError(f"{path}: end-of-text id {eot} is outside the vocabulary [0, {V})")
    tokens: List[bytes] = []
    pos = HEADER_BYTES
    for i in range(V):
        if pos >= len(data):
            raise BadFormatError(f"{path}: truncated at token {i} of {V}")
        n = data[pos]
        if n == 0:
            raise BadFormatError(f"{path}: token {i} has length 0")
        if pos + 1 + n > len(data):
            raise BadFormatError(f"{path}: truncated inside token {i} of {V}")
        tokens.append(data[pos + 1: pos + 1 + n])
        pos += 1 + n
    if pos != len(data):
        raise BadFormatError(f"{path}: {len(data) - pos} bytes of trailing data after {V} tokens")
    return TableTokenizer(tokens, eot, source=path)


def find_tokenizer_file(directory: PathLike) -> Optional[Path]:
    """``tokenizer.bin`` (or a single ``*tokenizer.bin``) in ``directory``, if there is one."""
    d = Path(directory)
    if not d.is_dir():
        return None
    if (d / "tokenizer.bin").is_file():
        return d / "tokenizer.bin"
    found = sorted(d.glob("*tokenizer.bin"))
    return found[0] if len(found) == 1 else None


def load_tokenizer(spec: Union[str, PathLike, Tokenizer]) -> Tokenizer:
    """A tokenizer from a spec: a Tokenizer, ``"byte"``, ``"gpt2"``, a tokenizer.bin path,
    or a directory with HF tokenizer files or a tokenizer.bin."""
    if isinstance(spec, Tokenizer):
        return spec
    s = os.fspath(spec)
    if s == "byte":
        return ByteTokenizer()
    if s == "gpt2":
        return gpt2_tokenizer()
    p = Path(s)
    if p.is_file() or (p.exists() and not p.is_dir()):  # a FIFO/device: read_tokenizer_bin says why not
        tok = read_tokenizer_bin(p)
        if tok.can_encode:
            return ByteTokenizer()
        if tok.vocab_size == GPT2_VOCAB and tok.eot_id == GPT2_EOT:
            try:  # GPT-2's vocabulary: use the real BPE for encoding when it is available
                bpe = gpt2_tokenizer()
                if all(bpe.token_bytes(i) == tok.tokens[i] for i in (0, 256, 1000, 50255)):
                    return bpe
            except UnsupportedError:
                pass
        return tok
    if p.is_dir():
        if any((p / f).is_file() for f in ("tokenizer.json", "vocab.json")):
            hf_tok = _gpt2_via_transformers(s)
            if hf_tok is None:
                raise BadFormatError(f"{s}: cannot load the tokenizer files in this directory with transformers")
            return hf_tok
        f = find_tokenizer_file(p)
        if f is not None:
            return load_tokenizer(f)
        raise FileError(f"{s}: no tokenizer.bin or tokenizer files in this directory")
    raise FileError(f"{s}: no such tokenizer file or directory (use 'byte', 'gpt2' or a tokenizer.bin path)")
