"""The guest's thread yields to training: Linux SCHED_BATCH while guest code runs.

A guest that watches its job wakes up often (a thousand times a second, say) while the
job's threads occupy every core. An ordinary thread that wakes preempts one of them at
once; the job's other threads then wait for it at the next OpenMP barrier, so each
wake-up costs the job several times the guest's own few microseconds (measured: 8% on a
2-core machine at 1000 polls a second). A SCHED_BATCH thread does not preempt on waking:
it runs when a core falls idle or at the next scheduler tick, with its full fair share of
CPU time (it is not starved, as SCHED_IDLE or a high nice value would be), so its polls
come a few milliseconds late in bursts instead of one by one.

So the thread that runs guest code is SCHED_BATCH for as long as it does (``guest_code``),
and goes back to the policy it had afterwards. The host functions run at that original
policy (``host_work``), all but the few cheap ones a watching guest calls in its loop
(``job_status``, ``last_error``, ``job_error``): so training, evaluation and sampling in the
guest's thread, and the thread of a training job (threads inherit their creator's policy),
are ordinary, and so are the OpenMP threads they create (those keep the policy they were
created with). Elsewhere than Linux, and where the call is refused, nothing changes.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator, Optional, Tuple

_HAVE = hasattr(os, "sched_setscheduler") and hasattr(os, "SCHED_BATCH") and hasattr(os, "SCHED_OTHER")


def current() -> Optional[Tuple[int, int]]:
    """The calling thread's (policy, priority), or None where that cannot be read."""
    if not _HAVE:
        return None
    try:
        return os.sched_getscheduler(0), os.sched_getparam(0).sched_priority
    except OSError:
        return None


def _set(policy: Tuple[int, int]) -> bool:
    try:
        os.sched_setscheduler(0, policy[0], os.sched_param(policy[1]))
        return True
    except (OSError, AttributeError):
        return False


@contextmanager
def guest_code() -> Iterator[Optional[Tuple[int, int]]]:
    """Run the block (guest code) as SCHED_BATCH if the thread is an ordinary one; yields the
    thread's own policy (what host work for this guest should run at), None if unknown."""
    before = current()
    changed = before is not None and before[0] == os.SCHED_OTHER and _set((os.SCHED_BATCH, 0))
    try:
        yield before
    finally:
        if changed and before is not None:
            _set(before)


@contextmanager
def host_work(policy: Optional[Tuple[int, int]]) -> Iterator[None]:
    """Run the block at ``policy`` (the one ``guest_code`` yielded), then restore."""
    now = current()
    changed = policy is not None and now is not None and now != policy and _set(policy)
    try:
        yield
    finally:
        if changed and now is not None:
            _set(now)

