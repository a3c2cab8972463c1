"""Time-sortable job ids: ``job_`` + 26 Crockford base32 characters (ULID layout).

The first 10 characters encode the creation time in milliseconds and the last 16 are random, so
ordering by id follows creation order and keyset pagination by id needs no second column. Within
one process ids are strictly increasing even inside the same millisecond.
"""

from __future__ import annotations

import secrets
import threading
import time
from datetime import datetime

JOB_ID_PREFIX = "job_"
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_RANDOM_BITS = 80
_lock = threading.Lock()
_last = (0, 0)


def _encode(value: int, width: int) -> str:
    chars = []
    for _ in range(width):
        value, digit = divmod(value, 32)
        chars.append(_ALPHABET[digit])
    return "".join(reversed(chars))


def _next_parts() -> tuple[int, int]:
    """(ms, random); the random part is bumped when the clock has not moved, to stay monotonic."""
    global _last
    with _lock:
        now_ms = time.time_ns() // 1_000_000
        last_ms, last_rand = _last
        if now_ms <= last_ms and last_rand + 1 < (1 << _RANDOM_BITS):
            now_ms, rand = last_ms, last_rand + 1
        else:
            rand = secrets.randbits(_RANDOM_BITS - 1)  # headroom so bumps never overflow in practice
        _last = (now_ms, rand)
        return now_ms, rand


def new_job_id() -> str:
    ms, rand = _next_parts()
    return JOB_ID_PREFIX + _encode(ms, 10) + _encode(rand, 16)


def first_id_at(moment: datetime) -> str:
    """The smallest id a job created at ``moment`` can have: every job created before sorts below it."""
    return JOB_ID_PREFIX + _encode(int(moment.timestamp() * 1000), 10) + _ALPHABET[0] * 16


def is_job_id(value: str) -> bool:
    body = value[len(JOB_ID_PREFIX):]
    return value.startswith(JOB_ID_PREFIX) and len(body) == 26 and all(c in _ALPHABET for c in body)
