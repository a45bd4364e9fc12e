"""SNAP on the CPU: ase_mlp (compiled kernels) vs LAMMPS, like-for-like and interleaved.

Run by hand (not a test)::

    python benchmarks/bench_snap.py [--pairs 3] [--steps 5] [--quick] [--json out.json]

Every measurement is a fresh spawned child process (``_harness.run_isolated``); the sides
of a comparison alternate, A B A B ... (A B C ... with more sides), ``--pairs`` rounds,
and every side times the same number of evaluations (``--steps``) after ``--warmup``
untimed ones. Reported per evaluation: min / median / max over the rounds of the wall
time and of the child's CPU time (``time.process_time``: all its threads), and the peak
*added* memory: peak RSS during the timed evaluations (``VmHWM`` after ``echo 5 >
/proc/self/clear_refs``) minus the RSS just before the calculator / LAMMPS instance was
created (imports and structure already loaded). Ratio = t_LAMMPS / t_ours of the medians
(> 1: we are faster).

The LAMMPS children run ``_lammps_child.py``: numpy, ase and the ``lammps`` module only
(never torch or ase_mlp: checked in the child). Both sides use one thread
(``MLPCalculator(threads=1)`` and ``torch.set_num_threads(1)`` in our child; LAMMPS without
OpenMP). The first round checks parity: the LAMMPS energies must equal ours to 1e-8
(relative), forces to 1e-6 eV/Å; the differences are printed and stored. Where the forces
differ, a central finite difference of the (common) energy decides: if it matches ours and
not LAMMPS's (LAMMPS 2025.7.22 ``pair_style mliap ... descriptor sna`` with ``chemflag 1``,
the GaN case), the case is flagged and timed anyway; otherwise the benchmark stops.
Ours also runs with ``OPENBLAS_NUM_THREADS=1`` (cases up to 10 000 atoms), which keeps
numpy's OpenBLAS pool from spinning a second thread during our calls.

Sections
--------
eval
    Energy + forces + virial. Ours: ``calc.results.clear()``, ``get_forces()``,
    ``get_potential_energy()``, ``get_stress()`` (one model call: the virial comes with
    the forces of a periodic cell) with the Verlet list kept (atoms do not move). LAMMPS
    on the same atoms: (a) ``run N pre no post no`` with the potential energy and the
    pressure (virial) tallied every step (``fix ave/time 1 1 1 c_thermo_pe
    c_thermo_press[*]``); (b) forces only. Per-step LAMMPS time = (t(run N+1) - t(run 1))
    / N, because LAMMPS tallies the energy on the last step of every run (see
    ``_lammps_child.time_pair``). Cases: bcc Ta 2 000 and 16 000 atoms (Ta06A, 2J = 6,
    a = 3.30 Å, rattled 0.05 Å), B2 W/Be 2 000 atoms (WBe_Wood_PRB2019, 2J = 8), wurtzite
    GaN 1 920 atoms with the embedded NN-SNAP vs ``pair_style mliap model nn ...
    descriptor sna`` (exported with ``export_lammps``). At 16 000 atoms ours also runs
    with ``--threads`` threads (interleaved in the same rounds): speed-up over 1 thread.
design
    Linear-SNAP design matrix (Ta06A descriptor): ours ``compute_features`` +
    ``frame_columns`` vs LAMMPS ``compute snap`` (energy, force and virial rows;
    ``pair_style zero``; per frame ``clear``, box, atoms, compute, ``run 0``, the array
    copied out), for the 2 000-atom Ta structure and for 16 frames of 128 atoms.
small
    Ours only: ``calculate_batch`` of 64 structures of 64 atoms vs one 4 096-atom
    structure (16x16x8 cubic cells), one thread; per-atom time ratio.
shared
    One MD step of the ``ase-mlp demo`` set-up (96-atom GaN, ``MTKNPT``), idle and while
    two spinning processes keep both cores busy: calculator defaults (``threads=None``,
    torch's default thread count) with ``backend="auto"`` (compiled kernels) and
    ``backend="torch"`` (torch's own threads, the old path), and the compiled kernels on
    one thread (``threads=1``, ``torch.set_num_threads(1)`` in the child).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile

import _lammps_child as lmpchild
import _ours_child as ours
from _harness import BusyCores, interleave, run_isolated, stats, summarize


E_TOL = 1e-8   # relative energy agreement LAMMPS / ours
F_TOL = 1e-6   # eV/Å

TA_DESCRIPTOR = dict(elements=["Ta"], twojmax=6, rcutfac=4.67637, radii=[0.5], rfac0=0.99363,
                     bzeroflag=False)
TA_SNAP_ARGS = ("4.67637 0.99363 6 0.5 1.0 rmin0 0.0 switchflag 1 bzeroflag 0 "
                "quadraticflag 0")


# -----------------------------------------------------------------------------
# structures and potentials (numpy + ase only)
# -----------------------------------------------------------------------------
def bcc(elements, a, rep, seed=0, rattle=0.05):
    """Rattled cubic bcc supercell; with two elements, alternating sites (B2, 50/50)."""
    import numpy as np
    from ase.build import bulk

    atoms = bulk("W", "bcc", a=a, cubic=True).repeat(rep)
    rng = np.random.default_rng(seed)
    atoms.positions += rng.normal(scale=rattle, size=atoms.positions.shape)
    atoms.set_chemical_symbols([elements[k % len(elements)] for k in range(len(atoms))])
    return atoms


def snap_files(name):
    P = lmpchild.potentials_dir()
    return [str(P / f"{name}.snapcoeff"), str(P / f"{name}.snapparam")]


def snap_pair(name, elements):
    coeff, param = snap_files(name)
    return ["pair_style snap", f"pair_coeff * * {coeff} {param} {' '.join(elements)}"]


def gan_structure():
    """Wurtzite GaN, 1 920 atoms (8x5x6 orthohexagonal cells), rattled 0.03 Å."""
    import numpy as np

    from ase_mlp.workflows.phases import wurtzite

    atoms = wurtzite(orthohexagonal=True).repeat((8, 5, 6))
    atoms.positions += np.random.default_rng(0).normal(scale=0.03, size=atoms.positions.shape)
    return atoms


def eval_cases(quick, tmpdir):
    """(label, atoms, ours model files, LAMMPS pair lines, LAMMPS elements)."""
    from ase_mlp.cli import default_model_path
    from ase_mlp.io.export import export_lammps
    from ase_mlp.models import load

    cases = [("Ta06A bcc 2000 (2J=6)", bcc(["Ta"], 3.30, (10, 10, 10)), snap_files("Ta06A"),
              snap_pair("Ta06A", ["Ta"]), ["Ta"])]
    if not quick:
        cases.append(("Ta06A bcc 16000 (2J=6)", bcc(["Ta"], 3.30, (20, 20, 20)),
                      snap_files("Ta06A"), snap_pair("Ta06A", ["Ta"]), ["Ta"]))
    cases.append(("WBe B2 2000 (2J=8)", bcc(["W", "Be"], 3.17, (10, 10, 10)),
                  snap_files("WBe_Wood_PRB2019"), snap_pair("WBe_Wood_PRB2019", ["W", "Be"]),
                  ["W", "Be"]))
    model = load(default_model_path())
    cmds = export_lammps(model, tmpdir, "gan").commands(absolute=True)
    cases.append(("GaN NN-SNAP 1920 (2J=4, mliap nn)", gan_structure(),
                  [str(default_model_path())], cmds, list(model.elements)))
    return cases


# -----------------------------------------------------------------------------
# output helpers
# -----------------------------------------------------------------------------
def _say(*a):
    print(*a, flush=True)


def _fmt3(s, scale=1.0, fmt=".4f"):
    return (f"{format(s['min'] * scale, fmt)} / {format(s['median'] * scale, fmt)} / "
            f"{format(s['max'] * scale, fmt)}")


def _row(label, side, res):
    sm = summarize(res)
    mb = f"   added {sm['added_mb']['median']:6.0f} MB" if "added_mb" in sm else ""
    _say(f"  {side:38s} wall {_fmt3(sm['wall'])} s   cpu {_fmt3(sm['cpu'])} s{mb}")
    return {"case": label, "side": side, **sm}


def _progress(name, k, r):
    extra = f" load {r['load']:.2f}" if "load" in r else ""
    _say(f"    round {k + 1} {name}: {r['wall']:.4g} s wall, {r['cpu']:.4g} s cpu{extra}")


def _ratio(num, den, key="wall"):
    return num[key]["median"] / den[key]["median"]


# -----------------------------------------------------------------------------
# sections
# -----------------------------------------------------------------------------
OURS = "ours E+F+virial (1 thread)"
OURS_B = "ours, OPENBLAS_NUM_THREADS=1"
LMP_A = "LAMMPS (a) E+F+virial"
LMP_B = "LAMMPS (b) forces only"
BLAS1 = {"OPENBLAS_NUM_THREADS": "1"}


def _fd_force(model, atoms, i, c, h=1e-4):
    """Central finite difference -dE/dx of atom ``i``, component ``c``, with our energy."""
    from ase_mlp.calculators import MLPCalculator

    e = []
    for step in (h, -h):
        b = atoms.copy()
        b.positions[i, c] += step
        b.calc = MLPCalculator.from_file(*model, device="cpu", threads=1)
        e.append(b.get_potential_energy())
    return -(e[0] - e[1]) / (2 * h)


def _parity(label, model, atoms, o, la, lb):
    """LAMMPS energies must equal ours to E_TOL (relative). Forces to F_TOL, unless a
    finite difference of the (common) energy shows that LAMMPS's forces are the ones
    inconsistent with it: then the case is flagged and the benchmark goes on."""
    import numpy as np

    e = o["energy"]
    out = {}
    for tag, r in (("a", la), ("b", lb)):
        out[f"energy_rel_{tag}"] = abs(r["energy"] - e) / abs(e)
        out[f"forces_max_abs_{tag}"] = float(np.abs(r["forces"] - o["forces"]).max())
    out["stress_max_abs_a"] = float(np.abs(la["stress"] - o["stress"]).max())
    _say(f"  parity: |dE|/|E| {out['energy_rel_a']:.1e} (a) {out['energy_rel_b']:.1e} (b); "
         f"max |dF| {out['forces_max_abs_a']:.1e} (a) {out['forces_max_abs_b']:.1e} (b) eV/Å; "
         f"max |d stress| {out['stress_max_abs_a']:.1e} eV/Å^3 (a); E = {e:.6f} eV")
    if not (out["energy_rel_a"] < E_TOL and out["energy_rel_b"] < E_TOL):
        raise AssertionError(f"{label}: LAMMPS energy differs from ours: {out}")
    if out["forces_max_abs_a"] >= F_TOL or out["forces_max_abs_b"] >= F_TOL:
        d = np.abs(la["forces"] - o["forces"])
        i, c = (int(v) for v in np.unravel_index(d.argmax(), d.shape))
        fd = _fd_force(model, atoms, i, c)
        out["fd_check"] = {"atom": i, "component": c, "finite_difference": fd,
                           "ours": float(o["forces"][i, c]),
                           "lammps": float(la["forces"][i, c])}
        _say(f"  forces differ: atom {i} component {c}: finite difference of the energy "
             f"{fd:.6f}, ours {o['forces'][i, c]:.6f}, LAMMPS {la['forces'][i, c]:.6f} eV/Å")
        if abs(fd - o["forces"][i, c]) < 1e-5 < abs(fd - la["forces"][i, c]):
            out["lammps_forces_inconsistent"] = True
            _say("  NOTE: LAMMPS's forces are inconsistent with its own energy (which equals "
                 "ours); timing kept, forces not compared")
        else:
            raise AssertionError(f"{label}: LAMMPS forces differ from ours: {out}")
    return out


def section_eval(args, tmpdir):
    rows = []
    for label, atoms, model, pair, elements in eval_cases(args.quick, tmpdir):
        if args.cases and not any(c in label for c in args.cases):
            continue
        n = len(atoms)
        _say(f"\n{label}: {n} atoms, {args.pairs} rounds x {args.steps} evaluations per side")
        base = {"atoms": atoms, "steps": args.steps, "warmup": args.warmup}
        o_spec = {**base, "model": model, "threads": 1, "torch_threads": 1}
        l_spec = {**base, "elements": elements, "pair": pair}
        sides = {OURS: lambda: run_isolated(ours.eval_efv, o_spec)}
        if n <= 10000:
            sides[OURS_B] = lambda: run_isolated(ours.eval_efv, o_spec, env=BLAS1)
        sides[LMP_A] = lambda: run_isolated(lmpchild.time_pair, {**l_spec, "mode": "efv"})
        sides[LMP_B] = lambda: run_isolated(lmpchild.time_pair, {**l_spec, "mode": "f"})
        multi = f"ours E+F+virial ({args.threads} threads)"
        if n > 10000 and args.threads > 1:
            sides[multi] = lambda: run_isolated(
                ours.eval_efv, {**o_spec, "threads": args.threads, "torch_threads": args.threads})
        checked = {}

        def check(k, res, checked=checked, label=label, model=model, atoms=atoms):
            if k == 0:
                checked.update(_parity(label, model, atoms, res[OURS][0], res[LMP_A][0],
                                       res[LMP_B][0]))

        res = interleave(sides, args.pairs, log=_progress, after_round=check)
        summ = {k: _row(label, k, v) for k, v in res.items()}
        o, la, lb = summ[OURS], summ[LMP_A], summ[LMP_B]
        row = {"case": label, "natoms": n, "ours": o, "lammps_a": la, "lammps_b": lb,
               "ratio_a": _ratio(la, o), "ratio_b": _ratio(lb, o),
               "ratio_a_cpu": _ratio(la, o, "cpu"), "ratio_b_cpu": _ratio(lb, o, "cpu"),
               "ours_cold_s": stats([r["cold"] for r in res[OURS]]),
               "ours_compiled": res[OURS][0]["compiled_available"],
               "load": stats([r["load"] for v in res.values() for r in v if "load" in r]),
               "parity": checked}
        _say(f"  ratio t_LAMMPS / t_ours (medians): (a) {row['ratio_a']:.2f} wall, "
             f"{row['ratio_a_cpu']:.2f} cpu; (b) {row['ratio_b']:.2f} wall, "
             f"{row['ratio_b_cpu']:.2f} cpu")
        if OURS_B in summ:
            ob = summ[OURS_B]
            row["ours_blas1"] = {**ob, "ratio_a": _ratio(la, ob), "ratio_b": _ratio(lb, ob),
                                 "ratio_a_cpu": _ratio(la, ob, "cpu"),
                                 "ratio_b_cpu": _ratio(lb, ob, "cpu")}
            _say(f"  with OPENBLAS_NUM_THREADS=1: (a) {row['ours_blas1']['ratio_a']:.2f} wall, "
                 f"{row['ours_blas1']['ratio_a_cpu']:.2f} cpu; (b) "
                 f"{row['ours_blas1']['ratio_b']:.2f} wall, "
                 f"{row['ours_blas1']['ratio_b_cpu']:.2f} cpu")
        if multi in summ:
            m = summ[multi]
            row["ours_threads"] = {"threads": args.threads, **m, "speedup_wall": _ratio(o, m),
                                   "cpu_ratio": _ratio(m, o, "cpu")}
            _say(f"  {args.threads} threads vs 1: speed-up "
                 f"{row['ours_threads']['speedup_wall']:.2f}x (wall medians), CPU time "
                 f"x{row['ours_threads']['cpu_ratio']:.2f}")
        rows.append(row)
    return rows


def _check_design(o, lmp):
    """Max |difference| of the energy and force rows (LAMMPS frame -> ASE frame)."""
    import numpy as np

    A, Q = lmp["A"], lmp["Q"]
    e, f = o["energy_row"], o["force_rows"]
    K = A.shape[1] - 1  # last column: the reference potential (pair_style zero)
    m = int(round(e[0]))
    de = float(np.abs(A[0, :K] - e[1:]).max())
    fl = A[1:1 + 3 * m, :K].reshape(m, 3, K)
    fo = np.einsum("nak,ab->nbk", f.reshape(m, 3, -1)[:, :, 1:], Q)
    df = float(np.abs(fl - fo).max())
    scale = float(np.abs(e[1:]).max())
    return {"energy_row_max_abs": de, "force_rows_max_abs": df, "energy_row_scale": scale}


def section_design(args):
    rows = []
    small = [bcc(["Ta"], 3.30, (4, 4, 4), seed=100 + k) for k in range(16)]
    cases = [("Ta06A design matrix, 1 frame x 2000 atoms", [bcc(["Ta"], 3.30, (10, 10, 10))]),
             ("Ta06A design matrix, 16 frames x 128 atoms", small)]
    steps = max(1, min(args.steps, 3))
    for label, frames in cases:
        _say(f"\n{label}: {args.pairs} rounds x {steps} builds per side")
        sides = {
            "ours compute_features + frame_columns": lambda fr=frames: run_isolated(
                ours.design, {"frames": fr, "steps": steps, "descriptor": TA_DESCRIPTOR}),
            "LAMMPS compute snap": lambda fr=frames: run_isolated(
                lmpchild.time_compute_snap, {"frames": fr, "steps": steps,
                                             "snap_args": TA_SNAP_ARGS, "pair_cutoff": 5.0,
                                             "elements": ["Ta"]}),
        }
        res = interleave(sides, args.pairs, log=_progress)
        chk = _check_design(res["ours compute_features + frame_columns"][0],
                            res["LAMMPS compute snap"][0])
        _say(f"  parity (first frame): energy row max |d| {chk['energy_row_max_abs']:.1e} "
             f"(entries up to {chk['energy_row_scale']:.0f}), force rows "
             f"{chk['force_rows_max_abs']:.1e}")
        if not (chk["energy_row_max_abs"] < 1e-8 * max(1.0, chk["energy_row_scale"])
                and chk["force_rows_max_abs"] < 1e-8):
            raise AssertionError(f"{label}: design matrices differ: {chk}")
        o = _row(label, "ours compute_features + frame_columns",
                 res["ours compute_features + frame_columns"])
        lm = _row(label, "LAMMPS compute snap", res["LAMMPS compute snap"])
        row = {"case": label, "natoms": sum(len(a) for a in frames), "frames": len(frames),
               "ours": o, "lammps": lm, "ratio": _ratio(lm, o), "ratio_cpu": _ratio(lm, o, "cpu"),
               "parity": chk}
        _say(f"  ratio t_LAMMPS / t_ours (medians): {row['ratio']:.2f} wall, "
             f"{row['ratio_cpu']:.2f} cpu")
        rows.append(row)
    return rows


def section_small(args):
    model = snap_files("Ta06A")
    images = [bcc(["Ta"], 3.30, (4, 4, 2), seed=200 + k) for k in range(64)]
    big = [bcc(["Ta"], 3.30, (16, 16, 8), seed=300)]
    assert all(len(a) == 64 for a in images) and len(big[0]) == 4096
    _say(f"\nsmall systems (Ta06A, 1 thread): calculate_batch of 64 x 64 atoms vs one 4096-atom "
         f"structure; {args.pairs} rounds x {args.steps} calls")
    base = {"model": model, "steps": args.steps, "warmup": args.warmup}
    sides = {"batch 64 x 64 atoms": lambda: run_isolated(ours.batch, {**base, "images": images}),
             "one structure of 4096 atoms": lambda: run_isolated(ours.batch,
                                                                 {**base, "images": big})}
    res = interleave(sides, args.pairs, log=_progress)
    b = _row("small", "batch 64 x 64 atoms", res["batch 64 x 64 atoms"])
    s = _row("small", "one structure of 4096 atoms", res["one structure of 4096 atoms"])
    row = {"case": "batch 64x64 vs 1x4096", "batch": b, "single": s,
           "us_per_atom_batch": 1e6 * b["wall"]["median"] / 4096,
           "us_per_atom_single": 1e6 * s["wall"]["median"] / 4096,
           "ratio_per_atom": b["wall"]["median"] / s["wall"]["median"],
           "ratio_per_atom_cpu": b["cpu"]["median"] / s["cpu"]["median"]}
    _say(f"  per atom: batch {row['us_per_atom_batch']:.1f} us, single "
         f"{row['us_per_atom_single']:.1f} us; t_batch / t_single = {row['ratio_per_atom']:.2f} "
         f"(cpu {row['ratio_per_atom_cpu']:.2f})")
    return [row]


def section_shared(args):
    from ase_mlp.cli import default_model_path

    model = [str(default_model_path())]
    base = {"model": model, "threads": None, "steps": args.md_steps, "warmup": 5}
    _say(f"\nshared cores: ase-mlp demo MD step (96-atom GaN, MTKNPT), calculator defaults; "
         f"idle vs 2 spinning processes; {args.pairs} rounds x {args.md_steps} steps")

    def loaded(spec):
        with BusyCores(2, settle=1.0):
            return run_isolated(ours.md_steps, spec)

    one = {**base, "backend": "auto", "threads": 1, "torch_threads": 1}
    sides = {
        "compiled, idle": lambda: run_isolated(ours.md_steps, {**base, "backend": "auto"}),
        "torch, idle": lambda: run_isolated(ours.md_steps, {**base, "backend": "torch"}),
        "compiled 1 thread, idle": lambda: run_isolated(ours.md_steps, one),
        "compiled, 2 busy processes": lambda: loaded({**base, "backend": "auto"}),
        "torch, 2 busy processes": lambda: loaded({**base, "backend": "torch"}),
        "compiled 1 thread, 2 busy processes": lambda: loaded(one),
    }
    res = interleave(sides, args.pairs, log=_progress)
    rows = {k: _row("shared", k, v) for k, v in res.items()}
    out = {"case": "96-atom GaN MD step, shared cores", **{k: v for k, v in rows.items()},
           "torch_threads": res["torch, idle"][0]["torch_threads"],
           "cores": res["compiled, idle"][0]["cores"]}
    for tag in ("compiled", "torch", "compiled 1 thread"):
        out[f"ratio_loaded_idle_{tag}"] = _ratio(rows[f"{tag}, 2 busy processes"],
                                                 rows[f"{tag}, idle"])
    out["ratio_torch_compiled_loaded"] = _ratio(rows["torch, 2 busy processes"],
                                                rows["compiled, 2 busy processes"])
    _say(f"  loaded / idle: compiled (defaults) {out['ratio_loaded_idle_compiled']:.2f}, "
         f"torch {out['ratio_loaded_idle_torch']:.2f}, compiled 1 thread "
         f"{out['ratio_loaded_idle_compiled 1 thread']:.2f}; loaded torch / loaded compiled "
         f"{out['ratio_torch_compiled_loaded']:.2f}")
    return [out]


# -----------------------------------------------------------------------------
# summary table
# -----------------------------------------------------------------------------
def _summary(result):
    _say("\nsummary (seconds per evaluation, min / median / max over the rounds; ratio = "
         "t_LAMMPS / t_ours of the medians, > 1: ours faster; in parentheses: LAMMPS (a) / "
         "ours with OPENBLAS_NUM_THREADS=1; 'x': speed-up over 1 thread; small systems: "
         "t_batch / t_single per atom)")
    _say(f"{'case':36s} {'side':28s} {'wall s':>26s} {'cpu s':>26s} {'added MB':>9s} "
         f"{'ratio wall':>10s} {'ratio cpu':>9s}")

    def line(case, side, s, rw="", rc=""):
        mb = f"{s['added_mb']['median']:.0f}" if "added_mb" in s else "-"
        _say(f"{case:36s} {side:28s} {_fmt3(s['wall']):>26s} {_fmt3(s['cpu']):>26s} "
             f"{mb:>9s} {rw:>10s} {rc:>9s}")

    for r in result.get("eval", []):
        line(r["case"], "ours E+F+virial", r["ours"])
        if "ours_blas1" in r:
            b = r["ours_blas1"]
            line("", "ours, OPENBLAS_NUM_THREADS=1", b, f"({b['ratio_a']:.2f})",
                 f"({b['ratio_a_cpu']:.2f})")
        line("", "LAMMPS (a) E+F+virial", r["lammps_a"], f"{r['ratio_a']:.2f}",
             f"{r['ratio_a_cpu']:.2f}")
        line("", "LAMMPS (b) forces only", r["lammps_b"], f"{r['ratio_b']:.2f}",
             f"{r['ratio_b_cpu']:.2f}")
        if "ours_threads" in r:
            t = r["ours_threads"]
            line("", f"ours {t['threads']} threads", t, f"x{t['speedup_wall']:.2f}", "")
    for r in result.get("design", []):
        line(r["case"][:36], "ours features+rows", r["ours"])
        line("", "LAMMPS compute snap", r["lammps"], f"{r['ratio']:.2f}", f"{r['ratio_cpu']:.2f}")
    for r in result.get("small", []):
        line("64 x 64 atoms vs 1 x 4096 (ours)", "batch 64 x 64", r["batch"])
        line("", "single 4096", r["single"], f"{r['ratio_per_atom']:.2f}",
             f"{r['ratio_per_atom_cpu']:.2f}")
    for r in result.get("shared", []):
        for tag in ("compiled", "torch", "compiled 1 thread"):
            line("96-atom GaN MD step" if tag == "compiled" else "", f"{tag}, idle",
                 r[f"{tag}, idle"])
            line("", f"{tag}, 2 busy processes", r[f"{tag}, 2 busy processes"],
                 f"/{r[f'ratio_loaded_idle_{tag}']:.2f}", "")
        _say(f"{'':36s} ('/': loaded / idle of the medians)")


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=3, help="interleaved rounds (>= 3)")
    ap.add_argument("--steps", type=int, default=5,
                    help="timed evaluations per child (same on every side)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed evaluations first")
    ap.add_argument("--threads", type=int, default=2,
                    help="threads of the extra ours row at 16 000 atoms (1: none)")
    ap.add_argument("--md-steps", type=int, default=20, help="MD steps per shared-core child")
    ap.add_argument("--quick", action="store_true", help="skip the 16 000-atom case")
    ap.add_argument("--sections", nargs="+", default=["eval", "design", "small", "shared"],
                    choices=["eval", "design", "small", "shared"])
    ap.add_argument("--cases", nargs="+", metavar="TEXT",
                    help="eval section: only the cases whose label contains one of these "
                         "(e.g. 16000 GaN)")
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args()
    if args.pairs < 1 or args.steps < 1:
        ap.error("--pairs and --steps must be >= 1")

    import importlib.metadata as md

    meta = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "cpu": _cpu_name(),
            "cpus": os.cpu_count(), "python": sys.version.split()[0],
            "torch": md.version("torch"), "lammps": md.version("lammps"),
            "args": vars(args)}
    _say(f"bench_snap: {meta}")
    result = {"meta": meta}
    with tempfile.TemporaryDirectory() as tmp:
        if "eval" in args.sections:
            result["eval"] = section_eval(args, tmp)
        if "design" in args.sections:
            result["design"] = section_design(args)
        if "small" in args.sections:
            result["small"] = section_small(args)
        if "shared" in args.sections:
            result["shared"] = section_shared(args)
    _summary(result)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)


if __name__ == "__main__":
    main()
