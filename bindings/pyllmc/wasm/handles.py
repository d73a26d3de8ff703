"""The typed handle table of one guest instance.

A handle is an ``i32`` > 0 that packs a slot index (low 16 bits, 1..65535) and that slot's
generation (bits 16..30, 1..32767): freeing a slot bumps its generation, so a freed handle,
or an old handle whose slot was reused, no longer matches and is refused as stale. Each
entry has a kind ("model", "loader", "tokenizer", "job"); a handle of another kind, a
freed one, or a number never handed out are all INVALID_ARGUMENT, each with its own message.
``max_handles`` caps the live handles (LIMIT_EXCEEDED past it).
"""

from __future__ import annotations

from typing import Any, Dict, Iterator, List, Optional, Tuple

from .errors import invalid, limit

INDEX_BITS = 16
INDEX_MASK = (1 << INDEX_BITS) - 1
MAX_SLOTS = INDEX_MASK  # slot 0 is never used: handle 0 means "none"
GEN_MASK = (1 << 15) - 1


class HandleTable:
    def __init__(self, max_handles: Optional[int] = None):
        self.max_handles = max_handles
        self._slots: List[Optional[Tuple[str, Any]]] = [None]  # index -> (kind, object) or None
        self._gens: List[int] = [0]
        self._free: List[int] = []
        self.live = 0

    def add(self, kind: str, obj: Any, call: str) -> int:
        if self.max_handles is not None and self.live >= self.max_handles:
            raise limit(f"{call}: {self.live} handles are live, the limit is {self.max_handles} (--max-handles)")
        if self._free:
            i = self._free.pop()
        else:
            if len(self._slots) > MAX_SLOTS:
                raise limit(f"{call}: the handle table is full ({MAX_SLOTS} handles)")
            i = len(self._slots)
            self._slots.append(None)
            self._gens.append(0)
        g = self._gens[i] % GEN_MASK + 1  # 1..32767, never 0
        self._gens[i] = g
        self._slots[i] = (kind, obj)
        self.live += 1
        return (g << INDEX_BITS) | i

    def _locate(self, handle: int, call: str, what: str) -> Tuple[int, Tuple[str, Any]]:
        h = int(handle)
        i, g = h & INDEX_MASK, (h >> INDEX_BITS) & GEN_MASK
        if h <= 0 or h >> (INDEX_BITS + 15) or i == 0 or i >= len(self._slots) or self._gens[i] == 0:
            raise invalid(f"{call}: {what} {h} is not a handle this guest was given")
        entry = self._slots[i]
        if g != self._gens[i] or entry is None:
            raise invalid(f"{call}: {what} {h} is stale (it was freed)")
        return i, entry

    def get(self, handle: int, kind: str, call: str, what: Optional[str] = None) -> Any:
        what = what or kind
        _, (k, obj) = self._locate(handle, call, what)
        if k != kind:
            raise invalid(f"{call}: {what} {int(handle)} is a {k} handle, not a {kind}")
        return obj

    def remove(self, handle: int, kind: str, call: str) -> Any:
        obj = self.get(handle, kind, call)
        i = int(handle) & INDEX_MASK
        self._slots[i] = None
        self._free.append(i)
        self.live -= 1
        return obj

    def items(self) -> Iterator[Tuple[int, str, Any]]:
        for i, e in enumerate(self._slots):
            if e is not None:
                yield (self._gens[i] << INDEX_BITS) | i, e[0], e[1]

    def clear(self) -> Dict[str, int]:
        """Forget every entry; returns how many of each kind there were."""
        counts: Dict[str, int] = {}
        for _, k, _ in list(self.items()):
            counts[k] = counts.get(k, 0) + 1
        for i in range(1, len(self._slots)):
            if self._slots[i] is not None:
                self._slots[i] = None
                self._free.append(i)
        self.live = 0
        return counts
