"""TensorBoard event files, written and read without TensorBoard installed.

An event file is a sequence of TFRecords - ``uint64 length``, ``uint32 masked CRC-32C of the
length``, the bytes, ``uint32 masked CRC-32C of the bytes`` (little-endian) - each holding one
serialized ``tensorflow.Event`` protocol buffer. Only the fields TensorBoard needs for scalar
curves are written: ``wall_time`` (1, double), ``step`` (2, int64), ``file_version``
(3, string; the first record), ``summary`` (5) with ``Summary.Value`` entries of ``tag``
(1, string) and ``simple_value`` (2, float), and, for a resumed run, ``session_log`` (7) with
status START. ``read_events`` parses the scalars back, checking every CRC, so the tests can
read what ``EventWriter`` wrote.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from pathlib import Path
from typing import BinaryIO, List, NamedTuple, Optional, Union

from .errors import BadFormatError, FileError

FILE_VERSION = b"brain.Event:2"


def _crc32c_table() -> List[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1  # reflected Castagnoli polynomial
        table.append(c)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), as TFRecord uses; crc32c(b"123456789") == 0xE3069283."""
    c = 0xFFFFFFFF
    for b in data:
        c = _TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def masked_crc(data: bytes) -> int:
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # int64 two's complement, as protobuf encodes negative values
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field_bytes(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def encode_event(wall_time: float, step: int, *, file_version: Optional[bytes] = None,
                 scalars: Optional[dict] = None, session_start: bool = False) -> bytes:
    msg = bytearray(struct.pack("<Bd", 1 << 3 | 1, wall_time))
    if step:
        msg += _varint(2 << 3) + _varint(int(step))
    if file_version is not None:
        msg += _field_bytes(3, file_version)
    if session_start:  # session_log (7) { status (1) = START (1) }
        msg += _field_bytes(7, _varint(1 << 3) + _varint(1))
    if scalars:
        summary = b"".join(
            _field_bytes(1, _field_bytes(1, tag.encode()) + struct.pack("<Bf", 2 << 3 | 5, float(v)))
            for tag, v in scalars.items())
        msg += _field_bytes(5, summary)
    return bytes(msg)


def _record(data: bytes) -> bytes:
    header = struct.pack("<Q", len(data))
    return header + struct.pack("<I", masked_crc(header)) + data + struct.pack("<I", masked_crc(data))


class EventWriter:
    """Appends scalar events to a new event file in ``log_dir`` (created if needed).

    ``purge_step`` (a resumed run's first step): TensorBoard then drops the events of earlier
    files at that step and after, which a run that crashed after its last checkpoint had
    written, so each step shows once. It is the step of the file_version record (as torch's
    ``SummaryWriter(purge_step=...)`` writes it) and of a SessionLog START record, which is
    what TensorBoard's event accumulator purges on."""

    def __init__(self, log_dir: Union[str, "os.PathLike[str]"], purge_step: Optional[int] = None):
        self.log_dir = Path(log_dir)
        try:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}.pyllmc"
            self.path = self.log_dir / name
            n = 0
            while self.path.exists():  # two writers in one second in one process
                n += 1
                self.path = self.log_dir / f"{name}.{n}"
            self._f: Optional[BinaryIO] = open(self.path, "wb")
        except OSError as e:
            raise FileError(f"{self.log_dir}: cannot write TensorBoard events: {e.strerror or e}") from None
        self._f.write(_record(encode_event(time.time(), purge_step or 0, file_version=FILE_VERSION)))
        if purge_step:
            self._f.write(_record(encode_event(time.time(), purge_step, session_start=True)))

    def add_scalar(self, tag: str, value: float, step: int, wall_time: Optional[float] = None) -> None:
        if self._f is None:
            raise FileError(f"{self.path}: the event writer is closed")
        self._f.write(_record(encode_event(time.time() if wall_time is None else wall_time, step,
                                           scalars={tag: value})))

    def flush(self) -> None:
        if self._f is not None:
            self._f.flush()

    def close(self) -> None:
        f, self._f = self._f, None
        if f is not None:
            f.close()

    def __enter__(self) -> "EventWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Scalar(NamedTuple):
    wall_time: float
    step: int
    tag: str
    value: float


def _read_varint(b: bytes, i: int):
    shift = n = 0
    while True:
        if i >= len(b):
            raise BadFormatError("truncated varint")
        c = b[i]
        i += 1
        n |= (c & 0x7F) << shift
        shift += 7
        if not c & 0x80:
            return n, i


def _fields(b: bytes):
    """(field number, wire type, value) of one protobuf message."""
    i = 0
    while i < len(b):
        key, i = _read_varint(b, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = _read_varint(b, i)
        elif wt == 1:
            v, i = b[i:i + 8], i + 8
        elif wt == 2:
            n, i = _read_varint(b, i)
            v, i = b[i:i + n], i + n
        elif wt == 5:
            v, i = b[i:i + 4], i + 4
        else:
            raise BadFormatError(f"unsupported protobuf wire type {wt}")
        yield num, wt, v


def read_events(path: Union[str, "os.PathLike[str]"]) -> List[Scalar]:
    """The scalar events of one event file, each record's CRCs checked."""
    data = Path(path).read_bytes()
    out: List[Scalar] = []
    i = 0
    while i < len(data):
        if i + 12 > len(data):
            raise BadFormatError(f"{path}: truncated record header at byte {i}")
        header = data[i:i + 8]
        (n,) = struct.unpack("<Q", header)
        if struct.unpack("<I", data[i + 8:i + 12])[0] != masked_crc(header):
            raise BadFormatError(f"{path}: bad length CRC at byte {i}")
        body = data[i + 12:i + 12 + n]
        if len(body) != n or struct.unpack("<I", data[i + 12 + n:i + 16 + n])[0] != masked_crc(body):
            raise BadFormatError(f"{path}: bad data CRC at byte {i}")
        i += 16 + n
        wall, step = 0.0, 0
        values = []
        for num, wt, v in _fields(body):
            if num == 1 and wt == 1:
                (wall,) = struct.unpack("<d", v)
            elif num == 2 and wt == 0:
                step = v - (1 << 64) if v >= 1 << 63 else v
            elif num == 5 and wt == 2:
                for vn, vwt, vv in _fields(v):
                    if vn == 1 and vwt == 2:
                        tag, val = "", None
                        for fn, fwt, fv in _fields(vv):
                            if fn == 1 and fwt == 2:
                                tag = fv.decode()
                            elif fn == 2 and fwt == 5:
                                (val,) = struct.unpack("<f", fv)
                        if val is not None:
                            values.append((tag, val))
        out.extend(Scalar(wall, step, tag, val) for tag, val in values)
    return out
