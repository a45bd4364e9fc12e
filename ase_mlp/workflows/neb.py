"""Nudged elastic band with batched energy/force evaluation.

:class:`BatchedNEB` is a subclass of ASE's :class:`ase.mep.NEB`: it works with the ASE
optimisers (``FIRE``, ``BFGS``, ``MDMin``, ...) and tools (:class:`ase.mep.NEBTools`,
trajectories), but the images need no calculators. Every time the band's forces are needed,
all images whose structure changed since the last evaluation are evaluated together with
:func:`~ase_mlp.workflows.elastic.evaluate_many` (one ``MLPCalculator.calculate_batch``
call per chunk of ``batch_size``; any other ASE calculator is called one image at a time).
The results are stored on each image as a
:class:`~ase.calculators.singlepoint.SinglePointCalculator`, then ASE's own NEB force
projection runs unchanged.
"""

from __future__ import annotations

import warnings

import numpy as np
from ase import Atoms
from ase.build import minimize_rotation_and_translation
from ase.calculators.singlepoint import SinglePointCalculator
from ase.mep import NEB, NEBTools

from ase_mlp.workflows.elastic import evaluate_many


ENDPOINT_FMAX = 0.05  # eV/Å; end points with larger forces trigger a warning


def _state(atoms: Atoms) -> tuple:
    return (atoms.get_positions().copy(), atoms.cell.array.copy(), atoms.numbers.copy(),
            atoms.pbc.copy())


def _same_state(a: tuple, b: tuple) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


class BatchedNEB(NEB):
    """ASE ``NEB`` whose images are evaluated in one batched call per force evaluation.

    Parameters
    ----------
    images : list of ase.Atoms
        The band, end points included. Calculators attached to the images are replaced by
        single-point calculators holding the batched results.
    calc : calculator
        Calculator used for every image (e.g. :class:`~ase_mlp.calculators.MLPCalculator`).
    k, climb, method
        As in :class:`ase.mep.NEB` (default method ``"improvedtangent"``).
    batch_size : int
        Images per ``calculate_batch`` call.
    **neb_kwargs
        Passed to :class:`ase.mep.NEB` (``remove_rotation_and_translation``, ``precon``,
        ``dynamic_relaxation``, ...). ``parallel`` and ``allow_shared_calculator`` are not
        accepted (evaluation is already batched).
    """

    def __init__(self, images, calc, *, k=0.1, climb=False, method="improvedtangent",
                 batch_size: int = 64, **neb_kwargs):
        for key in ("parallel", "allow_shared_calculator", "world"):
            if key in neb_kwargs:
                raise TypeError(f"BatchedNEB does not accept {key!r}")
        images = list(images)
        if len(images) < 3:
            raise ValueError(f"a NEB needs at least 3 images, got {len(images)}")
        ref = images[0]
        for i, image in enumerate(images[1:], start=1):
            if len(image) != len(ref):
                raise ValueError(f"image {i} has {len(image)} atoms, image 0 has {len(ref)}")
            if image.get_chemical_symbols() != ref.get_chemical_symbols():
                raise ValueError(f"image {i} has a different chemical-symbol order than "
                                 f"image 0")
        self.calc = calc
        self.batch_size = batch_size
        self.n_evaluations = 0          # images evaluated so far
        self.n_batches = 0              # evaluate_many calls so far
        self._states: list[tuple | None] = [None] * len(images)
        self._passthrough = False       # True while IDPP calculators are attached
        super().__init__(images, k=k, climb=climb, method=method, **neb_kwargs)
        self._evaluate_stale()
        for i, name in ((0, "initial"), (len(images) - 1, "final")):
            fmax = float(np.linalg.norm(images[i].get_forces(), axis=1).max())
            if fmax > ENDPOINT_FMAX:
                warnings.warn(f"the {name} end point (image {i}) is not relaxed: "
                              f"max |F| = {fmax:.4f} eV/Å > {ENDPOINT_FMAX} eV/Å",
                              stacklevel=2)

    def _evaluate_stale(self) -> None:
        """Evaluate, in one batched call, every image whose structure changed."""
        stale = []
        for i, image in enumerate(self.images):
            st = self._states[i]
            if st is None or not _same_state(st, _state(image)) or image.calc is None:
                stale.append(i)
        if not stale:
            return
        results = evaluate_many([self.images[i] for i in stale], self.calc,
                                ("energy", "forces"), batch_size=self.batch_size)
        self.n_evaluations += len(stale)
        self.n_batches += 1
        for i, r in zip(stale, results, strict=True):
            image = self.images[i]
            image.calc = SinglePointCalculator(image, energy=r["energy"], forces=r["forces"])
            self._states[i] = _state(image)

    def interpolate(self, method="linear", mic=False, apply_constraint=None):
        """As :meth:`ase.mep.NEB.interpolate`; ``"idpp"`` uses ASE's IDPP calculators."""
        self._passthrough = True
        try:
            super().interpolate(method, mic=mic, apply_constraint=apply_constraint)
        finally:
            self._passthrough = False

    def get_forces(self):
        if self._passthrough:           # IDPP optimisation inside interpolate("idpp")
            return super().get_forces()
        if self.remove_rotation_and_translation:
            for i in range(1, self.nimages):
                minimize_rotation_and_translation(self.images[i - 1], self.images[i])
        self._evaluate_stale()
        rrt, self.remove_rotation_and_translation = self.remove_rotation_and_translation, False
        try:
            return super().get_forces()
        finally:
            self.remove_rotation_and_translation = rrt

    def get_image_energies(self) -> np.ndarray:
        """Potential energies of all images (end points included), eV."""
        self._evaluate_stale()
        return np.array([image.get_potential_energy() for image in self.images])


def run_neb(initial: Atoms, final: Atoms, calc, *, n_images: int = 5,
            interpolation: str = "idpp", climb: bool = True, optimizer: str = "FIRE",
            fmax: float = 0.05, steps: int = 500, method: str = "improvedtangent",
            k: float = 0.1, batch_size: int = 64, logfile=None,
            progress: bool = False) -> dict:
    """Minimum-energy path between two relaxed structures.

    Parameters
    ----------
    initial, final : ase.Atoms
        Relaxed end points (same atoms in the same order).
    calc : calculator
        Any ASE calculator; an :class:`~ase_mlp.calculators.MLPCalculator` evaluates the
        whole band in one batched call per step.
    n_images : int
        Number of intermediate (moving) images.
    interpolation : {"idpp", "linear"}
        Initial path (``"idpp"`` starts from the linear path, using the minimum image
        convention).
    climb : bool
        Climbing image NEB.
    optimizer : str
        Name of an optimiser in :mod:`ase.optimize` (``"FIRE"``, ``"BFGS"``, ``"MDMin"``).
    fmax, steps : float, int
        Convergence criterion on the NEB forces (eV/Å) and maximum number of steps.
    method : str
        NEB tangent/spring method (see :class:`ase.mep.NEB`).
    logfile : str or file, optional
        The optimiser's log (``"-"``: stdout).
    progress : bool
        Show a tqdm progress bar (on stderr) over the optimiser steps, with the current
        maximum NEB force and barrier.

    Returns
    -------
    dict
        ``images`` (list of Atoms with single-point results), ``energies`` (eV, all images),
        ``barrier`` (max energy - initial energy, eV), ``nsteps``, ``converged``, ``neb``
        (the :class:`BatchedNEB`), ``tools`` (:class:`ase.mep.NEBTools`) and ``plot``
        (``plot(path)`` writes the band plot to ``path`` and returns the figure).
    """
    import ase.optimize

    if interpolation not in ("idpp", "linear"):
        raise ValueError(f"interpolation must be 'idpp' or 'linear', got {interpolation!r}")
    if n_images < 1:
        raise ValueError(f"n_images must be >= 1, got {n_images}")
    opt_cls = getattr(ase.optimize, str(optimizer), None)
    if not (isinstance(opt_cls, type) and issubclass(opt_cls, ase.optimize.optimize.Dynamics)):
        raise ValueError(f"optimizer must name an optimiser of ase.optimize (FIRE, BFGS, "
                         f"MDMin, LBFGS, ...), got {optimizer!r}")
    images = [initial.copy()] + [initial.copy() for _ in range(n_images)] + [final.copy()]
    for image in images:
        image.calc = None
    neb = BatchedNEB(images, calc, k=k, climb=climb, method=method, batch_size=batch_size)
    if interpolation == "idpp":
        neb.interpolate("idpp", mic=True, apply_constraint=False)
    else:
        neb.interpolate(mic=True, apply_constraint=False)
    opt = opt_cls(neb, logfile=logfile)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc=f"NEB {optimizer}", unit="step")

        def observe():
            bar.update(opt.nsteps - bar.n)
            f = np.linalg.norm(neb.get_forces(), axis=1).max()
            e = neb.get_image_energies()
            bar.set_postfix_str(f"fmax={f:.4f} eV/Å  barrier={e.max() - e[0]:.4f} eV")

        opt.attach(observe)
    try:
        converged = bool(opt.run(fmax=fmax, steps=steps))
    finally:
        if bar is not None:
            bar.close()
    energies = neb.get_image_energies()
    band = list(neb.iterimages())
    tools = NEBTools(band)

    def plot(path=None):
        from matplotlib.figure import Figure

        fig = Figure(figsize=(5.5, 4.0))
        ax = fig.add_subplot(111)
        tools.plot_band(ax)
        if path is not None:
            fig.savefig(path)
        return fig

    return {
        "images": band,
        "energies": energies,
        "barrier": float(energies.max() - energies[0]),
        "nsteps": int(opt.nsteps),
        "converged": converged,
        "neb": neb,
        "tools": tools,
        "plot": plot,
    }
