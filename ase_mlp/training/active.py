"""Active learning with a committee: fit, explore with MD, select the uncertain frames, label.

One *generation* (the ES-GAP / DP-GEN iteration):

1. fit a committee on the training frames (:func:`ase_mlp.training.fit`);
2. run short Langevin MD from every seed structure with the committee as calculator and keep
   a snapshot every ``sample_every`` steps as a candidate; a trajectory stops early once the
   committee disagreement reaches ``upper`` (the structure is exploding or far outside the
   data, and what follows would be unphysical);
3. :func:`select_frames`: keep candidates in the trust window ``lower <= score < upper`` and
   pick a diverse few of them;
4. label them with the reference calculator (any ASE calculator, e.g. DFT; EMT in the tests);
5. add them to the training set.

Scores ("disagreement") are the committee spread of :class:`~ase_mlp.models.Committee`
through :class:`~ase_mlp.calculators.MLPCalculator`: ``max_force_std`` is the largest per-atom
force deviation ``max_i sqrt(mean_m |F_im - <F_i>|^2)`` (eV/Å, DP-GEN's ``max_devi_f``);
``energy_std`` is the energy standard deviation per atom (eV/atom).

Diversity. Frames of one trajectory a few steps apart are near-duplicates, and labelling all
of them wastes reference calculations. :func:`select_frames` therefore picks frames by
farthest-point sampling (FPS) on a structure fingerprint, starting from the frame with the
highest disagreement. The fingerprint is, per element, the mean and the standard deviation
over atoms of the bispectrum components of the committee's own descriptor (the first
:class:`~ase_mlp.descriptors.Bispectrum` inside the model): the features the model sees, so
"different for the model" is what counts; each column is standardised over the candidates so
no component dominates the distance. Models without a bispectrum descriptor fall back to a
histogram of interatomic distances up to the cutoff (``fingerprint="distances"``).

Files (``workdir``): ``active_log.jsonl`` (one JSON object per generation, written when the
generation ends), ``labelled.extxyz`` (every labelled frame, appended as soon as it is
labelled, so a crash never loses a reference calculation), ``model_gen{g}.pt`` (the committee
of generation ``g``), and after ``run(final_fit=True)`` ``model_final.pt`` / ``final.json``.
:meth:`ActiveLearner.resume` reloads the labelled frames, the log, the generation counter and
the random state.

Randomness comes only from the ``rng`` argument (a :class:`numpy.random.Generator` or a seed):
it drives the initial velocities, the Langevin thermostat, the fit seeds and tie-breaking in
the selection. The global numpy state is never used.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import pathlib
import time
import warnings

import numpy as np
import torch
from ase import Atoms, units
from ase.calculators.calculator import PropertyNotImplementedError, all_changes

from ase_mlp._util import thermalize


__all__ = ["ActiveLearner", "fingerprints", "score_frames", "select_frames"]

METRICS = ("max_force_std", "energy_std")
LOG_NAME = "active_log.jsonl"
FRAMES_NAME = "labelled.extxyz"


# ------------------------------------------------------------------------------ scoring
def _as_calculator(calc):
    from ase_mlp.calculators.mlp import MLPCalculator
    from ase_mlp.models.base import Model

    if isinstance(calc, Model):
        return MLPCalculator(calc, device="cpu")
    return calc


def _check_metric(metric):
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {list(METRICS)}, got {metric!r}")


def _score_of(result: dict, n_atoms: int, metric: str) -> float:
    if metric == "max_force_std":
        if "forces_std" not in result:
            raise ValueError("the calculator gives no 'forces_std': committee disagreement "
                             "needs an MLPCalculator of a Committee model")
        f = np.asarray(result["forces_std"], dtype=float)
        return float(f.max()) if f.size else 0.0
    if "energy_std" not in result:
        raise ValueError("the calculator gives no 'energy_std': committee disagreement needs "
                         "an MLPCalculator of a Committee model")
    return float(result["energy_std"]) / max(n_atoms, 1)


def score_frames(frames, calc, *, metric: str = "max_force_std",
                 batch_size: int = 32) -> np.ndarray:
    """Committee disagreement of every frame (see the module docstring for ``metric``).

    ``calc`` is an :class:`~ase_mlp.calculators.MLPCalculator` of a
    :class:`~ase_mlp.models.Committee` (or the Committee itself); frames are evaluated with
    ``calculate_batch``. Any other ASE calculator that sets ``forces_std``/``energy_std`` in
    its results works too (evaluated one frame at a time). Non-finite disagreements are
    returned as ``inf`` (they fall above any trust window).
    """
    _check_metric(metric)
    frames = list(frames)
    calc = _as_calculator(calc)
    props = ("energy", "forces")
    results = []
    if hasattr(calc, "calculate_batch"):
        for k in range(0, len(frames), batch_size):
            results.extend(calc.calculate_batch(frames[k:k + batch_size], props))
    else:
        for atoms in frames:
            a = atoms.copy()
            calc.calculate(a, list(props), all_changes)
            results.append(dict(calc.results))
    scores = np.array([_score_of(r, len(a), metric) for r, a in zip(results, frames,
                                                                      strict=True)])
    scores[~np.isfinite(scores)] = np.inf
    return scores


# -------------------------------------------------------------------------- fingerprints
def _find_descriptor(calc):
    from ase_mlp.descriptors.bispectrum import Bispectrum

    model = getattr(calc, "model", calc)
    if not isinstance(model, torch.nn.Module):
        return None, None
    for m in model.modules():
        if isinstance(m, Bispectrum):
            return m, model
    return None, None


def _bispectrum_fingerprints(frames, descriptor, batch_size=32):
    from ase_mlp.models.base import symbols_to_species
    from ase_mlp.neighbors import batch_neighbor_list
    from ase_mlp.neighbors.graph import graph_from_neighbors

    elements = list(descriptor.elements)
    n_el = len(elements)
    floats = [b for b in descriptor.buffers() if b.is_floating_point()]
    device = floats[0].device if floats else torch.device("cpu")
    dtype = floats[0].dtype if floats else torch.float64
    out = []
    for k in range(0, len(frames), batch_size):
        chunk = frames[k:k + batch_size]
        species = [symbols_to_species(a.get_chemical_symbols(), elements) for a in chunk]
        nb = batch_neighbor_list([(a.positions, a.cell.array, a.pbc) for a in chunk], None,
                                 species=species, pair_cutoffs=descriptor.pair_cutoffs())
        graph = graph_from_neighbors(
            np.concatenate([a.positions for a in chunk]), np.stack([a.cell.array for a in chunk]),
            np.concatenate(species), nb.atom_system, nb.i, nb.j, nb.shifts,
            dtype=dtype, device=device)
        with torch.no_grad():
            B = descriptor(graph).detach().cpu().to(torch.float64).numpy()
        start = 0
        for a, sp in zip(chunk, species, strict=True):
            b = B[start:start + len(a)]
            start += len(a)
            parts = []
            for e in range(n_el):
                sel = b[sp == e]
                if len(sel):
                    parts += [sel.mean(0), sel.std(0)]
                else:
                    parts += [np.zeros(b.shape[1]), np.zeros(b.shape[1])]
            out.append(np.concatenate(parts))
    return np.array(out)


def _distance_fingerprints(frames, cutoff, bins=48):
    from ase.neighborlist import neighbor_list

    edges = np.linspace(0.0, cutoff, bins + 1)
    out = []
    for a in frames:
        d = neighbor_list("d", a, cutoff)
        h, _ = np.histogram(d, bins=edges)
        out.append(h / max(len(a), 1))
    return np.array(out, dtype=float)


def fingerprints(frames, calc=None, *, kind: str = "auto", cutoff: float | None = None):
    """Cheap structure fingerprints, one row per frame (see the module docstring).

    ``kind``: ``"bispectrum"`` (per-element mean and standard deviation of the bispectrum of
    the first Bispectrum descriptor inside ``calc``'s model), ``"distances"`` (histogram of
    interatomic distances up to ``cutoff``, default the model cutoff or 5 Å, per atom) or
    ``"auto"`` (bispectrum when the model has one). Rows are not standardised.
    """
    frames = list(frames)
    if kind not in ("auto", "bispectrum", "distances"):
        raise ValueError(f"kind must be 'auto', 'bispectrum' or 'distances', got {kind!r}")
    descriptor, model = _find_descriptor(calc) if calc is not None else (None, None)
    if kind == "bispectrum" and descriptor is None:
        raise ValueError("fingerprint 'bispectrum' needs a model with a Bispectrum descriptor")
    if not frames:
        return np.zeros((0, 0))
    if descriptor is not None and kind != "distances":
        return _bispectrum_fingerprints(frames, descriptor)
    if cutoff is None:
        cutoff = float(np.max(model.pair_cutoffs())) if model is not None else 5.0
    return _distance_fingerprints(frames, cutoff)


def farthest_point_order(X: np.ndarray, n: int, start: int) -> list[int]:
    """Indices of ``n`` rows of ``X`` chosen by farthest-point sampling from row ``start``.

    Each next row maximises the Euclidean distance to the nearest row already chosen; ties go
    to the lowest index (callers order rows by priority first).
    """
    X = np.asarray(X, dtype=float)
    m = len(X)
    n = min(int(n), m)
    if n <= 0:
        return []
    chosen = [int(start)]
    dmin = np.linalg.norm(X - X[start], axis=1)
    dmin[start] = -np.inf
    while len(chosen) < n:
        k = int(np.argmax(dmin))
        chosen.append(k)
        dmin = np.minimum(dmin, np.linalg.norm(X - X[k], axis=1))
        dmin[chosen] = -np.inf
    return chosen


# ----------------------------------------------------------------------------- selection
def select_frames(candidates, calc, *, n_select: int, lower: float = 0.05, upper: float = 0.5,
                  metric: str = "max_force_std", diversity: bool = True, rng=None,
                  scores=None, fingerprint: str = "auto"):
    """Pick up to ``n_select`` candidates the committee is unsure about, but not too unsure.

    Parameters
    ----------
    candidates : list of ase.Atoms
        Structures to choose from (e.g. MD snapshots).
    calc : MLPCalculator of a Committee, a Committee, or None
        Gives the disagreement (unless ``scores`` is given) and the fingerprint descriptor.
        ``None`` is allowed with ``scores``; the fingerprint is then the distance histogram.
    n_select : int
        Largest number of frames returned.
    lower, upper : float
        Trust window ``lower <= score < upper`` (DP-GEN's ``trust_lo``/``trust_hi``): below,
        the committee agrees (already learnt); at or above, the structure is probably
        unphysical (exploding MD) and would only pollute the data. Units of ``metric``.
    metric : "max_force_std" or "energy_std"
        Largest per-atom force deviation (eV/Å) or energy standard deviation per atom
        (eV/atom).
    diversity : bool
        Farthest-point sampling on the fingerprint, starting from the highest-disagreement
        frame (module docstring). ``False``: the ``n_select`` highest scores.
    rng : numpy.random.Generator or seed, optional
        Breaks exact ties (equal scores or identical fingerprints) at random.
    scores : array, optional
        Precomputed disagreements of the candidates (skips the evaluation).
    fingerprint : "auto", "bispectrum" or "distances"
        See :func:`fingerprints`.

    Returns
    -------
    (selected, scores)
        ``selected``: copies of the chosen candidates (no calculator) in the order picked,
        with ``info["al_score"]`` (their disagreement) and ``info["al_index"]`` (index in
        ``candidates``); ``scores``: the disagreement of every candidate (numpy array, in the
        order of ``candidates``; ``inf`` where non-finite).
    """
    _check_metric(metric)
    candidates = list(candidates)
    n_select = int(n_select)
    if n_select < 0:
        raise ValueError(f"n_select must be >= 0, got {n_select}")
    if not (lower < upper):
        raise ValueError(f"need lower < upper, got lower={lower}, upper={upper}")
    rng = np.random.default_rng(rng)
    if scores is None:
        if calc is None:
            raise ValueError("select_frames needs a calculator or precomputed scores")
        scores = score_frames(candidates, calc, metric=metric)
    else:
        scores = np.array(scores, dtype=float).reshape(-1)
        if len(scores) != len(candidates):
            raise ValueError(f"{len(scores)} scores for {len(candidates)} candidates")
        scores[~np.isfinite(scores)] = np.inf
    inside = np.flatnonzero((scores >= lower) & (scores < upper))
    if n_select == 0 or len(inside) == 0:
        return [], scores
    # priority order: highest score first, exact ties in random order
    tiebreak = rng.permutation(len(inside))
    inside = inside[np.lexsort((tiebreak, -scores[inside]))]
    if not diversity or len(inside) <= n_select:
        picked = list(inside[:n_select])
    else:
        X = fingerprints([candidates[k] for k in inside], calc, kind=fingerprint)
        std = X.std(0)
        X = (X - X.mean(0)) / np.where(std > 1e-12 * max(std.max(), 1e-300), std, 1.0)
        picked = [int(inside[k]) for k in farthest_point_order(X, n_select, 0)]
    selected = []
    for k in picked:
        a = _bare(candidates[k])
        a.info["al_score"] = float(scores[k])
        a.info["al_index"] = int(k)
        selected.append(a)
    return selected, scores


def _bare(atoms: Atoms) -> Atoms:
    """Copy of the structure only (numbers, positions, cell, pbc, info): no calculator,
    momenta or constraints."""
    out = Atoms(numbers=atoms.numbers.copy(), positions=atoms.positions.copy(),
                cell=atoms.cell.array.copy(), pbc=atoms.pbc.copy())
    out.info = copy.deepcopy(atoms.info)
    return out


# ------------------------------------------------------------------------------ learning
class _Stop(Exception):
    pass


def _geometry_key(atoms: Atoms) -> str:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(atoms.numbers, dtype=np.int64).tobytes())
    h.update(np.round(np.asarray(atoms.positions, dtype=float), 6).tobytes())
    h.update(np.round(np.asarray(atoms.cell.array, dtype=float), 6).tobytes())
    return h.hexdigest()


def _compact(metrics):
    if metrics is None:
        return None
    return {k: metrics[k] for k in ("n_frames", "energy", "forces", "stress")}


class ActiveLearner:
    """Committee active learning in generations (module docstring).

    Parameters
    ----------
    model : Model
        The model to fit (template, not modified): a ``LinearSNAP``/``QuadraticSNAP``/
        ``NNSNAP`` (a committee of ``committee`` members is fitted from it) or a ``Committee``
        (fitted as it is), alone or in a ``SumModel`` with fixed members such as ZBL (the
        spread is then the committee member's).
    labeller : ase.calculators.calculator.Calculator
        Reference calculator; each selected frame is copied, given this calculator and its
        energy, forces and (if implemented) stress are stored. A failing calculation is
        skipped with a warning.
    train, validation : list of ase.Atoms
        Labelled frames (:mod:`ase_mlp.training.data`); ``train`` grows, ``validation`` is
        passed to :func:`~ase_mlp.training.fit` and reported on every generation.
    fit_kwargs : dict, optional
        More arguments of :func:`~ase_mlp.training.fit` (weights, regularisation...). Without
        ``seed`` each fit gets a seed drawn from ``rng``; with one, generation ``g`` uses
        ``seed + g``. A shared in-memory descriptor cache is used unless ``cache``/
        ``cache_dir`` is given.
    committee : int
        Committee size (ignored if ``model`` is already a Committee).
    md_kwargs : dict, optional
        More arguments of :class:`ase.md.langevin.Langevin`; defaults
        ``friction=0.01 / units.fs`` and ``fixcm=False``.
    workdir : path, optional
        Where the log, labelled frames and models go (module docstring). It must not hold an
        earlier run unless :meth:`resume` is called.
    rng : numpy.random.Generator or int, optional
    device : optional
        Device of the committee calculator (default: CUDA when available).

    Attributes
    ----------
    train : list of ase.Atoms
        The current training set (initial frames, then the labelled ones).
    labelled : list of ase.Atoms
        All frames labelled by this learner (including those reloaded by :meth:`resume`).
    log : list of dict
        All generation log entries (including reloaded ones).
    generation : int
        Index of the next generation.
    model : Committee or None
        The latest fitted committee (after ``run``: the final fit if ``final_fit``).
    committees : list
        ``(generation, committee)`` of every generation fitted by this object.
    """

    def __init__(self, model, labeller, train, validation=None, *, fit_kwargs=None,
                 committee: int = 4, md_kwargs=None, workdir=None, rng=None, device=None):
        from ase_mlp.models.base import Model
        from ase_mlp.models.committee import Committee
        from ase_mlp.training.features import FeatureCache

        if not isinstance(model, Model):
            raise TypeError(f"model must be an ase_mlp Model, got {type(model).__name__}")
        self.template = model
        self.labeller = labeller
        self.train = list(train)
        self.validation = None if validation is None else list(validation)
        self.fit_kwargs = dict(fit_kwargs or {})
        for key in ("committee", "return_report"):
            if key in self.fit_kwargs:
                raise ValueError(f"fit_kwargs must not contain {key!r}")
        if "cache" not in self.fit_kwargs and "cache_dir" not in self.fit_kwargs:
            self.fit_kwargs["cache"] = FeatureCache()
        self.n_committee = None if isinstance(model, Committee) else int(committee)
        if self.n_committee is not None and self.n_committee < 2:
            raise ValueError(f"committee must be >= 2, got {committee}")
        self.md_kwargs = {"friction": 0.01 / units.fs, "fixcm": False, **(md_kwargs or {})}
        self.workdir = None if workdir is None else pathlib.Path(workdir)
        if self.workdir is not None:
            self.workdir.mkdir(parents=True, exist_ok=True)
        self.rng = np.random.default_rng(rng)
        self.device = device
        self.generation = 0
        self.log: list[dict] = []
        self.labelled: list[Atoms] = []
        self.model = None
        self.committees: list = []
        self._workdir_ok = False

    # --------------------------------------------------------------------------- files
    def _path(self, name):
        return None if self.workdir is None else self.workdir / name

    def resume(self) -> "ActiveLearner":
        """Continue a run from ``workdir``: reload the labelled frames into ``train``, the log,
        the generation counter and the random state. Returns ``self``.

        The next generation is one past the highest generation found in the log or in the
        labelled frames (frames labelled by a generation that crashed before logging are kept,
        and that generation number is not reused). Frames already in ``train`` (same
        geometry) are not added twice. A truncated last log line or frame is ignored.
        """
        from ase_mlp.training.data import DataError, read_frames

        if self.workdir is None:
            raise ValueError("resume needs a workdir")
        log = []
        log_path = self._path(LOG_NAME)
        if log_path.exists():
            for n, line in enumerate(log_path.read_text().splitlines()):
                if not line.strip():
                    continue
                try:
                    log.append(json.loads(line))
                except json.JSONDecodeError:
                    warnings.warn(f"{log_path}: line {n + 1} is not valid JSON (truncated?); "
                                  "ignored", stacklevel=2)
        frames = []
        frames_path = self._path(FRAMES_NAME)
        if frames_path.exists() and frames_path.stat().st_size > 0:
            try:
                frames = read_frames(frames_path)
            except DataError:
                k = 0
                while True:  # keep every complete frame before a damaged one
                    try:
                        frames.extend(read_frames(frames_path, index=k))
                    except DataError:
                        break
                    k += 1
                warnings.warn(f"{frames_path}: could not read frame {k} (truncated?); "
                              f"kept the {k} frames before it", stacklevel=2)
        known = {_geometry_key(a) for a in self.train}
        new = [a for a in frames if _geometry_key(a) not in known]
        self.train.extend(new)
        self.labelled = frames
        self.log = log
        gens = [int(e["generation"]) for e in log] + [
            int(a.info["al_generation"]) for a in frames if "al_generation" in a.info]
        self.generation = max(gens) + 1 if gens else 0
        if log and "rng_state" in log[-1]:
            self.rng.bit_generator.state = log[-1]["rng_state"]
        self._workdir_ok = True
        return self

    def _check_workdir(self):
        if self.workdir is None or self._workdir_ok:
            return
        for name in (LOG_NAME, FRAMES_NAME):
            p = self._path(name)
            if p.exists() and p.stat().st_size > 0:
                raise FileExistsError(
                    f"{p} holds an earlier active-learning run; call resume() to continue it "
                    "or use a fresh workdir")

    def _append_frame(self, atoms):
        import ase.io

        p = self._path(FRAMES_NAME)
        if p is not None:
            ase.io.write(p, atoms, format="extxyz", append=True)

    def _append_log(self, entry):
        p = self._path(LOG_NAME)
        if p is not None:
            with open(p, "a") as fh:
                fh.write(json.dumps(entry) + "\n")
                fh.flush()

    # ----------------------------------------------------------------------------- steps
    def _fit(self, generation):
        from ase_mlp.training.fit import fit

        kw = dict(self.fit_kwargs)
        if "seed" in kw:
            kw["seed"] = int(kw["seed"]) + generation
        else:
            kw["seed"] = int(self.rng.integers(2**31 - 1))
        model = fit(self.template, self.train, self.validation, committee=self.n_committee,
                    **kw)
        return model, kw["seed"]

    def _calculator(self, model):
        from ase_mlp.calculators.mlp import MLPCalculator

        calc = MLPCalculator(model, device=self.device)
        if not calc.committee:
            raise TypeError("the fitted model is not a Committee; no disagreement available")
        return calc

    def explore(self, calc, seeds, *, md_steps, temperature_K, timestep, sample_every,
                upper, metric="max_force_std", generation=None):
        """Langevin MD from every seed (at every temperature) with ``calc``; returns
        ``(candidates, scores, n_stopped)``, ``scores`` the disagreement of each candidate as
        computed during the MD step (no second evaluation). Snapshots (steps 0, k, 2k, ... with
        ``k = sample_every``) carry ``info`` keys ``al_generation``, ``al_seed``, ``al_step``
        and ``al_temperature_K``. A trajectory stops at the first step whose disagreement
        reaches ``upper`` (that frame is kept as a candidate) or whose structure the
        calculator rejects (non-finite positions)."""
        from ase.md.langevin import Langevin

        temps = np.atleast_1d(np.asarray(temperature_K, dtype=float))
        candidates, scores, stopped = [], [], 0
        for s, seed in enumerate(seeds):
            for T in temps:
                atoms = _bare(seed)
                atoms.info = {}
                atoms.calc = calc
                thermalize(atoms, float(T), self.rng)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", FutureWarning)  # fixcm deprecation
                    dyn = Langevin(atoms, timestep * units.fs, temperature_K=float(T),
                                   rng=self.rng, **self.md_kwargs)

                def snapshot(atoms=atoms, dyn=dyn, s=s, T=T):
                    a = _bare(atoms)
                    a.info = {"al_seed": s, "al_step": int(dyn.nsteps),
                              "al_temperature_K": float(T)}
                    if generation is not None:
                        a.info["al_generation"] = int(generation)
                    return a

                def observe(atoms=atoms, dyn=dyn, snapshot=snapshot):
                    # Langevin evaluates the forces at the new positions at the end of
                    # each step, so calc.results belong to the current structure
                    score = _score_of(calc.results, len(atoms), metric)
                    score = score if math.isfinite(score) else math.inf
                    if score >= upper or dyn.nsteps % sample_every == 0:
                        candidates.append(snapshot())
                        scores.append(score)
                    if score >= upper:
                        raise _Stop

                dyn.attach(observe, interval=1)
                try:
                    dyn.run(md_steps)
                except _Stop:
                    stopped += 1
                except ValueError as exc:  # non-finite positions / zero-volume cell
                    warnings.warn(f"MD from seed {s} at {T:g} K stopped: {exc}", stacklevel=2)
                    stopped += 1
                atoms.calc = None
        return candidates, np.array(scores, dtype=float), stopped

    def label(self, frames, generation=None) -> list[Atoms]:
        """Reference labels for ``frames`` (standard labelled copies, group ``"active"``);
        each is appended to ``workdir/labelled.extxyz`` at once."""
        from ase_mlp.training.data import Labels, label

        out = []
        for atoms in frames:
            a = _bare(atoms)
            a.calc = self.labeller
            try:
                energy = a.get_potential_energy()
                forces = a.get_forces()
                try:
                    stress = a.get_stress() if a.cell.rank == 3 and a.pbc.all() else None
                except PropertyNotImplementedError:
                    stress = None
            except Exception as exc:  # noqa: BLE001 - a failed reference calculation is skipped
                warnings.warn(f"labelling failed ({type(exc).__name__}: {exc}); frame skipped",
                              stacklevel=2)
                continue
            a.calc = None
            if generation is not None:
                a.info["al_generation"] = generation
            lab = label(a, Labels(energy=energy, forces=forces, stress=stress,
                                  group="active"))
            self._append_frame(lab)
            out.append(lab)
        return out

    # ------------------------------------------------------------------------------- run
    def run(self, generations: int, *, seeds, n_select: int = 8, md_steps: int = 200,
            temperature_K=300.0, timestep: float = 2.0, sample_every: int = 10,
            lower: float = 0.05, upper: float = 0.5, metric: str = "max_force_std",
            diversity: bool = True, final_fit: bool = True, progress: bool = True) -> list[dict]:
        """Run ``generations`` generations; return their log entries.

        Parameters
        ----------
        seeds : list of ase.Atoms
            Starting structures of the MD runs (one trajectory per seed and temperature).
        n_select : int
            Frames labelled per generation at most.
        md_steps, timestep, sample_every :
            Steps per trajectory, time step in fs, snapshot interval in steps.
        temperature_K : float or list of float
            Langevin temperature(s); a list runs every seed at every temperature.
        lower, upper, metric, diversity :
            Selection (:func:`select_frames`); ``upper`` also stops trajectories.
        final_fit : bool
            After the last generation fit a committee on all frames (``self.model``); with a
            workdir it is saved to ``model_final.pt`` and its validation errors to
            ``final.json``.

        Log entry keys: ``generation``, ``n_train`` (frames the committee was fitted on),
        ``n_train_after``, ``n_candidates``, ``n_in_window``, ``n_selected``, ``n_labelled``,
        ``n_stopped`` (trajectories stopped early), ``metric``, ``window`` ([lower, upper]),
        ``disagreement`` (``mean``/``max``/``min`` over candidates, ``selected`` scores),
        ``validation`` (errors of the committee on the validation set, or None),
        ``selected_error`` (errors of the committee on the frames just labelled, before
        adding them: its true error where it was unsure; None if none), ``fit_seed``,
        ``seconds`` (``fit``, ``md``, ``select``, ``label``), ``rng_state``. Errors are the
        ``n_frames``/``energy``/``forces``/``stress`` entries of
        :func:`~ase_mlp.training.compute_metrics` (``rmse``, ``mae``, ``n``).
        """
        from ase_mlp.training.metrics import compute_metrics

        _check_metric(metric)
        if int(generations) < 0:
            raise ValueError(f"generations must be >= 0, got {generations}")
        seeds = [seeds] if isinstance(seeds, Atoms) else list(seeds)
        if not seeds:
            raise ValueError("no seed structures")
        if int(sample_every) < 1 or int(md_steps) < 0:
            raise ValueError("need sample_every >= 1 and md_steps >= 0")
        if not (lower < upper):
            raise ValueError(f"need lower < upper, got lower={lower}, upper={upper}")
        self._check_workdir()
        self._workdir_ok = True  # files written from here on belong to this run
        entries = []
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=int(generations), desc="active learning", unit="gen")
        for _ in range(int(generations)):
            g = self.generation
            t0 = time.perf_counter()
            committee, fit_seed = self._fit(g)
            self.model = committee
            self.committees.append((g, committee))
            calc = self._calculator(committee)
            t1 = time.perf_counter()
            candidates, scores, stopped = self.explore(
                calc, seeds, md_steps=int(md_steps), temperature_K=temperature_K,
                timestep=timestep, sample_every=int(sample_every), upper=upper, metric=metric,
                generation=g)
            t2 = time.perf_counter()
            selected, scores = select_frames(candidates, calc, n_select=n_select, lower=lower,
                                             upper=upper, metric=metric, diversity=diversity,
                                             rng=self.rng, scores=scores)
            t3 = time.perf_counter()
            new = self.label(selected, generation=g)
            t4 = time.perf_counter()
            sel_err = _compact(compute_metrics(calc, new)) if new else None
            val_err = _compact(compute_metrics(calc, self.validation)) if self.validation \
                else None
            n_fit = len(self.train)
            self.train.extend(new)
            self.labelled.extend(new)
            finite = scores[np.isfinite(scores)]
            entry = {
                "generation": g,
                "n_train": n_fit,
                "n_train_after": len(self.train),
                "n_candidates": len(candidates),
                "n_in_window": int(np.sum((scores >= lower) & (scores < upper))),
                "n_selected": len(selected),
                "n_labelled": len(new),
                "n_stopped": stopped,
                "metric": metric,
                "window": [float(lower), float(upper)],
                "disagreement": {
                    "mean": float(finite.mean()) if finite.size else None,
                    "max": float(scores.max()) if scores.size else None,
                    "min": float(scores.min()) if scores.size else None,
                    "selected": [float(a.info["al_score"]) for a in selected],
                },
                "validation": val_err,
                "selected_error": sel_err,
                "fit_seed": fit_seed,
                "seconds": {"fit": t1 - t0, "md": t2 - t1, "select": t3 - t2,
                            "label": t4 - t3},
                "rng_state": self.rng.bit_generator.state,
            }
            if entry["disagreement"]["max"] == math.inf:
                entry["disagreement"]["max"] = None  # JSON has no inf
            if self.workdir is not None:
                committee.save(self.workdir / f"model_gen{g}.pt")
            self._append_log(entry)
            self.log.append(entry)
            entries.append(entry)
            self.generation = g + 1
            if bar is not None:
                ferr = (val_err or {}).get("forces") or {}
                bar.set_postfix(n_train=len(self.train), selected=len(new),
                                val_F=f"{ferr.get('rmse', float('nan')):.3g}")
                bar.update(1)
        if bar is not None:
            bar.close()
        if final_fit and generations > 0:
            committee, fit_seed = self._fit(self.generation)
            self.model = committee
            if self.workdir is not None:
                committee.save(self.workdir / "model_final.pt")
                val = _compact(compute_metrics(committee, self.validation)) \
                    if self.validation else None
                (self.workdir / "final.json").write_text(json.dumps(
                    {"generation": self.generation, "n_train": len(self.train),
                     "fit_seed": fit_seed, "validation": val}, indent=1))
        return entries
