"""Evaluate the structures of an i-PI request with an ASE calculator, batched when possible."""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.stress import voigt_6_to_full_3x3_stress


class AtomsMismatch(ValueError):
    """The server's structures do not fit the driver's atoms or the model's elements."""


def distinct_structures(cells: np.ndarray, positions: np.ndarray):
    """Indices of the distinct structures of a request, and which one each structure is.

    Returns ``(uniq, which)``: ``uniq`` the index of the first occurrence of each distinct
    (cell, positions) pair, in order; ``which[k]`` the position in ``uniq`` of structure
    ``k``. Equality is exact (the float64 bytes), so only true copies are merged.
    """
    seen: dict = {}
    uniq: list[int] = []
    which = np.empty(len(positions), dtype=np.intp)
    for k in range(len(positions)):
        key = (np.ascontiguousarray(cells[k], dtype=np.float64).tobytes(),
               np.ascontiguousarray(positions[k], dtype=np.float64).tobytes())
        j = seen.setdefault(key, len(uniq))
        if j == len(uniq):
            uniq.append(k)
        which[k] = j
    return uniq, which


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

        ``cells`` ``(n, 3, 3)`` (rows, Å), ``positions`` ``(n, nat, 3)`` Å. Structures
        repeated anywhere in the request (i-PI pads a partial batch with copies of its last
        structure; several connections or force components may send the same one) are
        evaluated once and their results copied: repeats are found by exact (bitwise)
        equality of cell and positions (all structures have the driver's species).
        """
        n, nat = positions.shape[0], positions.shape[1]
        self.check(nat, cells[0])
        uniq, which = distinct_structures(cells, positions)
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
        for k in range(n):
            j = which[k]
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
