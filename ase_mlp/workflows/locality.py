"""Force locality test (Deringer & Csányi, PRB 95, 094203, 2017) for any calculator.

For a central atom ``i`` and each radius ``R``, every atom farther than ``R`` from ``i``
(minimum-image distance, triclinic cells included) is perturbed, atoms within ``R`` stay
put, and the change of the force on ``i`` is recorded::

    dF_i(R) = |F_i(perturbed outside R) - F_i(reference)|

The RMS over trials as a function of ``R`` bounds the error of any model with cutoff
``R`` (the reference being the calculator under test). Perturbations are random vectors of
fixed length ``delta`` (default), or the positions of thermal snapshots.

Exactness rule (methods, section 6): a pair potential with cutoff ``r_c`` gives exactly
zero for ``R > r_c + delta``, a local many-body model (EAM, EMT, SNAP, descriptor NN) only
for ``R > 2 r_c + delta``. :func:`exact_zero_radius` applies it to ase_mlp models.

* :func:`locality_test` runs the test (structures evaluated with
  :func:`~ase_mlp.workflows.elastic.evaluate_many`, in batches for
  :class:`~ase_mlp.calculators.MLPCalculator`).
* :func:`suggest_cutoff` is the smallest tested radius from which on the RMS stays below
  a tolerance; :func:`plot_locality` draws the curve (needs matplotlib).

Units: Å and eV/Å.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.geometry import get_distances

from ase_mlp._util import perpendicular_widths
from ase_mlp.workflows.elastic import evaluate_many


@dataclass
class LocalityResult:
    """Outcome of :func:`locality_test`.

    Attributes
    ----------
    radii : ndarray (n_radii,)
        Radii R (Å), ascending.
    rms : ndarray (n_radii,)
        RMS of ``|dF_i|`` over trials and centres (eV/Å).
    max : ndarray (n_radii,)
        Largest ``|dF_i|`` over trials and centres (eV/Å).
    values : ndarray (n_radii, n_trials, n_centers)
        Every ``|dF_i|`` (eV/Å).
    reference_forces : ndarray (n_centers, 3)
        Forces on the centres in the unperturbed structure (eV/Å).
    centers : ndarray (n_centers,)
        Indices of the central atoms.
    n_perturbed : ndarray (n_radii, n_centers)
        Number of atoms perturbed (farther than R from the centre).
    mode : str
        ``"random"`` or ``"snapshots"``.
    delta : float
        Random mode: the displacement length; snapshots: the largest displacement of a
        perturbed atom (Å).
    cutoff : float
        Interaction cutoff used in the cell-size check (0 if unknown).
    zero_beyond : float or None
        Radius beyond which ``dF_i`` must vanish exactly (:func:`exact_zero_radius` plus
        ``delta``), when the calculator's form is known.
    """

    radii: np.ndarray
    rms: np.ndarray
    max: np.ndarray
    values: np.ndarray
    reference_forces: np.ndarray
    centers: np.ndarray
    n_perturbed: np.ndarray
    mode: str
    delta: float
    cutoff: float = 0.0
    zero_beyond: float | None = None

    def suggest_cutoff(self, tol: float) -> float | None:
        """See :func:`suggest_cutoff`."""
        return suggest_cutoff(self, tol)

    def as_dict(self) -> dict:
        """JSON-able dict (arrays as lists)."""
        out = {}
        for key, value in self.__dict__.items():
            out[key] = value.tolist() if isinstance(value, np.ndarray) else value
        return out


def exact_zero_radius(calc) -> float | None:
    """Interaction range beyond which perturbations cannot change a force, if known.

    For an :class:`~ase_mlp.calculators.MLPCalculator`: ``r_c`` for ZBL (pair), ``2 r_c``
    for SNAP-family models (local many-body), the largest member value for sums and
    committees; ``None`` for any other model or calculator. Add the largest displacement
    to get the radius of exact zero.
    """
    model = getattr(calc, "model", None)
    return None if model is None else _model_range(model)


def _model_range(model) -> float | None:
    from ase_mlp.models.base import CompositeModel, Model
    from ase_mlp.models.snap import _SNAPBase
    from ase_mlp.models.zbl import ZBL

    if not isinstance(model, Model):
        return None
    if isinstance(model, ZBL):
        return float(model.cutoff)
    if isinstance(model, _SNAPBase):
        return 2.0 * float(model.cutoff)
    if isinstance(model, CompositeModel):
        ranges = [_model_range(m) for m in model.models]
        return None if any(r is None for r in ranges) else max(ranges)
    return None


def _known_cutoff(calc) -> float:
    model = getattr(calc, "model", None)
    try:
        return float(model.cutoff) if model is not None else 0.0
    except (AttributeError, TypeError, ValueError):
        return 0.0


def _centers(center, n: int) -> np.ndarray:
    if isinstance(center, (int, np.integer)):
        center = [center]
    idx = np.asarray(list(center))
    if idx.ndim != 1 or idx.size == 0 or not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"center must be an atom index or a non-empty list of indices, "
                         f"got {center!r}")
    bad = idx[(idx < -n) | (idx >= n)]
    if bad.size:
        raise ValueError(f"center index {int(bad[0])} out of range for {n} atoms")
    return np.unique(idx % n)


def _check_cell(atoms: Atoms, r_max: float, cutoff: float) -> None:
    pbc = np.asarray(atoms.pbc, dtype=bool)
    if not pbc.any():
        return
    widths = perpendicular_widths(atoms.cell.array)
    need = r_max + cutoff
    short = pbc & ~(widths / 2 > need)
    if short.any():
        reps = np.where(pbc, np.ceil(2 * need / widths * (1 + 1e-9) + 1e-9), 1).astype(int)
        reps = np.maximum(reps, 1)
        raise ValueError(
            f"cell too small for the locality test: perpendicular widths "
            f"{np.array2string(widths, precision=3)} Å (periodic {pbc.tolist()}); every "
            f"periodic width must exceed 2 (R_max + cutoff) = 2 ({r_max:g} + {cutoff:g}) = "
            f"{2 * need:.3f} Å. Use a supercell, e.g. atoms.repeat({tuple(reps.tolist())}), "
            f"or smaller radii")


def _snapshots(atoms: Atoms, snaps: Sequence[Atoms], trials: int | None) -> np.ndarray:
    snaps = list(snaps)
    if not snaps:
        raise ValueError("mode: give 'random' or a non-empty list of snapshot structures")
    n = len(snaps) if trials is None else int(trials)
    if n < 1 or n > len(snaps):
        raise ValueError(f"trials={trials}: {len(snaps)} snapshots available")
    disp = []
    for k, s in enumerate(snaps[:n]):
        if not isinstance(s, Atoms) or len(s) != len(atoms) or \
                np.any(s.numbers != atoms.numbers):
            raise ValueError(f"snapshot {k} does not hold the same atoms (species, order)")
        if not np.allclose(s.cell.array, atoms.cell.array, atol=1e-6):
            raise ValueError(f"snapshot {k} has a different cell")
        d = s.positions - atoms.positions
        if atoms.pbc.any():  # wrapped positions: take the minimum-image displacement
            from ase.geometry import find_mic

            d = find_mic(d, atoms.cell, atoms.pbc)[0]
        disp.append(d)
    return np.asarray(disp)


def locality_test(
    atoms: Atoms,
    calc,
    radii: Sequence[float],
    *,
    center=0,
    delta: float = 0.1,
    trials: int | None = None,
    rng=None,
    mode="random",
    cutoff: float | None = None,
    batch_size: int | None = None,
    progress: bool = False,
) -> LocalityResult:
    """Change of the force on a central atom when atoms beyond ``R`` are perturbed.

    For each trial one perturbation field is drawn for all atoms; at each radius it is
    applied to the atoms farther than ``R`` (minimum image) from the centre, so the curves
    of one trial are correlated across radii. Several centres share the fields.

    Parameters
    ----------
    atoms : ase.Atoms
        Structure (left untouched); periodic cells need perpendicular widths
        ``w > 2 (max(radii) + cutoff)``.
    calc : calculator
        Any ASE calculator; an :class:`~ase_mlp.calculators.MLPCalculator` evaluates the
        perturbed structures in batches.
    radii : sequence of float
        Radii R (Å, > 0); sorted ascending in the result.
    center : int or sequence of int
        Central atom(s).
    delta : float
        Random mode: length of every random displacement (Å, > 0).
    trials : int, optional
        Number of trials (default 10 in random mode, all snapshots otherwise).
    rng : numpy.random.Generator or int, optional
        Random generator or seed (random mode).
    mode : "random" or sequence of ase.Atoms
        ``"random"``: displace by random vectors of length ``delta`` (uniform directions);
        snapshots: thermal snapshots of the same atoms and cell, one per trial, whose
        positions replace those of the atoms beyond R.
    cutoff : float, optional
        Interaction cutoff added to ``max(radii)`` in the cell check; default
        ``calc.model.cutoff`` when the calculator has a model, else 0.
    batch_size : int, optional
        Structures per evaluation call (default: about 20 000 atoms per call).
    progress : bool
        Show a tqdm progress bar.

    Returns
    -------
    LocalityResult
    """
    radii = np.sort(np.asarray(radii, dtype=float).ravel())
    if radii.size == 0 or not np.all(np.isfinite(radii)) or np.any(radii <= 0):
        raise ValueError(f"radii must be positive and finite, got {radii.tolist()}")
    n = len(atoms)
    if n < 2:
        raise ValueError("the locality test needs at least 2 atoms")
    centers = _centers(center, n)
    cutoff = _known_cutoff(calc) if cutoff is None else float(cutoff)
    if not (np.isfinite(cutoff) and cutoff >= 0):
        raise ValueError(f"cutoff must be >= 0, got {cutoff}")

    if isinstance(mode, str):
        if mode != "random":
            raise ValueError(f"mode must be 'random' or a list of snapshots, got {mode!r}")
        if not (np.isfinite(delta) and delta > 0):
            raise ValueError(f"delta must be > 0 (Å), got {delta}")
        trials = 10 if trials is None else int(trials)
        if trials < 1:
            raise ValueError(f"trials must be >= 1, got {trials}")
        _check_cell(atoms, radii[-1], cutoff)
        gen = np.random.default_rng(rng)
        u = gen.normal(size=(trials, n, 3))
        disp = delta * u / np.linalg.norm(u, axis=2, keepdims=True)
        mode_name, size = "random", float(delta)
    else:
        disp = _snapshots(atoms, [mode] if isinstance(mode, Atoms) else mode, trials)
        trials = len(disp)
        _check_cell(atoms, radii[-1], cutoff)
        mode_name = "snapshots"

    pos0 = atoms.get_positions()
    dist = np.empty((len(centers), n))
    for c, i in enumerate(centers):
        dist[c] = get_distances(pos0[i], pos0, cell=atoms.cell, pbc=atoms.pbc)[1][0]
    outside = dist[None, :, :] > radii[:, None, None]          # (n_radii, n_centers, n)
    if mode_name == "snapshots":
        moved = np.linalg.norm(disp, axis=2)                       # (trials, n)
        far = outside.any(axis=(0, 1))
        size = float(moved[:, far].max()) if far.any() else 0.0

    base = atoms.copy()
    base.calc = None
    ref = evaluate_many([base], calc, ("forces",))[0]["forces"][centers]

    jobs = [(r, t, c) for r in range(len(radii)) for t in range(trials)
            for c in range(len(centers))]
    if batch_size is None:
        batch_size = max(1, min(64, 20000 // n))
    values = np.zeros((len(radii), trials, len(centers)))

    def build(r, t, c):
        a = base.copy()
        mask = outside[r, c]
        a.positions[mask] += disp[t][mask]
        return a

    from tqdm.auto import tqdm

    with tqdm(total=len(jobs), desc="locality", unit="structure", disable=not progress) as bar:
        for start in range(0, len(jobs), batch_size):
            chunk = jobs[start:start + batch_size]
            res = evaluate_many([build(*job) for job in chunk], calc, ("forces",),
                                batch_size=batch_size)
            for (r, t, c), out in zip(chunk, res, strict=True):
                values[r, t, c] = np.linalg.norm(out["forces"][centers[c]] - ref[c])
            bar.update(len(chunk))

    flat = values.reshape(len(radii), -1)
    zero = exact_zero_radius(calc)
    return LocalityResult(
        radii=radii, rms=np.sqrt(np.mean(flat**2, axis=1)), max=flat.max(axis=1),
        values=values, reference_forces=ref, centers=centers,
        n_perturbed=outside.sum(axis=2).astype(int), mode=mode_name, delta=size,
        cutoff=cutoff, zero_beyond=None if zero is None else zero + size)


def suggest_cutoff(result: LocalityResult, tol: float) -> float | None:
    """Smallest tested radius from which on the RMS force change stays below ``tol``.

    Parameters
    ----------
    result : LocalityResult
    tol : float
        Tolerance on the RMS ``|dF_i|`` (eV/Å, > 0).

    Returns
    -------
    float or None
        A radius of ``result.radii``; ``None`` when the RMS at the largest radius is not
        below ``tol``.
    """
    if not tol > 0:
        raise ValueError(f"tol must be > 0, got {tol}")
    above = np.nonzero(np.asarray(result.rms) >= tol)[0]
    if above.size == 0:
        return float(result.radii[0])
    last = above[-1]
    return None if last + 1 >= len(result.radii) else float(result.radii[last + 1])


def plot_locality(result: LocalityResult, path=None, *, title: str | None = None):
    """Plot RMS (and every trial of) ``|dF_i|`` against R on a log scale.

    Exact zeros cannot sit on a log axis: they are drawn as open triangles on the lower
    edge. Needs matplotlib (imported here). Returns the figure; saves it when ``path``
    is given.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError as err:  # pragma: no cover (matplotlib present in dev)
        raise ImportError("plot_locality needs matplotlib (pip install 'ase-mlp[plot]')") \
            from err

    radii = np.asarray(result.radii)
    rms = np.asarray(result.rms)
    vals = np.asarray(result.values).reshape(len(radii), -1)
    positive = np.concatenate([vals[vals > 0], rms[rms > 0]])
    floor = positive.min() / 10 if positive.size else 1e-16
    fig = Figure(figsize=(5.0, 3.8), layout="constrained")
    ax = fig.add_subplot(111)
    rr = np.repeat(radii, vals.shape[1])
    ax.plot(rr[vals.ravel() > 0], vals.ravel()[vals.ravel() > 0], ".", color="0.6",
            label="trials")
    ok = rms > 0
    ax.plot(radii[ok], rms[ok], "o-", label="RMS")
    if (~ok).any():
        ax.plot(radii[~ok], np.full((~ok).sum(), floor), "v", mfc="none", color="C3",
                label="exactly 0")
    if result.zero_beyond is not None:
        ax.axvline(result.zero_beyond, ls="--", color="0.4", lw=1,
                   label=f"exact zero beyond {result.zero_beyond:.2f} Å")
    ax.set_yscale("log")
    ax.set_xlabel("R (Å)")
    ax.set_ylabel("|ΔF| on the central atom (eV/Å)")
    ax.set_title(title or f"force locality ({result.mode}, δ = {result.delta:.3g} Å)")
    ax.legend(fontsize="small")
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig
