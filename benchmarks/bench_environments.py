"""Throughput (atom-frames/s) and memory of the local-environment classification.

Run by hand (not a test)::

    python benchmarks/bench_environments.py [--atoms 2000] [--frames 20] [--json out.json]

(``--atoms 10000 --frames 100``: 1e6 atom-frames.)

Frames: Si, ``--atoms`` atoms (a (k, k, m) diamond supercell, 8 k^2 m <= atoms),
alternately rattled diamond (0.1 Å) and rattled beta-tin (same count) written to an
extxyz file in /tmp and streamed from it, as ``ase-mlp environments`` does. Each
measurement runs in a fresh process (multiprocessing spawn):

* ``descriptor``: :meth:`EnvironmentDescriptor.compute` over every frame (bispectrum
  twojmax 6, neighbour-averaged once; neighbour list included), frames already in memory;
* ``fit + predict``: :func:`classify_environments` on the file (GMM, number of clusters by
  BIC over 1..8 with the default tolerance, fit on every 5th frame, 20 000 sampled
  atom-frames), file reading included;
* ``predict``: the same with the fitted classifier (descriptor + PCA + GMM predict +
  summaries), file reading included.

Reported: wall and CPU seconds (``time.process_time``, all threads), atom-frames/s, and
the peak RSS of the child while it runs
(``VmHWM`` reset before the timed part) next to its RSS before; the labels kept in memory
are 2 bytes per atom-frame (int16).
"""

from __future__ import annotations

import argparse
import json
import os
import time

from _harness import hwm_mb, reset_peak, rss_mb, run_isolated


def _frames(n_atoms, n_frames):
    import numpy as np
    from ase import Atoms
    from ase.build import bulk

    def repeat(cells):  # (k, k, m) with k * k * m == cells, k as large as possible
        k = max(1, int(round(cells ** (1 / 3))))
        while cells % (k * k):
            k -= 1
        return (k, k, cells // (k * k))

    dia = bulk("Si", "diamond", 5.43, cubic=True).repeat(repeat(max(1, n_atoms // 8)))
    bt = Atoms("Si4", cell=[4.686, 4.686, 2.585], pbc=True,
               scaled_positions=[(0, 0, 0), (0.5, 0.5, 0.5), (0, 0.5, 0.25), (0.5, 0, 0.75)])
    bt = bt.repeat(repeat(len(dia) // 4))
    rng = np.random.default_rng(0)
    out = []
    for f in range(n_frames):
        a = (dia if f % 2 == 0 else bt).copy()
        a.rattle(0.1, rng=rng)
        out.append(a)
    return out


def _measure(n_atoms, n_frames, path, q):
    import ase.io

    from ase_mlp.analysis.environments import (
        EnvironmentClassifier,
        EnvironmentDescriptor,
        classify_environments,
    )

    frames = _frames(n_atoms, n_frames)
    ase.io.write(path, frames)
    n_af = sum(len(a) for a in frames)
    d = EnvironmentDescriptor(["Si"])
    d.compute(frames[0])  # warm-up (kernel loading)
    out = {"atoms_per_frame": [len(frames[0]), len(frames[1])], "frames": n_frames,
           "atom_frames": n_af}
    rss0 = rss_mb()
    reset_peak()
    t, c = time.perf_counter(), time.process_time()
    for a in frames:
        d.compute(a)
    out["descriptor"] = dict(wall=time.perf_counter() - t, cpu=time.process_time() - c,
                             peak_mb=hwm_mb(), rss_before=rss0)
    del frames
    clf = EnvironmentClassifier(d, method="gmm", seed=0)
    rss0 = rss_mb()
    reset_peak()
    t, c = time.perf_counter(), time.process_time()
    res = classify_environments(path, classifier=clf, fit_stride=5)
    out["fit + predict"] = dict(wall=time.perf_counter() - t, cpu=time.process_time() - c,
                                peak_mb=hwm_mb(), rss_before=rss0, n_clusters=res.n_clusters)
    rss0 = rss_mb()
    reset_peak()
    t, c = time.perf_counter(), time.process_time()
    res2 = classify_environments(path, classifier=clf)
    out["predict"] = dict(wall=time.perf_counter() - t, cpu=time.process_time() - c,
                          peak_mb=hwm_mb(), rss_before=rss0,
                          same_labels=bool((res2.labels == res.labels).all()))
    out["labels_bytes"] = int(res.labels.nbytes)
    q.put(out)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--atoms", type=int, default=2000)
    p.add_argument("--frames", type=int, default=20)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    path = f"/tmp/environments_bench_{os.getpid()}.extxyz"
    try:
        r = run_isolated(_measure, args.atoms, args.frames, path)
    finally:
        if os.path.exists(path):
            os.remove(path)
    n = r["atom_frames"]
    print(f"{r['atoms_per_frame']} atoms x {r['frames']} frames = {n} atom-frames; "
          f"labels kept: {r['labels_bytes'] / 1e6:.2f} MB")
    for key in ("descriptor", "fit + predict", "predict"):
        m = r[key]
        extra = ""
        if "n_clusters" in m:
            extra = f", {m['n_clusters']} clusters"
        if "same_labels" in m:
            extra = f", same labels as the fit run: {m['same_labels']}"
        print(f"{key:>14s}: {m['wall']:.2f} s wall ({n / m['wall']:.0f} atom-frames/s), "
              f"{m['cpu']:.2f} s CPU ({n / m['cpu']:.0f} atom-frames per CPU s), peak RSS "
              f"{m['peak_mb']:.0f} MB (before {m['rss_before']:.0f} MB){extra}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(r, fh, indent=1)


if __name__ == "__main__":
    main()
