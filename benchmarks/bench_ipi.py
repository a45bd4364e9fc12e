"""Wall time per PIMD step through i-PI: our batched driver vs one ASE client per bead.

Run by hand (not a test; needs ``pip install ipi``)::

    python benchmarks/bench_ipi.py [--beads 8 32] [--steps 10] [--threads 1] [--repeats 3]
        [--modes batched unbatched] [--json out.json]

System: 256-atom wurtzite GaN with the embedded NN-SNAP (float64, CPU), NVT PIMD with
PILE-L at 300 K, 1 fs, unix socket, i-PI 3.x. For each bead count, in the same run:

* ``batched``: ``ase-mlp ipi-driver`` (one process), i-PI ``batch_size`` = beads: all
  beads in one message and one model call;
* ``ase_per_bead``: one ASE ``SocketClient`` process per bead (the usual recipe),
  ``batch_size`` 1, each with ``MLPCalculator`` (its Verlet list is reused, since i-PI
  keeps sending a client the same bead);
* ``unbatched``: ``ase-mlp ipi-driver --unbatched`` (one process), ``batch_size`` 1;
* ``null``: our batched driver with a zero-cost calculator: i-PI's own step plus the
  socket exchange, i.e. the overhead per step that no model speed removes.

The modes are run interleaved (all modes once, then all again: A B A B ...) ``--repeats``
times, so that a load change on a shared machine hits every mode alike; the table gives
the min / median / max over the repeats and the ratio of medians.

Every driver process runs torch on ``--threads`` threads (default 1: with i-PI's polling
thread that fills a 2-core machine; more threads than free cores slows torch down many
times). Reported: seconds per step (time between i-PI's property rows after
``--warmup`` steps), the ratio to ``batched``, and for our drivers the structures
received (i-PI's padding of partial batches included) against the distinct ones evaluated
and the model calls (from the driver's log; its ``done`` line also gives the model time,
the rest is socket + i-PI). Target: ``ase_per_bead`` /
``batched`` >= 3 at 32 beads.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid


ZERO_DRIVER = """
import sys, numpy as np
from ase.io import read
from ase.calculators.calculator import Calculator
from ase_mlp.ipi import IPIDriver
class Zero(Calculator):
    implemented_properties = ["energy", "forces", "stress"]
    def calculate(self, atoms=None, properties=None, system_changes=None):
        self.results = {"energy": 0.0, "forces": np.zeros((len(atoms), 3)),
                        "stress": np.zeros(6)}
st = IPIDriver(Zero(), read(sys.argv[1]), unix=sys.argv[2]).serve()
"""

ASE_CLIENT = """
import sys, torch
torch.set_num_threads(int(sys.argv[3]))
from ase.io import read
from ase.calculators.socketio import SocketClient
from ase_mlp.calculators import MLPCalculator
from ase_mlp.cli import default_model_path
atoms = read(sys.argv[1])
atoms.calc = MLPCalculator.from_file(default_model_path(), device="cpu")
SocketClient(unixsocket=sys.argv[2]).run(atoms, use_stress=True)
"""


def _rows(path) -> int:
    try:
        with open(path) as fh:
            return sum(1 for line in fh if line.strip() and not line.startswith("#"))
    except OSError:
        return 0


def _case(workdir, mode, nbeads, steps, warmup, threads, tag=0):
    from ase_mlp.ipi import ipi_input
    from ase_mlp.ipi.workflow import ipi_script

    work = workdir / f"{mode}_{nbeads}_{tag}"
    work.mkdir()
    shutil.copy(workdir / "init.extxyz", work / "init.extxyz")
    name = f"bench{uuid.uuid4().hex[:8]}"
    batch = nbeads if mode in ("batched", "null") else 1
    (work / "input.xml").write_text(ipi_input(
        "init.extxyz", address=name, nbeads=nbeads, steps=warmup + steps, timestep_fs=1.0,
        batch_size=batch, properties=("step",), trajectory_stride=10**6,
        checkpoint_stride=10**6))
    py = sys.executable
    init = str(work / "init.extxyz")
    if mode in ("batched", "unbatched"):
        clients = [[py, "-m", "ase_mlp.cli", "ipi-driver", "--unix", name, "--structure", init,
                    "--device", "cpu", "--threads", str(threads)]
                   + (["--unbatched"] if mode == "unbatched" else [])]
    elif mode == "null":
        clients = [[py, "-c", ZERO_DRIVER, init, name]]
    else:
        clients = [[py, "-c", ASE_CLIENT, init, name, str(threads)]] * nbeads
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    procs = []
    t_rows = {}
    try:
        log = open(work / "ipi.log", "w")
        procs.append(subprocess.Popen([py, ipi_script(), "input.xml"], cwd=work, stdout=log,
                                      stderr=subprocess.STDOUT))
        path = pathlib.Path(f"/tmp/ipi_{name}")
        t0 = time.monotonic()
        while not path.exists():
            if time.monotonic() - t0 > 60:
                raise RuntimeError("i-PI did not open its socket")
            time.sleep(0.05)
        for cmd in clients:
            procs.append(subprocess.Popen(cmd, cwd=work, env=env,
                                          stdout=open(work / "driver.log", "a"),
                                          stderr=subprocess.STDOUT))
        out = work / "simulation.out"
        while procs[0].poll() is None:
            n = _rows(out)
            if n and n not in t_rows:
                t_rows[n] = time.monotonic()
            if time.monotonic() - t0 > 1800:
                raise RuntimeError(f"{mode} {nbeads}: no end after 30 min")
            time.sleep(0.005)
        n = _rows(out)
        t_rows.setdefault(n, time.monotonic())
    finally:
        for p in procs[::-1]:
            if p.poll() is None:
                p.kill()
            p.wait()
    first = warmup + 1                       # row of step `warmup` (rows start at step 0)
    last = warmup + steps + 1
    if first not in t_rows or last not in t_rows:
        raise RuntimeError(f"{mode} {nbeads}: rows seen {sorted(t_rows)}; see {work}")
    per_step = (t_rows[last] - t_rows[first]) / steps
    log = (work / "driver.log").read_text()
    m = re.search(r"(\d+) structures received, (\d+) distinct evaluated in (\d+) model", log)
    counts = dict(zip(("received", "evaluated", "model_calls"), map(int, m.groups()),
                      strict=True)) if m else {}
    shutil.rmtree(work, ignore_errors=True)
    return {"mode": mode, "beads": nbeads, "s_per_step": per_step, **counts,
            "driver_log": log[-400:]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--beads", type=int, nargs="+", default=[8, 32])
    ap.add_argument("--steps", type=int, default=10, help="timed steps")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--modes", nargs="+", default=["batched", "ase_per_bead", "unbatched", "null"])
    ap.add_argument("--repeats", type=int, default=1,
                    help="run all modes this many times, interleaved (A B A B ...)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)

    from ase.build import bulk
    from ase.io import write

    atoms = bulk("GaN", "wurtzite", a=3.19, c=5.19).repeat((4, 4, 4))   # 256 atoms
    atoms.rattle(0.02, seed=1)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_ipi") as tmp:
        workdir = pathlib.Path(tmp)
        write(workdir / "init.extxyz", atoms)
        for nb in args.beads:
            for rep in range(args.repeats):
                for mode in args.modes:
                    r = _case(workdir, mode, nb, args.steps, args.warmup, args.threads,
                              tag=rep)
                    r["repeat"] = rep
                    results.append(r)
                    extra = (f"  {r['received']} received, {r['evaluated']} evaluated, "
                             f"{r['model_calls']} model calls" if "evaluated" in r else "")
                    print(f"{nb:3d} beads  {mode:13s} #{rep}  {r['s_per_step']:8.3f} s/step"
                          + extra, flush=True)
    print(f"\n{len(atoms)} atoms, {args.threads} torch thread(s) per driver process, "
          f"{args.steps} timed steps, {args.repeats} interleaved repeat(s)")
    print(f"{'beads':>5} {'mode':>13} {'min':>7} {'median':>7} {'max':>7} {'vs batched':>10}"
          f" {'received':>9} {'evaluated':>9}")
    summary = []
    for nb in args.beads:
        base = [x["s_per_step"] for x in results if x["beads"] == nb and x["mode"] == "batched"]
        for mode in args.modes:
            t = [x["s_per_step"] for x in results if x["beads"] == nb and x["mode"] == mode]
            ev = [x for x in results if x["beads"] == nb and x["mode"] == mode
                  and "evaluated" in x]
            row = {"beads": nb, "mode": mode, "min": min(t), "median": statistics.median(t),
                   "max": max(t), "ratio_to_batched": (statistics.median(t)
                                                       / statistics.median(base)
                                                       if base else float("nan")),
                   "received": [x["received"] for x in ev],
                   "evaluated": [x["evaluated"] for x in ev]}
            summary.append(row)
            rec = "/".join(map(str, row["received"])) or "-"
            evl = "/".join(map(str, row["evaluated"])) or "-"
            print(f"{nb:5d} {mode:>13} {row['min']:7.3f} {row['median']:7.3f} {row['max']:7.3f}"
                  f" {row['ratio_to_batched']:10.2f} {rec:>9} {evl:>9}")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps({"runs": results, "summary": summary},
                                                      indent=1))
    return results, summary


if __name__ == "__main__":
    main()
