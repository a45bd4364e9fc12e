"""Harmonic phonons with phonopy (finite displacements), with any ASE calculator.

* :func:`phonons` builds a :class:`phonopy.Phonopy` object, evaluates the forces of all
  displaced supercells through :func:`~ase_mlp.workflows.elastic.evaluate_many` (batched
  with :class:`~ase_mlp.calculators.MLPCalculator`, one by one for other ASE calculators)
  and produces the force constants; the returned object is ready for any phonopy analysis.
* :func:`compute_forces` fills the forces of a :class:`phonopy.Phonopy` object a phonopy
  script (or ``phonopy.load`` of a ``phonopy -d`` file) already displaced: the route for
  existing phonopy scripts (``ase-mlp phonons --phonopy phonopy_disp.yaml`` writes
  ``FORCE_SETS`` for the phonopy CLI).
* :func:`phonon_summary` runs a q-point mesh, the total DOS, the thermal properties, the
  zero-point energy and the band structure along phonopy's automatic path, optionally
  saving a band + DOS figure.

phonopy is imported inside the functions (``pip install 'ase-mlp[phonopy]'``), so importing
this module does not need it. Units: frequencies in THz, energies in eV per primitive cell
(phonopy's ``kJ/mol`` are per mole of primitive cells and are converted), entropy and heat
capacity in eV/K per primitive cell; lengths in Å.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from ase import Atoms, units

from ase_mlp._util import perpendicular_widths
from ase_mlp.workflows.elastic import evaluate_many


_KJMOL = units.kJ / units.mol          # 1 kJ/mol in eV (per formula unit)
_JKMOL = units.J / units.mol           # 1 J/(K mol) in eV/K
_INSTALL = "phonopy is required for phonon workflows: pip install 'ase-mlp[phonopy]'"


def _import_phonopy():
    try:
        import phonopy
        from phonopy import Phonopy
        from phonopy.structure.atoms import PhonopyAtoms
    except ImportError as exc:  # pragma: no cover - exercised only without phonopy
        raise ImportError(_INSTALL) from exc
    return phonopy, Phonopy, PhonopyAtoms


def _supercell_matrix(supercell) -> np.ndarray:
    m = np.asarray(supercell, dtype=int)
    if m.shape == ():
        m = np.diag([int(m)] * 3)
    elif m.shape == (3,):
        m = np.diag(m)
    elif m.shape != (3, 3):
        raise ValueError(f"supercell must be an int, 3 ints or a 3x3 matrix, got shape {m.shape}")
    if round(abs(np.linalg.det(m))) < 1:
        raise ValueError("supercell matrix is singular")
    return m


def _cutoff(calc) -> float | None:
    model = getattr(calc, "model", None)
    cutoff = getattr(model, "cutoff", None)
    try:
        return None if cutoff is None else float(cutoff)
    except (TypeError, ValueError):
        return None


def phonons(
    atoms: Atoms,
    calc,
    supercell,
    *,
    distance: float = 0.01,
    primitive_matrix="auto",
    batch_size: int = 64,
    symprec: float = 1e-5,
    progress: bool = False,
):
    """Harmonic force constants by finite displacements with phonopy.

    Parameters
    ----------
    atoms : ase.Atoms
        Unit cell (it should be relaxed: residual forces bias the force constants).
    calc : calculator
        :class:`~ase_mlp.calculators.MLPCalculator` (all displaced supercells are
        evaluated in batches of ``batch_size``) or any ASE calculator (one by one).
    supercell : int, 3 ints or 3x3 int matrix
        Supercell matrix relative to ``atoms``' cell (phonopy's ``supercell_matrix``).
    distance : float
        Displacement amplitude in Å.
    primitive_matrix : "auto", str or 3x3 matrix
        Passed to :class:`phonopy.Phonopy` (``"auto"``: found by symmetry).
    batch_size : int
        Structures per batched model call.
    symprec : float
        Symmetry tolerance in Å.
    progress : bool
        Show a tqdm progress bar (on stderr) over the displaced supercells.

    Returns
    -------
    phonopy.Phonopy
        With displacements, forces and force constants set.

    Warns
    -----
    UserWarning
        If the calculator's model has a ``cutoff`` and a perpendicular width of the
        supercell is below twice that cutoff: the force constants are then truncated or
        aliased by periodic images.
    """
    _, Phonopy, PhonopyAtoms = _import_phonopy()
    smat = _supercell_matrix(supercell)
    unitcell = PhonopyAtoms(symbols=atoms.get_chemical_symbols(),
                            cell=np.asarray(atoms.cell, dtype=float),
                            scaled_positions=atoms.get_scaled_positions(wrap=False),
                            masses=atoms.get_masses())
    with warnings.catch_warnings():
        # phonopy 4 warns that "auto" differs from its v3 default; here "auto" is our default
        warnings.filterwarnings("ignore", message="primitive_matrix defaulted to 'auto'")
        phonon = Phonopy(unitcell, supercell_matrix=smat, primitive_matrix=primitive_matrix,
                         symprec=symprec)
    phonon.generate_displacements(distance=distance)
    compute_forces(phonon, calc, batch_size=batch_size, progress=progress, _stacklevel=3)
    phonon.produce_force_constants()
    return phonon


def compute_forces(phonon, calc, *, batch_size: int = 64, progress: bool = False,
                   _stacklevel: int = 2) -> np.ndarray:
    """Evaluate the displaced supercells of an existing :class:`phonopy.Phonopy` object.

    The route for existing phonopy scripts: build and displace ``phonon`` as usual
    (``Phonopy(...)``, ``generate_displacements``, or ``phonopy.load("phonopy_disp.yaml")``
    after ``phonopy -d``), then call this instead of looping over
    ``phonon.supercells_with_displacements`` with a calculator. The forces are set on
    ``phonon`` (``phonon.forces``) and returned; continue with
    ``phonon.produce_force_constants()`` or write ``FORCE_SETS`` with
    :func:`phonopy.file_IO.write_FORCE_SETS` / ``phonon.save()`` for the phonopy CLI.

    Parameters
    ----------
    phonon : phonopy.Phonopy
        With displacements generated.
    calc : calculator
        :class:`~ase_mlp.calculators.MLPCalculator` (batched) or any ASE calculator.
    batch_size : int
        Structures per batched model call.
    progress : bool
        Show a tqdm progress bar (on stderr) over the displaced supercells.

    Returns
    -------
    numpy.ndarray
        Forces, shape ``(n_displacements, n_supercell_atoms, 3)``, eV/Å.

    Warns
    -----
    UserWarning
        If the calculator's model has a ``cutoff`` and a perpendicular width of the
        supercell is below twice that cutoff.
    """
    supercells = phonon.supercells_with_displacements
    if supercells is None or len(supercells) == 0:
        raise ValueError("the Phonopy object has no displacements: call "
                         "phonon.generate_displacements() first")
    cutoff = _cutoff(calc)
    if cutoff is not None:
        widths = perpendicular_widths(np.asarray(phonon.supercell.cell, dtype=float))
        if widths.min() < 2.0 * cutoff:
            warnings.warn(
                f"supercell too small for phonons: smallest perpendicular width "
                f"{widths.min():.3f} Å < 2 x cutoff = {2.0 * cutoff:.3f} Å (cutoff "
                f"{cutoff:.3f} Å); force constants are affected by periodic images, "
                f"use a larger supercell",
                UserWarning, stacklevel=_stacklevel + 1)
    images = [Atoms(symbols=sc.symbols, cell=sc.cell, scaled_positions=sc.scaled_positions,
                    masses=sc.masses, pbc=True)
              for sc in supercells if sc is not None]
    if len(images) != len(supercells):
        raise ValueError("some displaced supercells are None (phonopy's random-displacement "
                         "placeholders); generate them before computing forces")
    results = _evaluate_forces(images, calc, batch_size, progress)
    forces = np.array([r["forces"] for r in results], dtype=float)
    phonon.forces = forces
    return forces


def _evaluate_forces(images, calc, batch_size: int, progress: bool) -> list[dict]:
    """:func:`evaluate_many` of the forces, chunk by chunk under a progress bar."""
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not progress:
        return evaluate_many(images, calc, ("forces",), batch_size=batch_size)
    from tqdm.auto import tqdm

    step = int(batch_size) if hasattr(calc, "calculate_batch") else 1
    results: list[dict] = []
    with tqdm(total=len(images), desc="phonons", unit="supercell") as bar:
        for start in range(0, len(images), step):
            chunk = images[start:start + step]
            results += evaluate_many(chunk, calc, ("forces",), batch_size=batch_size)
            bar.update(len(chunk))
    return results


def phonon_summary(
    phonon,
    *,
    mesh=(20, 20, 20),
    temperatures: Sequence[float] = (0, 100, 200, 300, 500, 1000),
    band_path="auto",
    npoints: int = 51,
    plot=None,
) -> dict:
    """Mesh, DOS, thermal properties, zero-point energy and band structure of ``phonon``.

    Parameters
    ----------
    phonon : phonopy.Phonopy
        With force constants (e.g. from :func:`phonons`).
    mesh : 3 ints or float
        Gamma-centred q-point mesh (phonopy's ``run_mesh``; a float is a length).
    temperatures : sequence of float
        Temperatures in K for the thermal properties (T = 0 is added for the zero-point
        energy if absent). Modes below 1e-3 THz (acoustic at Gamma, imaginary) are left
        out of the sums.
    band_path : "auto", None or list of paths
        ``"auto"``: phonopy's :meth:`~phonopy.Phonopy.auto_band_structure` (needs
        ``seekpath``; skipped with a warning without it). A list of paths, each a list of
        fractional q-points (in the primitive reciprocal basis), is used as is.
        ``None`` skips the band structure.
    npoints : int
        q-points per band segment, end points included.
    plot : str or path, optional
        Save a band structure + DOS figure there (needs matplotlib; skipped with one
        warning without it).

    Returns
    -------
    dict
        ``temperatures`` (K), ``free_energy`` (eV/primitive cell), ``entropy`` and
        ``heat_capacity`` (eV/K per primitive cell), ``zero_point_energy`` (eV/primitive
        cell, the free energy at 0 K), ``dos_frequencies`` (THz), ``dos`` (states/THz per
        primitive cell), ``max_frequency`` and ``min_frequency`` (THz, over the mesh),
        ``n_atoms_primitive``, and when a band structure was computed ``band``: a dict
        with ``qpoints``, ``distances``, ``frequencies`` (lists per segment), ``labels``
        and ``path_connections``.
    """
    _import_phonopy()
    temps = np.asarray(sorted(set(float(t) for t in temperatures) | {0.0}), dtype=float)
    phonon.run_mesh(mesh, is_gamma_center=True)
    mesh_freqs = phonon.mesh.frequencies
    phonon.run_total_dos()
    dos = phonon.total_dos
    # modes below 1e-3 THz (the Gamma acoustic ones, and imaginary ones) are left out
    phonon.run_thermal_properties(temperatures=temps, cutoff_frequency=1e-3)
    # (temperatures K, free energy kJ/mol, entropy J/K/mol, heat capacity J/K/mol) per mole
    # of primitive cells: phonopy 2.x to 4.x
    t, fe, entropy, cv = phonon.thermal_properties.thermal_properties
    free = np.asarray(fe, dtype=float) * _KJMOL
    out = {
        "temperatures": np.asarray(t, dtype=float),
        "free_energy": free,
        "entropy": np.asarray(entropy, dtype=float) * _JKMOL,
        "heat_capacity": np.asarray(cv, dtype=float) * _JKMOL,
        "zero_point_energy": float(free[np.argmin(np.abs(t))]),
        "dos_frequencies": np.asarray(dos.frequency_points, dtype=float),
        "dos": np.asarray(dos.dos, dtype=float),
        "max_frequency": float(np.max(mesh_freqs)),
        "min_frequency": float(np.min(mesh_freqs)),
        "n_atoms_primitive": len(phonon.primitive),
    }
    band = _band_structure(phonon, band_path, npoints)
    if band is not None:
        out["band"] = band
    if plot is not None:
        _plot(out, plot)
    return out


def _band_structure(phonon, band_path, npoints: int) -> dict | None:
    if band_path is None:
        return None
    if isinstance(band_path, str):
        if band_path != "auto":
            raise ValueError(f"band_path must be 'auto', None or a list of paths, got "
                             f"{band_path!r}")
        try:
            import seekpath  # noqa: F401
        except ImportError:
            warnings.warn("band structure skipped: band_path='auto' needs seekpath "
                          "(pip install seekpath)", UserWarning, stacklevel=3)
            return None
        phonon.auto_band_structure(npoints=npoints)
    else:
        from phonopy.phonon.band_structure import get_band_qpoints_and_path_connections

        qpoints, connections = get_band_qpoints_and_path_connections(band_path,
                                                                     npoints=npoints)
        phonon.run_band_structure(qpoints, path_connections=connections)
    bs = phonon.band_structure
    return {
        "qpoints": [np.asarray(q) for q in bs.qpoints],
        "distances": [np.asarray(x) for x in bs.distances],
        "frequencies": [np.asarray(f) for f in bs.frequencies],
        "labels": list(bs.labels) if getattr(bs, "labels", None) is not None else None,
        "path_connections": list(bs.path_connections),
    }


def _plot(summary: dict, filename) -> None:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        warnings.warn("plot skipped: matplotlib is not installed "
                      "(pip install 'ase-mlp[plot]')", UserWarning, stacklevel=3)
        return
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    band = summary.get("band")
    if band is not None:
        ax_b, ax_d = fig.subplots(1, 2, sharey=True, width_ratios=(3, 1))
        names = list(band["labels"] or [])
        ticks, labels = [], []
        for k, (x, f) in enumerate(zip(band["distances"], band["frequencies"], strict=True)):
            ax_b.plot(x, f, color="C0", lw=1)
            if k == 0:
                ticks.append(x[0])
                labels.append(names.pop(0) if names else "")
            elif not band["path_connections"][k - 1]:   # a jump: one tick, "A|B"
                labels[-1] += "|" + (names.pop(0) if names else "")
            ticks.append(x[-1])
            labels.append(names.pop(0) if names else "")
        ax_b.set_xticks(ticks, labels)
        for t in ticks:
            ax_b.axvline(t, color="0.7", lw=0.5)
        ax_b.axhline(0.0, color="0.5", lw=0.5, ls="--")
        ax_b.set_xlim(band["distances"][0][0], band["distances"][-1][-1])
        ax_b.set_ylabel("frequency (THz)")
    else:
        ax_d = fig.subplots()
        ax_d.set_ylabel("frequency (THz)")
    ax_d.plot(summary["dos"], summary["dos_frequencies"], color="C1", lw=1)
    ax_d.set_xlabel("DOS (1/THz)")
    ax_d.set_xlim(left=0)
    fig.savefig(filename, dpi=120)
