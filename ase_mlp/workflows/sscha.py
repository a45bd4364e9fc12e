"""SSCHA (python-sscha / cellconstructor) with batched ensemble evaluation.

python-sscha evaluates an ensemble one configuration at a time through an ASE calculator
(``Ensemble.compute_ensemble`` -> ``get_energy_forces``). Here the whole ensemble goes through
one :meth:`~ase_mlp.calculators.MLPCalculator.calculate_batch` call (or one per
``batch_size`` chunk), and the results are stored exactly as python-sscha stores them:

* ``ensemble.energies``: Ry (``E / Rydberg``, eV -> Ry);
* ``ensemble.forces``: Ry/Å, shape ``(N, nat_sc, 3)`` (``F / Rydberg``);
* ``ensemble.stresses``: Ry/bohr³, full 3x3, *sign flipped* with respect to ASE
  (``-sigma * Bohr**3 / Rydberg``, positive under compression);
* ``ensemble.force_computed`` / ``ensemble.stress_computed`` set, ``has_stress`` set, then
  ``ensemble.init()``.

``Rydberg`` and ``Bohr`` are taken from :mod:`sscha.Ensemble` itself (ASE 2006 CODATA units),
so the batched route equals ``ensemble.compute_ensemble(calc)`` to round-off.

:func:`relax` runs python-sscha's own relaxation loop (``sscha.SchaMinimizer.SSCHA_Minimizer``
driven by ``sscha.Relax.SSCHA``) with this batched evaluation: the ensemble instance (only that
instance, nothing global) gets its ``compute_ensemble`` replaced. :func:`relax` can also return
the free-energy Hessian (``Ensemble.get_free_energy_hessian``).

Helpers for Gamma-only (the given cell is the SSCHA supercell) calculations:
:func:`force_constants` (batched central differences), :func:`dynamical_matrix` (a
cellconstructor ``Phonons`` from force constants in eV/Å²), :func:`phonon_energies`, and
:func:`harmonic_free_energy` (the exact quantum harmonic free energy).

python-sscha and cellconstructor are an optional extra: ``pip install 'ase-mlp[sscha]'``.
They compile Fortran: a fresh Debian/Ubuntu machine needs ``apt-get install gfortran
libblas-dev liblapack-dev`` first (see ``docs/sscha.md``).

Units at this module's interface are ASE's (eV, Å, amu, K); python-sscha objects
(``Ensemble``, ``Phonons``) keep their own (Ry, bohr, Ry masses).
"""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass, field

import numpy as np
from ase import Atoms, units
from ase.stress import voigt_6_to_full_3x3_stress


__all__ = [
    "SschaResult",
    "compute_ensemble_batched",
    "dynamical_matrix",
    "force_constants",
    "harmonic_free_energy",
    "phonon_energies",
    "relax",
    "require_sscha",
]

_INSTALL = ("pip install 'ase-mlp[sscha]' (python-sscha and cellconstructor; they compile "
            "Fortran: apt-get install gfortran libblas-dev liblapack-dev first)")


def require_sscha():
    """Import python-sscha and cellconstructor; ``ImportError`` saying how to install them."""
    try:
        import cellconstructor
        import cellconstructor.Phonons
        import cellconstructor.Structure
        import sscha
        import sscha.Ensemble
        import sscha.Relax
        import sscha.SchaMinimizer
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(f"ase_mlp.workflows.sscha needs {_INSTALL}; import failed: {err}") \
            from err
    return sscha, cellconstructor


def _units():
    """(Rydberg in eV, Bohr in Å) exactly as sscha.Ensemble converts them."""
    require_sscha()
    import sscha.Ensemble as ens_mod

    return float(ens_mod.Rydberg), float(ens_mod.Bohr)


def _chunks(indices, batch_size):
    if batch_size is None:
        yield list(indices)
        return
    for i in range(0, len(indices), batch_size):
        yield list(indices[i:i + batch_size])


def compute_ensemble_batched(ensemble, calc, *, batch_size: int | None = None,
                             compute_stress: bool = True) -> None:
    """Fill ``ensemble``'s energies, forces (and stresses) from batched calculator calls.

    The batched equivalent of python-sscha's ``ensemble.compute_ensemble(calc,
    compute_stress)`` (no cluster, no MPI): the same arrays, units and flags, then
    ``ensemble.init()``. As there, configurations already computed are skipped when some are
    not, and everything is recomputed when all are.

    Parameters
    ----------
    ensemble : sscha.Ensemble.Ensemble
        A generated ensemble (``ensemble.generate(N)``).
    calc : object with ``calculate_batch(images, properties)``
        e.g. :class:`~ase_mlp.calculators.MLPCalculator`; eV, eV/Å, Voigt eV/Å³ (ASE sign).
    batch_size : int, optional
        Configurations per ``calculate_batch`` call (default: the whole ensemble at once).
    compute_stress : bool
        Also compute and store the stress (the cell must be periodic in 3D).
    """
    rydberg, bohr = _units()
    if not hasattr(calc, "calculate_batch"):
        raise TypeError(f"calc {type(calc).__name__} has no calculate_batch(); use python-sscha's "
                        "own ensemble.compute_ensemble(calc) for one-by-one ASE calculators")
    if batch_size is not None and (int(batch_size) != batch_size or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
    n = int(ensemble.N)
    if n < 1 or len(ensemble.structures) != n:
        raise ValueError(f"the ensemble has N={n} and {len(ensemble.structures)} structures: "
                         "generate it first (ensemble.generate(N))")
    force_done = np.asarray(ensemble.force_computed, dtype=bool)
    todo_mask = ~force_done
    if compute_stress:
        todo_mask |= ~np.asarray(ensemble.stress_computed, dtype=bool)
    todo = np.flatnonzero(todo_mask) if todo_mask.any() else np.arange(n)

    energies = np.array(ensemble.energies, dtype=np.float64).reshape(-1)
    if energies.shape != (n,):
        energies = np.zeros(n, dtype=np.float64)
    properties = ("energy", "forces", "stress") if compute_stress else ("energy", "forces")
    nat_sc = ensemble.forces.shape[1]
    for chunk in _chunks(todo, batch_size):
        images = [ensemble.structures[i].get_ase_atoms() for i in chunk]
        results = calc.calculate_batch(images, properties)
        if len(results) != len(images):
            raise RuntimeError(f"calculate_batch returned {len(results)} results for "
                               f"{len(images)} structures")
        for i, res in zip(chunk, results, strict=True):
            if "error" in res:
                raise ValueError(f"ensemble configuration {i}: {res['error']}")
            forces = np.asarray(res["forces"], dtype=np.float64)
            if forces.shape != (nat_sc, 3):
                raise ValueError(f"ensemble configuration {i}: forces of shape {forces.shape}, "
                                 f"the ensemble needs ({nat_sc}, 3)")
            energies[i] = res["energy"] / rydberg                       # eV -> Ry
            ensemble.forces[i, :, :] = forces / rydberg                  # eV/Å -> Ry/Å
            if compute_stress:
                if "stress" not in res:
                    raise ValueError(f"ensemble configuration {i}: no stress (is the cell "
                                     "periodic in 3D?); use compute_stress=False")
                sigma = np.asarray(res["stress"], dtype=np.float64)
                if sigma.shape == (6,):
                    sigma = voigt_6_to_full_3x3_stress(sigma)
                # ASE eV/Å^3 (positive in tension) -> Ry/bohr^3, sscha's sign
                ensemble.stresses[i, :, :] = -sigma * bohr**3 / rydberg
    ensemble.energies = energies
    ensemble.force_computed[todo] = True
    if compute_stress:
        ensemble.stress_computed[todo] = True
    ensemble.has_stress = bool(compute_stress)
    ensemble.init()


def _batched_compute_ensemble(ensemble, batch_size, directory=None):
    """An instance-level replacement for ``ensemble.compute_ensemble`` (same signature).

    With ``directory``, each computed population is saved there (``ensemble.save_bin``,
    populations numbered from 1), as ``Relax.SSCHA(save_ensemble=True)`` would do (that
    option also writes ``dyn_pop*`` into the working directory, so it is not used).
    """
    population = [0]

    def compute_ensemble(calculator, compute_stress=True, stress_numerical=False, cluster=None,
                         verbose=True, timer=None):
        if cluster is not None or stress_numerical:
            raise ValueError("the batched ensemble evaluation supports neither clusters nor "
                             "numerical stress")
        compute_ensemble_batched(ensemble, calculator, batch_size=batch_size,
                                 compute_stress=compute_stress)
        population[0] += 1
        if directory is not None:
            ensemble.save_bin(str(directory), population[0])

    return compute_ensemble


# --------------------------------------------------------------------------- harmonic helpers
def force_constants(atoms: Atoms, calc, *, displacement: float = 0.01,
                    batch_size: int | None = None, acoustic_sum_rule: bool = True) -> np.ndarray:
    """Gamma force constants of ``atoms`` (the cell with its periodic images), eV/Å².

    Central differences of batched forces (6 N structures in ``calculate_batch`` calls),
    symmetrised; with ``acoustic_sum_rule`` each 3x3 diagonal block is set so that rows sum
    to zero. Returns ``(3N, 3N)`` with index ``3 * atom + xyz``.
    """
    if not hasattr(calc, "calculate_batch"):
        raise TypeError(f"calc {type(calc).__name__} has no calculate_batch()")
    if not displacement > 0:
        raise ValueError(f"displacement must be > 0 Å, got {displacement!r}")
    n = len(atoms)
    images = []
    for a in range(n):
        for c in range(3):
            for sign in (1.0, -1.0):
                im = atoms.copy()
                im.calc = None
                pos = im.get_positions()
                pos[a, c] += sign * displacement
                im.set_positions(pos)
                images.append(im)
    results = []
    for chunk in _chunks(np.arange(len(images)), batch_size):
        results += calc.calculate_batch([images[i] for i in chunk], ("energy", "forces"))
    phi = np.zeros((3 * n, 3 * n))
    for k in range(3 * n):
        fp = np.asarray(results[2 * k]["forces"]).reshape(-1)
        fm = np.asarray(results[2 * k + 1]["forces"]).reshape(-1)
        phi[k, :] = -(fp - fm) / (2.0 * displacement)
    phi = 0.5 * (phi + phi.T)
    if acoustic_sum_rule:
        blocks = phi.reshape(n, 3, n, 3)
        for a in range(n):
            off = blocks[a, :, :, :].sum(axis=1) - blocks[a, :, a, :]
            blocks[a, :, a, :] = -off
        phi = blocks.reshape(3 * n, 3 * n)
        phi = 0.5 * (phi + phi.T)
    return phi


def phonon_energies(force_constants: np.ndarray, masses) -> np.ndarray:
    """Phonon energies ħω (eV), ascending, of force constants (eV/Å²) and masses (amu).

    Negative eigenvalues give negative numbers (-ħ|ω|), as imaginary modes are usually shown.
    """
    phi = np.asarray(force_constants, dtype=float)
    m = np.repeat(np.asarray(masses, dtype=float), 3)
    if phi.shape != (m.size, m.size):
        raise ValueError(f"force constants of shape {phi.shape} for {m.size // 3} atoms")
    d = phi / np.sqrt(np.outer(m, m))
    lam = np.linalg.eigvalsh(0.5 * (d + d.T))                  # eV / (Å^2 amu)
    hbar = units._hbar * units.J * units.s                      # eV * ASE time
    return np.sign(lam) * np.sqrt(np.abs(lam)) * hbar


def harmonic_free_energy(energies_eV, temperature_K: float, *, threshold: float = 1e-6) -> float:
    """Exact quantum harmonic free energy (eV): Σ [ħω/2 + kT ln(1 - exp(-ħω/kT))].

    Modes with ħω below ``threshold`` eV (translations) are left out, as python-sscha does.
    """
    w = np.asarray(energies_eV, dtype=float)
    w = w[w > threshold]
    f = 0.5 * w
    if temperature_K > 0:
        kt = units.kB * temperature_K
        f = f + kt * np.log1p(-np.exp(-w / kt))
    return float(np.sum(f))


def dynamical_matrix(atoms: Atoms, force_constants: np.ndarray):
    """A Gamma-only cellconstructor ``Phonons`` of ``atoms`` from force constants (eV/Å²).

    The cell of ``atoms`` is the SSCHA supercell (supercell ``(1, 1, 1)``); masses are those of
    ``atoms`` (amu).
    """
    require_sscha()
    import cellconstructor as CC
    import cellconstructor.Phonons
    import cellconstructor.Structure

    n = len(atoms)
    phi = np.asarray(force_constants, dtype=float)
    if phi.shape != (3 * n, 3 * n):
        raise ValueError(f"force constants of shape {phi.shape}, {n} atoms need ({3 * n}, "
                         f"{3 * n})")
    if not np.all(atoms.pbc) or abs(atoms.cell.volume) < 1e-12:
        raise ValueError("atoms must be periodic in 3D with a cell (the SSCHA supercell)")
    struct = CC.Structure.Structure()
    struct.generate_from_ase_atoms(atoms, get_masses=True)
    dyn = CC.Phonons.Phonons(struct)
    ry_per_bohr2 = CC.Units.RY_TO_EV * CC.Units.A_TO_BOHR**2   # eV/Å^2 per Ry/bohr^2
    dyn.dynmats[0] = (phi / ry_per_bohr2).astype(np.complex128)
    return dyn


def _dyn_energies_eV(dyn) -> np.ndarray:
    import cellconstructor as CC

    w, _ = dyn.DiagonalizeSupercell()
    return np.sort(np.asarray(w, dtype=float)) * CC.Units.RY_TO_EV


# --------------------------------------------------------------------------- relaxation
@dataclass
class SschaResult:
    """What :func:`relax` returns.

    Energies in eV; ``frequencies`` are the SSCHA (auxiliary) phonon energies ħω in eV of the
    supercell at the final dynamical matrix (ascending, imaginary as negative);
    ``hessian_frequencies`` those of the free-energy Hessian when asked for.
    """

    dyn: object
    free_energy: float
    free_energy_error: float
    frequencies: np.ndarray
    converged: bool
    populations: int
    ensemble: object = None
    minimizer: object = None
    hessian_dyn: object = None
    hessian_frequencies: np.ndarray | None = None
    log: str = field(default="", repr=False)

    @property
    def frequencies_cm1(self) -> np.ndarray:
        return self.frequencies / (units.invcm)

    @property
    def hessian_frequencies_cm1(self) -> np.ndarray | None:
        if self.hessian_frequencies is None:
            return None
        return self.hessian_frequencies / units.invcm


def relax(dyn, calc, temperature_K: float, n_configs: int, *, max_pop: int = 20,
          batch_size: int | None = None, compute_stress: bool = False,
          minimizer_options: dict | None = None, hessian: bool = False,
          include_v4: bool = False, directory: str | os.PathLike | None = None,
          seed: int | None = None, verbose: bool = False) -> SschaResult:
    """Constant-volume SSCHA relaxation with batched ensembles.

    Runs ``sscha.Relax.SSCHA(minimizer, calc, N_configs=n_configs, max_pop=max_pop).relax()``
    where each population's ensemble goes through :func:`compute_ensemble_batched`.

    Parameters
    ----------
    dyn : cellconstructor.Phonons.Phonons or (ase.Atoms, force_constants)
        Starting dynamical matrix (e.g. :func:`dynamical_matrix` of harmonic force
        constants); not modified.
    calc : object with ``calculate_batch``
    temperature_K : float
    n_configs : int
        Configurations per population (python-sscha makes it even: +/- pairs).
    max_pop : int
        Most populations before giving up (``converged`` then False).
    minimizer_options : dict, optional
        Attributes of ``SSCHA_Minimizer`` (e.g. ``min_step_dyn``, ``kong_liu_ratio``,
        ``meaningful_factor``, ``max_ka``, ``neglect_symmetries``).
    hessian : bool
        Also compute the free-energy Hessian on the last ensemble (``include_v4``: with the
        4th-order term).
    directory : path, optional
        Save each population's ensemble and the final dynamical matrix (QE format) there;
        nothing is written when None.
    seed : int, optional
        Seed for the ensemble generation. python-sscha draws from NumPy's global generator:
        its state is saved before and restored after the run.
    verbose : bool
        Let python-sscha print (default: its output is captured into ``result.log``).
    """
    require_sscha()
    import sscha.Ensemble
    import sscha.Relax
    import sscha.SchaMinimizer

    if isinstance(dyn, tuple):
        dyn = dynamical_matrix(*dyn)
    if not temperature_K >= 0:
        raise ValueError(f"temperature_K must be >= 0, got {temperature_K!r}")
    if int(n_configs) != n_configs or n_configs < 2:
        raise ValueError(f"n_configs must be an integer >= 2, got {n_configs!r}")
    if int(max_pop) != max_pop or max_pop < 1:
        raise ValueError(f"max_pop must be an integer >= 1, got {max_pop!r}")
    if not hasattr(calc, "calculate_batch"):
        raise TypeError(f"calc {type(calc).__name__} has no calculate_batch()")

    dyn = dyn.Copy()
    ens = sscha.Ensemble.Ensemble(dyn, temperature_K, dyn.GetSupercell())
    # this instance only (Ensemble.__setattr__ refuses new attribute names)
    object.__setattr__(ens, "compute_ensemble",
                       _batched_compute_ensemble(ens, batch_size, directory))
    minim = sscha.SchaMinimizer.SSCHA_Minimizer(ens)
    for key, value in (minimizer_options or {}).items():
        if key not in minim.__total_attributes__:
            raise ValueError(f"minimizer_options: SSCHA_Minimizer has no attribute {key!r}")
        setattr(minim, key, value)
    relaxer = sscha.Relax.SSCHA(minim, ase_calculator=calc, N_configs=int(n_configs),
                                max_pop=int(max_pop), save_ensemble=False)
    relaxer.save_dyn = False            # both would write dyn_pop*_ into the working directory
    if directory is not None:
        os.makedirs(directory, exist_ok=True)

    out = io.StringIO()
    rng_state = np.random.get_state() if seed is not None else None
    try:
        if seed is not None:
            np.random.seed(seed)
        with contextlib.ExitStack() as stack:
            if not verbose:
                stack.enter_context(contextlib.redirect_stdout(out))
            converged = relaxer.relax(get_stress=compute_stress, ensemble_loc=None)
            fe, fe_err = minim.get_free_energy(return_error=True)
            hdyn = None
            if hessian:
                hdyn = minim.ensemble.get_free_energy_hessian(include_v4=include_v4)
    finally:
        if rng_state is not None:
            np.random.set_state(rng_state)
    import cellconstructor as CC

    final = minim.dyn.Copy()
    if directory is not None:
        final.save_qe(os.path.join(str(directory), "dyn_final_"))
    ry = CC.Units.RY_TO_EV
    return SschaResult(
        dyn=final, free_energy=float(fe) * ry, free_energy_error=float(fe_err) * ry,
        frequencies=_dyn_energies_eV(final), converged=bool(converged),
        populations=int(relaxer.start_pop) - 1, ensemble=minim.ensemble, minimizer=minim,
        hessian_dyn=hdyn, hessian_frequencies=None if hdyn is None else _dyn_energies_eV(hdyn),
        log=out.getvalue())
