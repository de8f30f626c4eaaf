"""Event ids: UUIDv7 strings, unique, ordered by the millisecond they were made in, and another
series in a forked child."""

from __future__ import annotations

import os
import time
import uuid

from broadcast_lifecycle.events import new_event_id


def test_event_ids_are_unique_uuid7_in_time_order() -> None:
    """100,000 ids are distinct RFC 9562 version-7 UUIDs whose first 48 bits are the millisecond."""
    before = time.time_ns() // 1_000_000
    ids = [new_event_id() for _ in range(100_000)]
    after = time.time_ns() // 1_000_000
    parsed = [uuid.UUID(i) for i in ids]
    assert len(set(ids)) == len(ids)
    assert {(u.version, u.variant) for u in parsed} == {(7, uuid.RFC_4122)}
    assert [str(u) for u in parsed] == ids
    stamps = [u.int >> 80 for u in parsed]
    assert before <= stamps[0] and stamps == sorted(stamps) and stamps[-1] <= after


def test_a_forked_child_makes_other_ids() -> None:
    """A child after fork draws its own node bits, so its ids never repeat the parent's."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: send one id made right after the fork
        os.write(write, new_event_id().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    mine = new_event_id()
    assert uuid.UUID(child).version == 7
    assert child[19:] != mine[19:]  # the node bits (and the counter) differ
