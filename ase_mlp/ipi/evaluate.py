"""Evaluate the structures of an i-PI request with an ASE calculator, batched when possible."""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.stress import voigt_6_to_full_3x3_stress


class AtomsMismatch(ValueError):
    """The server's structures do not fit the driver's atoms or the model's elements."""


class Evaluator:
    """Energies, forces and virials of many structures of the same atoms (ASE units).

    Parameters
    ----------
    calc : Calculator
        ``calculate_batch(images, properties)`` is used when the calculator has it
        (``MLPCalculator``: one model call for all structures); any other ASE calculator
        is called one structure at a time.
    atoms : ase.Atoms or None
        Symbols (in the server's atom order) and ``pbc``. ``None`` for a one-element
        model: all atoms are that element, periodic.
    use_stress : bool, optional
        Compute the virial; default: ``atoms`` periodic in 3D and ``stress`` implemented.
    batched : bool
        ``False``: one calculator call per structure even when it could batch.
    max_batch : int, optional
        At most this many structures per call.
    """

    def __init__(self, calc, atoms: Atoms | None = None, *, use_stress=None,
                 batched: bool = True, max_batch: int | None = None):
        self.calc = calc
        elements = getattr(calc, "elements", None)
        self.elements = None if elements is None else list(elements)
        if atoms is None:
            if self.elements is None or len(self.elements) != 1:
                raise ValueError("i-PI sends no atom names: give the structure (atoms) unless "
                                 f"the model has a single element (model elements: "
                                 f"{self.elements})")
            self.atoms = None
        else:
            self.atoms = atoms.copy()
            self.atoms.calc = None
            unknown = sorted(set(self.atoms.get_chemical_symbols()) - set(self.elements or []))
            if self.elements is not None and unknown:
                raise AtomsMismatch(f"the structure has elements {unknown} that the model "
                                    f"does not know (model elements: {self.elements})")
        periodic = atoms is None or (bool(atoms.pbc.all()) and atoms.cell.rank == 3)
        has_stress = "stress" in getattr(calc, "implemented_properties", ())
        self.use_stress = (periodic and has_stress) if use_stress is None else bool(use_stress)
        self.batched = bool(batched)
        self.max_batch = None if max_batch is None else max(1, int(max_batch))
        self.model_calls = 0
        self.evaluated = 0
        self._work = None

    def check(self, nat: int, cell=None) -> None:
        """Check the atom count of incoming structures (and fix it for one-element models)."""
        if self.atoms is None:
            self.atoms = Atoms(self.elements[0] * nat, pbc=True,
                               cell=np.zeros((3, 3)) if cell is None else cell)
        if nat != len(self.atoms):
            raise AtomsMismatch(
                f"i-PI sends {nat} atoms per structure but the driver's structure has "
                f"{len(self.atoms)} ({self.atoms.get_chemical_formula()}): give the "
                "structure file i-PI was started from")

    def __call__(self, cells: np.ndarray, positions: np.ndarray):
        """Energies ``(n,)`` eV, forces ``(n, nat, 3)`` eV/Å, virials ``(n, 3, 3)`` eV.

        ``cells`` ``(n, 3, 3)`` (rows, Å), ``positions`` ``(n, nat, 3)`` Å. A structure
        equal to the one before it (i-PI pads batches that way) is evaluated once.
        """
        n, nat = positions.shape[0], positions.shape[1]
        self.check(nat, cells[0])
        uniq = [0] + [k for k in range(1, n) if not (
            np.array_equal(cells[k], cells[k - 1])
            and np.array_equal(positions[k], positions[k - 1]))]
        images = []
        for k in uniq:
            a = self.atoms.copy()
            a.cell[:] = cells[k]
            a.positions[:] = positions[k]
            images.append(a)
        props = ("energy", "forces", "stress") if self.use_stress else ("energy", "forces")
        batch_fn = getattr(self.calc, "calculate_batch", None)
        if batch_fn is not None:
            size = len(images) if self.batched else 1
            if self.max_batch is not None:
                size = min(size, self.max_batch)
            res = []
            for s in range(0, len(images), size):
                res += batch_fn(images[s:s + size], properties=props)
                self.model_calls += 1
        else:
            res = [self._one(a) for a in images]
        self.evaluated += len(images)
        energies = np.empty(n)
        forces = np.empty((n, nat, 3))
        virials = np.zeros((n, 3, 3))
        j = -1
        for k in range(n):
            if j + 1 < len(uniq) and uniq[j + 1] == k:
                j += 1
            r = res[j]
            energies[k] = r["energy"]
            forces[k] = r["forces"]
            if self.use_stress:
                virials[k] = -voigt_6_to_full_3x3_stress(r["stress"]) * images[j].get_volume()
        return energies, forces, virials

    def _one(self, a: Atoms) -> dict:
        if self._work is None:
            self._work = self.atoms.copy()
            self._work.calc = self.calc
        w = self._work
        w.cell[:] = a.cell
        w.positions[:] = a.positions
        out = {"energy": w.get_potential_energy(), "forces": w.get_forces()}
        if self.use_stress:
            out["stress"] = w.get_stress(voigt=True)
        self.model_calls += 1
        return out
