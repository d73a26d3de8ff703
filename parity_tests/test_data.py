"""Token shards and the DataLoader: the --shuffle off contract, wrap-around, several shards,
deterministic resumable shuffling, bad ids reported with their position, bad files."""

import numpy as np
import pytest

from pyllmc.data import DataLoader, ShardWriter, read_shard, read_shard_header, resolve_shards, write_shard
from pyllmc.errors import BadFormatError, FileError, InvalidArgumentError


def _shard(path, tokens):
    write_shard(path, np.asarray(tokens, dtype=np.uint16))
    return str(path)


def test_shard_format(tmp_path):
    p = _shard(tmp_path / "a.bin", np.arange(100) % 50)
    raw = (tmp_path / "a.bin").read_bytes()
    h = np.frombuffer(raw[:1024], dtype="<i4")
    assert list(h[:3]) == [20240520, 1, 100] and not h[3:].any()
    assert len(raw) == 1024 + 200
    assert np.array_equal(read_shard(p), np.arange(100) % 50)
    assert read_shard_header(p) == 100
    assert not list(tmp_path.glob("*.tmp-*"))  # the temporary file was renamed


def test_shard_writer_streams(tmp_path):
    with ShardWriter(tmp_path / "s.bin") as w:
        for i in range(5):
            w.write(np.arange(i * 10, i * 10 + 10))
    assert np.array_equal(read_shard(tmp_path / "s.bin"), np.arange(50))


def test_shard_writer_abort_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with ShardWriter(tmp_path / "s.bin") as w:
            w.write(np.arange(10))
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_sequential_contract(tmp_path):
    """--shuffle off: batch i reads tokens [i*B*T, i*B*T + B*T + 1)."""
    N, B, T = 1000, 2, 8
    toks = (np.arange(N) * 7 + 3) % 65000
    p = _shard(tmp_path / "d.bin", toks)
    dl = DataLoader(p, B, T, shuffle=False)
    for i in range((N - 1) // (B * T)):
        x, y = dl.next_batch()
        assert x.dtype == np.int32 and x.shape == (B, T)
        win = toks[i * B * T: i * B * T + B * T + 1]
        assert np.array_equal(x.reshape(-1), win[:-1])
        assert np.array_equal(y.reshape(-1), win[1:])


def test_sequential_wraps(tmp_path):
    B, T = 2, 4  # 8 tokens per batch, 9 read
    toks = np.arange(30)
    p = _shard(tmp_path / "d.bin", toks)
    dl = DataLoader(p, B, T, shuffle=False)
    starts = []
    for _ in range(5):
        path, pos = dl.peek_position()
        x, _ = dl.next_batch()
        starts.append(int(x[0, 0]))
    # batches at 0, 8, 16; at 24 only 6 tokens remain (< 9): wrap to 0
    assert starts == [0, 8, 16, 0, 8]


def test_multi_shard_order_and_wrap(tmp_path):
    B, T = 1, 4
    a = _shard(tmp_path / "train_000.bin", np.arange(0, 12))  # batches at 0, 4 (8+5 > 12)
    b = _shard(tmp_path / "train_001.bin", np.arange(100, 110))  # batch at 0 (4+5 = 9 <= 10), then no room
    dl = DataLoader(str(tmp_path / "train_*.bin"), B, T, shuffle=False)
    assert dl.paths == [a, b]
    firsts = [int(dl.next_batch()[0][0, 0]) for _ in range(7)]
    assert firsts == [0, 4, 100, 104, 0, 4, 100]
    # a list works the same
    dl2 = DataLoader([a, b], B, T, shuffle=False)
    assert [int(dl2.next_batch()[0][0, 0]) for _ in range(7)] == firsts


def test_shuffle_deterministic_and_resumable(tmp_path):
    B, T = 3, 5
    toks = np.arange(2000) % 60000
    paths = [_shard(tmp_path / f"s{i}.bin", toks[i * 500:(i + 1) * 500]) for i in range(4)]

    def run(n, state=None, seed=7):
        dl = DataLoader(paths, B, T, shuffle=True, seed=seed)
        if state is not None:
            dl.load_state(state)
        return [dl.next_batch() for _ in range(n)], dl.state()

    full, _ = run(200)  # > one epoch (4 shards * 99 windows // 3 = 132 batches)
    first, st = run(77)
    rest, _ = run(123, state=st)
    for (x1, y1), (x2, y2) in zip(full, first + rest):
        assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    other, _ = run(5, seed=8)
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(full[:5], other))
    # each row is a window of T+1 consecutive tokens at a multiple of T, targets shifted by one
    for x, y in full:
        assert np.array_equal(x[:, 1:], y[:, :-1])
        assert np.all(x[:, 0] % T == 0) and np.all(np.diff(x, axis=1) == 1)
    # one epoch visits every window of every shard at most once
    epoch_rows = np.concatenate([x[:, 0] for x, _ in full[:132]])
    assert len(set(epoch_rows.tolist())) == len(epoch_rows)


def test_state_must_match(tmp_path):
    p = _shard(tmp_path / "d.bin", np.arange(500))
    st = DataLoader(p, 2, 4, shuffle=True, seed=1).state()
    with pytest.raises(InvalidArgumentError, match="seed"):
        DataLoader(p, 2, 4, shuffle=True, seed=2).load_state(st)
    with pytest.raises(InvalidArgumentError, match="B"):
        DataLoader(p, 3, 4, shuffle=True, seed=1).load_state(st)


def test_token_id_out_of_vocab_reported_with_position(tmp_path):
    toks = np.arange(100) % 50
    toks[37] = 300
    p = _shard(tmp_path / "d.bin", toks)
    dl = DataLoader(p, 2, 8, shuffle=False, vocab_size=257)
    dl.next_batch()  # tokens 0..16 are fine
    dl.next_batch()  # 16..32
    with pytest.raises(BadFormatError, match=r"d\.bin: token 37 has id 300.*257"):
        dl.next_batch()
    dl = DataLoader(p, 1, 4, shuffle=True, seed=0, vocab_size=257)
    with pytest.raises(BadFormatError, match=r"token 37 has id 300"):
        for _ in range(30):
            dl.next_batch()


@pytest.mark.parametrize("mutate, msg", [
    (lambda d: d[:10], "shorter than the 1024-byte"),
    (lambda d: (1234).to_bytes(4, "little") + d[4:], "bad shard magic 1234"),
    (lambda d: d[:4] + (2).to_bytes(4, "little") + d[8:], "unsupported shard version"),
    (lambda d: d[:-2], "header says"),
    (lambda d: d + b"\0\0", "header says"),
])
def test_bad_shards(tmp_path, mutate, msg):
    _shard(tmp_path / "d.bin", np.arange(100))
    bad = tmp_path / "bad.bin"
    bad.write_bytes(mutate((tmp_path / "d.bin").read_bytes()))
    with pytest.raises(BadFormatError, match=msg) as e:
        DataLoader(str(bad), 1, 4)
    assert str(bad) in str(e.value)


def test_missing_and_too_small(tmp_path):
    with pytest.raises(FileError, match="no such file"):
        DataLoader(str(tmp_path / "missing.bin"), 1, 4)
    with pytest.raises(FileError, match="no files match"):
        resolve_shards(str(tmp_path / "x_*.bin"))
    with pytest.raises(FileError, match="directory"):
        DataLoader(str(tmp_path), 1, 4)
    p = _shard(tmp_path / "small.bin", np.arange(8))
    with pytest.raises(BadFormatError, match="fewer than one batch"):
        DataLoader(p, 2, 4, shuffle=False)
    with pytest.raises(BadFormatError, match="fewer than one shuffled batch"):
        DataLoader(p, 2, 4, shuffle=True)
