"""Shared pieces of the benchmarks: each measurement in a fresh process, its peak RSS."""

from __future__ import annotations

import multiprocessing as mp
import queue
import resource


def peak_mb() -> float:
    """Peak resident set size of this process, MB (Linux ``ru_maxrss`` is in kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_isolated(target, *args):
    """Run ``target(*args, q)`` in a spawned process and return what it puts on ``q``.

    A child that dies without reporting (a crash in a compiled library, an OOM kill)
    raises ``RuntimeError`` instead of blocking forever.
    """
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=target, args=(*args, q))
    p.start()
    while True:
        try:
            out = q.get(timeout=1.0)
            break
        except queue.Empty:
            if not p.is_alive():
                raise RuntimeError(f"{target.__name__}{args!r} died, exit code "
                                   f"{p.exitcode}") from None
    p.join()
    return out
