"""Shared input handling for :mod:`ase_mlp.analysis` (private).

Every public analysis function accepts either a trajectory (one :class:`ase.Atoms` or a
sequence of them, e.g. ``ase.io.read("md.traj", ":")``) or plain numpy arrays. The helpers
here turn both into arrays, check shapes and values and raise :class:`ValueError` with a
message that names the offending argument.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.geometry import complete_cell, minkowski_reduce


@dataclass
class Trajectory:
    """Arrays extracted from a trajectory.

    Attributes
    ----------
    positions : numpy.ndarray
        ``(T, N, 3)`` Cartesian positions (Å).
    cells : numpy.ndarray or None
        ``(T, 3, 3)`` cells (lattice vectors as rows), or None when no cell is known.
    pbc : numpy.ndarray
        ``(3,)`` booleans.
    symbols : list of str or None
        Chemical symbols of the ``N`` atoms, None for bare arrays without ``symbols``.
    masses : numpy.ndarray or None
        ``(N,)`` masses (amu), None for bare arrays without ``masses``.
    """

    positions: np.ndarray
    cells: np.ndarray | None
    pbc: np.ndarray
    symbols: list[str] | None
    masses: np.ndarray | None

    @property
    def n_frames(self) -> int:
        return self.positions.shape[0]

    @property
    def n_atoms(self) -> int:
        return self.positions.shape[1]


def as_frames(traj, name: str = "frames") -> list[Atoms]:
    """Return ``traj`` as a non-empty list of :class:`ase.Atoms` with a fixed composition."""
    if isinstance(traj, Atoms):
        frames = [traj]
    else:
        try:
            frames = list(traj)
        except TypeError:
            raise ValueError(
                f"{name} must be an ase.Atoms or a sequence of them, got {type(traj).__name__}"
            ) from None
    if len(frames) == 0:
        raise ValueError(f"{name} is empty: at least one frame is needed")
    for k, atoms in enumerate(frames):
        if not isinstance(atoms, Atoms):
            raise ValueError(
                f"{name}[{k}] is a {type(atoms).__name__}, expected ase.Atoms"
            )
    n0 = len(frames[0])
    if n0 == 0:
        raise ValueError(f"{name}[0] has no atoms")
    numbers0 = frames[0].numbers
    for k, atoms in enumerate(frames[1:], start=1):
        if len(atoms) != n0:
            raise ValueError(
                f"{name}[{k}] has {len(atoms)} atoms but {name}[0] has {n0}; "
                "the number of atoms must not change along a trajectory"
            )
        if not np.array_equal(atoms.numbers, numbers0):
            raise ValueError(
                f"{name}[{k}] has different chemical symbols (or order) than {name}[0]"
            )
    return frames


def check_finite(array: np.ndarray, name: str) -> None:
    """Raise ValueError if ``array`` holds NaN or infinity."""
    if not np.all(np.isfinite(array)):
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(array))[0])
        raise ValueError(f"{name} contains NaN or infinite values (first at index {bad})")


def check_positive(value, name: str) -> float:
    """Return ``value`` as float, raising ValueError unless it is finite and > 0."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number, got {value!r}") from None
    if not np.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return v


def as_trajectory(
    traj,
    *,
    cells=None,
    pbc=None,
    symbols: Sequence[str] | None = None,
    masses=None,
    name: str = "frames",
) -> Trajectory:
    """Normalise a trajectory or a positions array to a :class:`Trajectory`.

    Parameters
    ----------
    traj : ase.Atoms, sequence of ase.Atoms, or array_like
        Frames, or positions of shape ``(T, N, 3)`` (Å).
    cells : array_like, optional
        Only for arrays: one ``(3, 3)`` cell or ``(T, 3, 3)`` cells. Ignored (must be None)
        for Atoms input, whose own cells are used.
    pbc : bool or sequence of 3 bool, optional
        Only for arrays: periodicity, default True when ``cells`` is given, else False.
    symbols : sequence of str, optional
        Only for arrays: chemical symbols of the ``N`` atoms.
    masses : array_like, optional
        ``(N,)`` masses in amu; overrides the masses of Atoms input.
    name : str
        Name used in error messages.
    """
    if isinstance(traj, Atoms) or (
        isinstance(traj, (list, tuple)) and len(traj) > 0 and isinstance(traj[0], Atoms)
    ):
        if cells is not None:
            raise ValueError("cells must not be given together with ase.Atoms frames")
        if symbols is not None:
            raise ValueError("symbols must not be given together with ase.Atoms frames")
        frames = as_frames(traj, name)
        positions = np.array([a.positions for a in frames], dtype=float)
        cell_arr = np.array([a.cell.array for a in frames], dtype=float)
        pbc_arr = np.array(frames[0].pbc, dtype=bool)
        syms = frames[0].get_chemical_symbols()
        m = frames[0].get_masses() if masses is None else masses
        check_finite(positions, f"{name} positions")
        has_cell = bool(np.any(np.abs(cell_arr) > 0))
        out = Trajectory(positions, cell_arr if has_cell else None, pbc_arr, syms, None)
    else:
        if isinstance(traj, (list, tuple)) and len(traj) == 0:
            raise ValueError(f"{name} is empty: at least one frame is needed")
        positions = np.asarray(traj, dtype=float)
        if positions.ndim != 3 or positions.shape[2] != 3:
            raise ValueError(
                f"{name} must be ase.Atoms frames or a positions array of shape (T, N, 3), "
                f"got shape {positions.shape}"
            )
        if positions.shape[0] == 0 or positions.shape[1] == 0:
            raise ValueError(f"{name} is empty: shape {positions.shape}")
        check_finite(positions, name)
        T = positions.shape[0]
        cell_arr = None
        if cells is not None:
            cell_arr = np.asarray(cells, dtype=float)
            if cell_arr.shape == (3, 3):
                cell_arr = np.broadcast_to(cell_arr, (T, 3, 3)).copy()
            elif cell_arr.shape != (T, 3, 3):
                raise ValueError(
                    f"cells must have shape (3, 3) or (T, 3, 3) = ({T}, 3, 3), "
                    f"got {cell_arr.shape}"
                )
            check_finite(cell_arr, "cells")
        if pbc is None:
            pbc = cell_arr is not None
        pbc_arr = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,)).copy()
        if pbc_arr.any() and cell_arr is None:
            raise ValueError("pbc is set but no cells were given")
        syms = None
        if symbols is not None:
            syms = [str(s) for s in symbols]
            if len(syms) != positions.shape[1]:
                raise ValueError(
                    f"symbols has {len(syms)} entries but positions have "
                    f"{positions.shape[1]} atoms"
                )
        m = masses
        out = Trajectory(positions, cell_arr, pbc_arr, syms, None)
    if m is not None:
        m = np.asarray(m, dtype=float)
        if m.shape != (out.n_atoms,):
            raise ValueError(f"masses must have shape ({out.n_atoms},), got {m.shape}")
        check_finite(m, "masses")
        if np.any(m <= 0):
            raise ValueError("masses must be positive")
        out.masses = m
    if out.cells is not None and out.pbc.any():
        vols = np.abs(np.linalg.det(out.cells))
        if np.any(vols < 1e-10):
            k = int(np.argmin(vols))
            raise ValueError(f"the cell of frame {k} is singular (volume {vols[k]:.3g} Å^3)")
    return out


def species_indices(
    symbols: list[str] | None, n_atoms: int, species, *, allow_all: bool = True
) -> dict[str, np.ndarray]:
    """Map species labels to atom indices.

    ``species=None`` gives every element present (in order of first appearance) plus
    ``"all"``; a string or a sequence of strings gives only those. ``"all"`` always means
    every atom. Unknown species raise ValueError.
    """
    present: list[str] = [] if symbols is None else list(dict.fromkeys(symbols))
    if species is None:
        labels = present + (["all"] if allow_all else [])
        if symbols is None:
            labels = ["all"]
    else:
        labels = [species] if isinstance(species, str) else list(species)
        if len(labels) == 0:
            raise ValueError("species is empty")
    out: dict[str, np.ndarray] = {}
    for lab in labels:
        if not isinstance(lab, str):
            raise ValueError(f"species entries must be chemical symbols (str), got {lab!r}")
        if lab == "all" and allow_all:
            out[lab] = None  # filled by caller with arange(N)
            continue
        if symbols is None:
            raise ValueError(
                f"species {lab!r} requested but the input carries no chemical symbols "
                "(pass ase.Atoms frames or symbols=...)"
            )
        if lab not in present:
            raise ValueError(
                f"unknown species {lab!r}: not present in the trajectory "
                f"(present: {', '.join(present)})"
            )
        out[lab] = np.flatnonzero(np.asarray(symbols) == lab)
    for lab, idx in out.items():
        if idx is None:
            out[lab] = np.arange(n_atoms)
    return out


class MinimumImage:
    """Minimum-image squared distances for one cell (any shape, any pbc).

    Uses a Minkowski-reduced cell: vectors are first wrapped into the reduced cell and then
    the 27 (fewer for non-periodic directions) neighbouring images are tested, which is
    exact for reduced cells (the same scheme as :func:`ase.geometry.find_mic`).
    """

    def __init__(self, cell, pbc):
        self.pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,)).copy()
        if not self.pbc.any():
            self.rcell = None
            return
        cell = complete_cell(np.asarray(cell, dtype=float))
        self.rcell, _ = minkowski_reduce(cell, pbc=self.pbc)
        self.inv = np.linalg.inv(self.rcell)
        ranges = [np.arange(-1, 2) if p else np.zeros(1, dtype=int) for p in self.pbc]
        hkl = np.array(list(itertools.product(*ranges)), dtype=float)
        self.images = hkl @ self.rcell

    def vectors(self, d: np.ndarray) -> np.ndarray:
        """Minimum-image version of displacement vectors ``d`` (``(M, 3)``)."""
        if self.rcell is None:
            return d
        f = d @ self.inv
        f[:, self.pbc] -= np.round(f[:, self.pbc])
        d0 = f @ self.rcell
        best = d0.copy()
        best_sq = np.einsum("ij,ij->i", d0, d0)
        for img in self.images:
            trial = d0 + img
            sq = np.einsum("ij,ij->i", trial, trial)
            better = sq < best_sq
            best[better] = trial[better]
            best_sq[better] = sq[better]
        return best

    def sq_matrix(self, a: np.ndarray, b: np.ndarray, chunk: int = 200_000) -> np.ndarray:
        """Squared minimum-image distances ``|mic(b_j - a_i)|^2`` as an ``(Na, Nb)`` array."""
        na, nb = len(a), len(b)
        out = np.empty((na, nb))
        rows = max(1, chunk // max(nb, 1))
        for start in range(0, na, rows):
            d = (b[None, :, :] - a[start:start + rows, None, :]).reshape(-1, 3)
            v = self.vectors(d)
            out[start:start + rows] = np.einsum("ij,ij->i", v, v).reshape(-1, nb)
        return out
