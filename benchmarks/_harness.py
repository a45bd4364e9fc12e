"""Shared pieces of the benchmarks: each measurement in a fresh process, its peak RSS."""

from __future__ import annotations

import multiprocessing as mp
import queue
import resource


def peak_mb() -> float:
    """Peak resident set size of this process, MB (Linux ``ru_maxrss`` is in kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_isolated(target, *args, env=None):
    """Run ``target(*args, q)`` in a spawned process and return what it puts on ``q``.

    ``env``: environment variables set for the child only (e.g.
    ``{"OPENBLAS_NUM_THREADS": "1"}``, which must be in place before numpy is imported).
    A child that dies without reporting (a crash in a compiled library, an OOM kill)
    raises ``RuntimeError`` instead of blocking forever.
    """
    import os

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=target, args=(*args, q))
    saved = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update(env or {})
    try:
        p.start()  # the spawned interpreter inherits os.environ now
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
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


# -----------------------------------------------------------------------------
# memory of the current process (Linux /proc; getrusage as the fallback)
# -----------------------------------------------------------------------------
def _status_mb(key: str) -> float | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def rss_mb() -> float:
    """Current resident set size, MB (``VmRSS``; ``ru_maxrss`` where /proc is missing)."""
    v = _status_mb("VmRSS")
    return peak_mb() if v is None else v


_PEAK_RESET = False


def reset_peak() -> bool:
    """Reset this process's peak RSS (``VmHWM``) to the current RSS: ``echo 5 >
    /proc/self/clear_refs`` (Linux >= 4.0). False where that is not possible; then
    :func:`hwm_mb` is the peak since the start of the process."""
    global _PEAK_RESET
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        _PEAK_RESET = True
    except OSError:
        _PEAK_RESET = False
    return _PEAK_RESET


def hwm_mb() -> float:
    """Peak RSS since the last :func:`reset_peak` (``VmHWM``), MB."""
    v = _status_mb("VmHWM")
    return peak_mb() if v is None else v


# -----------------------------------------------------------------------------
# interleaved runs and their summaries
# -----------------------------------------------------------------------------
def interleave(sides, pairs, log=None, after_round=None):
    """Run every side once per round, ``pairs`` rounds: A B A B ... (A B C A B C ...).

    ``sides`` maps a name to a zero-argument callable returning a dict (typically
    ``lambda: run_isolated(child, spec)``). ``log(name, round, result)`` is called after
    each run, ``after_round(round, results_so_far)`` after each round (e.g. a parity check
    after the first, so that a mismatch stops the benchmark early). Returns
    ``{name: [result of round 0, ...]}``.
    """
    out = {name: [] for name in sides}
    for k in range(int(pairs)):
        for name, fn in sides.items():
            r = fn()
            out[name].append(r)
            if log is not None:
                log(name, k, r)
        if after_round is not None:
            after_round(k, out)
    return out


def stats(values) -> dict:
    """``{"min", "median", "max", "n"}`` of a list of numbers."""
    import statistics

    v = [float(x) for x in values]
    return {"min": min(v), "median": statistics.median(v), "max": max(v), "n": len(v)}


def summarize(results, keys=("wall", "cpu", "added_mb")) -> dict:
    """min / median / max over the rounds of each key of a side's results."""
    return {k: stats([r[k] for r in results]) for k in keys if all(k in r for r in results)}


def time_evaluations(evaluate, steps: int, rss0: float) -> dict:
    """One untimed warm-up of ``evaluate()`` (returns the energies), then ``steps`` timed
    calls: ``{"wall", "cpu"}`` per call, ``added_mb`` (peak RSS minus ``rss0``) and the
    last ``energies``."""
    import time

    energies = evaluate()   # warm-up
    reset_peak()
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        energies = evaluate()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"wall": wall / steps, "cpu": cpu / steps, "added_mb": hwm_mb() - rss0,
            "energies": [float(e) for e in energies]}


def report_pair(res: dict, theirs: str, n_atoms: int, *, ours: str = "ase_mlp") -> dict:
    """Print the min / median / max wall time (and per atom), the CPU-time median and the
    added peak memory of each side of an :func:`interleave` result, and the ratio
    ``theirs / ours`` of the wall medians (> 1: ours faster); returns
    ``{"summary", "ratio", "atoms"}``."""
    summ = {n: summarize(r) for n, r in res.items()}
    for n, st in summ.items():
        w, c, m = st["wall"], st["cpu"], st["added_mb"]
        print(f"  {n:8s} wall {w['min']:.3f} / {w['median']:.3f} / {w['max']:.3f} s "
              f"({w['median'] / n_atoms * 1e6:.1f} us/atom)  cpu median "
              f"{c['median']:.3f} s  added peak {m['median']:.0f} MB")
    ratio = summ[theirs]["wall"]["median"] / summ[ours]["wall"]["median"]
    print(f"  ratio {theirs} / {ours} (medians): {ratio:.2f}")
    return {"summary": summ, "ratio": ratio, "atoms": n_atoms}


# -----------------------------------------------------------------------------
# background load: processes that keep cores busy
# -----------------------------------------------------------------------------
def _spin():
    while True:
        pass


class BusyCores:
    """``with BusyCores(n):`` keeps ``n`` spawned processes spinning (pure Python loops)
    for the duration of the block; they are terminated (by their own handles) on exit."""

    def __init__(self, n: int, settle: float = 0.5):
        self.n, self.settle, self.procs = int(n), float(settle), []

    def __enter__(self):
        import time

        ctx = mp.get_context("spawn")
        self.procs = [ctx.Process(target=_spin, daemon=True) for _ in range(self.n)]
        for p in self.procs:
            p.start()
        time.sleep(self.settle)  # let them start spinning
        return self

    def __exit__(self, *exc):
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            p.join()
        self.procs = []
