"""The hot-row harness the benchmarks share: threads released together by a barrier, each round on a
fresh broadcast."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


def hot_rounds(threads: int, warmup: int, rounds: int, prepare: Callable[[int], int],
               work: Callable[[int, int], bool]) -> tuple[list[float], list[int], list[BaseException]]:
    """``threads`` threads run ``work(thread, entity_id)`` at once on a fresh ``prepare(round)``
    broadcast per round; returns the seconds and winners of each of the ``rounds`` rounds after
    ``warmup`` untimed ones, and what ``work`` raised (a raising thread counts as a loser)."""
    barrier = threading.Barrier(threads + 1)
    current = [0]
    won = [False] * threads
    errors: list[BaseException] = []
    done = threading.Event()

    def worker(index: int) -> None:
        while True:
            barrier.wait()
            if done.is_set():
                return
            try:
                won[index] = work(index, current[0])
            except Exception as exc:
                won[index] = False
                errors.append(exc)
            barrier.wait()

    workers = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
    for thread in workers:
        thread.start()
    seconds: list[float] = []
    winners: list[int] = []
    try:
        for number in range(warmup + rounds):
            current[0] = prepare(number)
            started = time.perf_counter()
            barrier.wait()  # go
            barrier.wait()  # everyone done
            if number >= warmup:
                seconds.append(time.perf_counter() - started)
                winners.append(sum(won))
    finally:
        done.set()
        barrier.wait()
        for thread in workers:
            thread.join()
    return seconds, winners, errors
