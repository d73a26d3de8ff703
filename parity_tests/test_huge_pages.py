"""The parameter-sized buffers of a CPU model (weights, gradients, AdamW moments) are advised
to use transparent huge pages, the activations are not, and the advice adds no resident
memory to a buffer nobody touches (ZeRO-1 leaves the model's own moments untouched). Read
from /proc/self/smaps: VmFlags "hg" is MADV_HUGEPAGE, set whatever the kernel's THP mode.
(The bf16 weight copy gets the same advice; it has no public pointer to check.)"""

import sys
from pathlib import Path

import pytest

from pyllmc import GPTConfig, Model

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux") or not Path("/proc/self/smaps").exists(),
                                reason="huge page advice is Linux-only (/proc/self/smaps)")

# about 15M parameters: each parameter-sized buffer (60 MB) spans many 2 MiB pages and is
# above glibc's largest mmap threshold (32 MiB), so calloc maps it fresh instead of clearing
# reused heap memory, as at every real model size
CFG = GPTConfig(max_seq_len=64, vocab_size=16384, padded_vocab_size=16384, num_layers=2, num_heads=4, channels=512)
HUGE = 2 << 20


def _mappings():
    """[(start, end, VmFlags)] of this process's mappings."""
    out = []
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()[0]
        if "-" in head and not head.endswith(":"):
            lo, hi = (int(x, 16) for x in head.split("-"))
            out.append([lo, hi, []])
        elif head == "VmFlags:" and out:
            out[-1][2] = line.split()[1:]
    return out


def _interior(addr: int, nbytes: int):
    """The mappings covering the whole 2 MiB pages inside [addr, addr + nbytes)."""
    lo, hi = (addr + HUGE - 1) // HUGE * HUGE, (addr + nbytes) // HUGE * HUGE
    assert hi - lo >= 2 * HUGE, "buffer too small for the test"
    maps = [m for m in _mappings() if m[0] < hi and lo < m[1]]
    assert maps and maps[0][0] <= lo and maps[-1][1] >= hi, "the buffer is not mapped"
    return maps


def _addr(m: Model, kind: str) -> int:
    return int(m.flat(kind).__array_interface__["data"][0])


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_parameter_buffers_are_advised_huge_pages(precision):
    with Model.from_config(CFG, max_batch=4, max_seq=64, threads=1, precision=precision) as m:
        n = m.config.num_params()
        for kind in ("params", "grads", "adam_m", "adam_v"):
            maps = _interior(_addr(m, kind), 4 * n)
            assert all("hg" in flags for _, _, flags in maps), (kind, [flags for _, _, flags in maps])
        # the activations keep ordinary pages (a smaller batch touches a prefix of each tensor)
        if precision == "fp32":  # (a bf16 model has no float activation pointer)
            acts = m.flat("acts")
            maps = _interior(int(acts.__array_interface__["data"][0]), 4 * acts.size)
            assert not any("hg" in flags for _, _, flags in maps)


def _resident_bytes(addr: int, nbytes: int) -> int:
    """Bytes of [addr, addr + nbytes) in memory: the present bit of each 4 KiB page's
    /proc/self/pagemap entry (readable by the process itself)."""
    page = 4096
    first, last = addr // page, (addr + nbytes - 1) // page
    with open("/proc/self/pagemap", "rb") as f:
        f.seek(8 * first)
        raw = f.read(8 * (last - first + 1))
    return page * sum(1 for i in range(0, len(raw), 8) if raw[i + 7] & 0x80)


def test_untouched_moments_stay_out_of_memory():
    with Model.from_config(CFG, max_batch=1, max_seq=64, threads=1) as m:
        n = m.config.num_params()
        addr = _addr(m, "adam_m")  # flat() is a view: it reads nothing
        assert _resident_bytes(addr, 4 * n) <= 4096  # malloc's chunk header shares the first page
        m.flat("adam_m")[:] = 1.0  # touched, it is resident (so the probe sees residency)
        assert _resident_bytes(addr, 4 * n) >= 4 * n
