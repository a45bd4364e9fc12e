"""Verlet-skin neighbour list for molecular dynamics.

The list is built with ``cutoff + skin`` and reused while no atom has moved
more than ``skin / 2`` since the build: a pair closer than ``cutoff`` now was
then closer than ``cutoff + skin``. :meth:`VerletNeighborList.get` filters the
stored list with the current positions, so between rebuilds it returns
exactly what :func:`ase_mlp.neighbors.neighbor_list` would (same edges, same
order, same shifts).

Atoms may be wrapped back into the cell between steps: displacements are
measured modulo the lattice along periodic directions, and the stored shifts
are corrected for the lattice vector each atom was moved by.
"""

from __future__ import annotations

import numpy as np

from ase_mlp.neighbors.lists import (
    _as_cell,
    _as_pbc,
    _as_positions,
    _check_cutoff,
    _check_pair_cutoffs,
    _check_species,
    _completed_cell,
    _keep_mask,
    _neighbor_list,
    _rows_times,
    _sort,
)


__all__ = ["VerletNeighborList"]


class VerletNeighborList:
    """Neighbour list with a Verlet skin, rebuilt only when needed.

    Parameters
    ----------
    cutoff : float or None
        Cutoff radius, Å (> 0). May be None when ``pair_cutoffs`` is given.
    skin : float, optional
        Skin thickness, Å (>= 0). The list is rebuilt as soon as an atom has
        moved more than ``skin / 2`` since the last build. Default 0.5.
    pair_cutoffs : array_like, shape (n_species, n_species), optional
        Symmetric per species-pair cutoffs, Å, as in
        :func:`ase_mlp.neighbors.neighbor_list` (capped at ``cutoff`` when both
        are given). Needs ``species`` in :meth:`update`.

    Attributes
    ----------
    n_builds : int
        Number of times the list was (re)built.

    Examples
    --------
    >>> nl = VerletNeighborList(5.0, skin=0.5)
    >>> for step in range(n_steps):  # doctest: +SKIP
    ...     nl.update(atoms.positions, atoms.cell.array, atoms.pbc)
    ...     i, j, S = nl.get(atoms.positions, atoms.cell.array)
    """

    def __init__(self, cutoff, skin=0.5, *, pair_cutoffs=None):
        if cutoff is None and pair_cutoffs is None:
            raise ValueError("cutoff is required when pair_cutoffs is not given")
        self.cutoff = None if cutoff is None else _check_cutoff(cutoff)
        try:
            self.skin = float(skin)
        except (TypeError, ValueError):
            raise ValueError(f"skin must be a non-negative finite number, got {skin!r}") from None
        if not np.isfinite(self.skin) or self.skin < 0.0:
            raise ValueError(f"skin must be a non-negative finite number, got {skin!r}")
        self.pair_cutoffs = (
            None if pair_cutoffs is None else _check_pair_cutoffs(pair_cutoffs, self.cutoff)
        )
        self._radius = self.cutoff if self.pair_cutoffs is None else float(self.pair_cutoffs.max())
        self.n_builds = 0
        self._built = False

    # ------------------------------------------------------------------ state

    def _validate_species(self, species, n_atoms):
        if self.pair_cutoffs is not None and species is None:
            raise ValueError("pair_cutoffs needs species (one species index per atom)")
        n_species = None if self.pair_cutoffs is None else self.pair_cutoffs.shape[0]
        return _check_species(species, n_atoms, n_species)

    def _build(self, x, cell, pbc, m, species):
        """Store the list for ``cutoff + skin`` at positions ``x``."""
        skin = self.skin
        if self.pair_cutoffs is None:
            i, j, s = _neighbor_list(x, cell, pbc, m, self._radius + skin, None, species)
        else:
            grown = np.where(self.pair_cutoffs > 0.0, self.pair_cutoffs + skin, 0.0)
            i, j, s = _neighbor_list(x, cell, pbc, m, float(grown.max()), grown, species)
        self._x_ref = x.copy()
        self._cell = cell.copy()
        self._pbc = pbc.copy()
        self._m = m
        self._m_inv = np.linalg.inv(m)
        self._species = None if species is None else species.copy()
        # stored compactly (the skin list is 2-3x the final one): int32 atom indices
        # and shifts; get() returns int64 like neighbor_list
        small = len(x) < 2**31 - 1 and (len(s) == 0 or np.abs(s).max() < 2**31 - 1)
        idx = np.int32 if small else np.int64
        self._i, self._j = i.astype(idx, copy=False), j.astype(idx, copy=False)
        # shifts of a skin list are small integers: int8 while they fit (a third of the
        # stored list); get() widens them when atoms were wrapped across the cell
        tiny = len(s) == 0 or np.abs(s).max() < 100
        self._s = s.astype(np.int8 if tiny else idx, copy=False)
        self._built = True
        self.n_builds += 1

    def _lattice_moves(self, x):
        """Lattice translation of every atom since the build, and the largest rest.

        Returns ``(k, max_displacement)`` where ``x - x_ref = k @ cell + d``
        with integer ``k`` (zero along open directions) chosen so that ``d``
        is (close to) the minimum-image displacement.
        """
        dx = x - self._x_ref
        frac = _rows_times(dx, self._m_inv)
        k = np.where(self._pbc, np.round(frac), 0.0)
        rest = dx - _rows_times(k, self._m)
        if len(rest) == 0:
            return k.astype(np.int64), 0.0
        return k.astype(np.int64), float(np.sqrt(np.einsum("ij,ij->i", rest, rest).max()))

    def _needs_rebuild(self, x, cell, pbc, species) -> bool:
        if not self._built:
            return True
        if len(x) != len(self._x_ref) or not np.array_equal(pbc, self._pbc):
            return True
        if not np.array_equal(cell, self._cell):
            return True
        if (species is None) != (self._species is None):
            return True
        if species is not None and not np.array_equal(species, self._species):
            return True
        return self._lattice_moves(x)[1] > 0.5 * self.skin

    # ------------------------------------------------------------------ API

    def update(self, positions, cell, pbc, species=None) -> bool:
        """Rebuild the list if needed.

        Parameters
        ----------
        positions : array_like, shape (n_atoms, 3)
            Current Cartesian positions, Å (wrapped or not).
        cell : array_like, shape (3, 3), or None
            Lattice vectors as rows, Å.
        pbc : bool or sequence of 3 bool
            Periodicity along each cell vector.
        species : array_like of int, shape (n_atoms,), optional
            Species indices (required with ``pair_cutoffs``).

        Returns
        -------
        bool
            True if the list was rebuilt: on the first call, when the number
            of atoms, the species, the pbc or the cell changed, or when an atom
            moved more than ``skin / 2`` (modulo lattice translations) since
            the last build.
        """
        x = _as_positions(positions)
        cell = _as_cell(cell)
        pbc = _as_pbc(pbc)
        m = _completed_cell(cell, pbc)
        species = self._validate_species(species, len(x))
        if self._needs_rebuild(x, cell, pbc, species):
            self._build(x, cell, pbc, m, species)
            return True
        return False

    def get(self, positions, cell):
        """Neighbour list at the current positions.

        Parameters
        ----------
        positions : array_like, shape (n_atoms, 3)
            Current Cartesian positions, Å.
        cell : array_like, shape (3, 3), or None
            Current lattice vectors as rows, Å.

        Returns
        -------
        i, j, S : numpy.ndarray of int64
            As :func:`ase_mlp.neighbors.neighbor_list` returns them for these
            positions (with the pbc and species of the last :meth:`update`).

        Notes
        -----
        If the cell or the number of atoms changed, or an atom moved more than
        ``skin / 2`` since the last build, the list is rebuilt first (with the
        pbc and species of the last :meth:`update`), so the result is always
        exact.
        """
        if not self._built:
            raise RuntimeError("call update(positions, cell, pbc) before get()")
        x = _as_positions(positions)
        cell = _as_cell(cell)
        if self._needs_rebuild(x, cell, self._pbc, self._species):
            if len(x) != len(self._x_ref) and self._species is not None:
                raise ValueError(
                    f"got {len(x)} atoms but species of {len(self._species)} atoms: "
                    "call update() with the new species"
                )
            self._build(x, cell, self._pbc, _completed_cell(cell, self._pbc), self._species)
        k, _ = self._lattice_moves(x)
        i, j, s = self._i, self._j, self._s
        moved = k.any()
        if moved:
            s = s + np.take(k, i, axis=0) - np.take(k, j, axis=0)
        keep = np.flatnonzero(_keep_mask(x, cell, i, j, s, self._radius, self.pair_cutoffs,
                                         self._species))
        i, j, s = (np.take(i, keep).astype(np.int64), np.take(j, keep).astype(np.int64),
                   np.take(s, keep, axis=0).astype(np.int64))
        if moved:
            i, j, s = _sort(i, j, s, len(x))
        return i, j, s
