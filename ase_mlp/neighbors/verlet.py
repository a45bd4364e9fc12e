"""Verlet-skin neighbour list for MD: rebuild only when an atom moved more than skin/2."""

from __future__ import annotations

import numpy as np

from ase_mlp.neighbors.lists import neighbor_list


class VerletNeighborList:
    """Neighbour list with a Verlet skin.

    Parameters
    ----------
    cutoff : float or None
        Interaction cutoff (Å); None to use the largest of ``pair_cutoffs``.
    skin : float
        Extra shell (Å) stored beyond the cutoff. The list is rebuilt when any
        atom moved more than ``skin / 2`` since the last build, or when the
        number of atoms, their species, the boundary conditions or the cell
        changed.
    pair_cutoffs : (n_species, n_species) array, optional
        Per-species-pair cutoffs (Å).

    Between rebuilds, :meth:`get` returns exactly what :func:`neighbor_list`
    would return for the current positions.
    """

    def __init__(self, cutoff=None, skin: float = 0.5, *, pair_cutoffs=None):
        if skin < 0 or not np.isfinite(skin):
            raise ValueError(f"skin must be a finite number >= 0, got {skin}")
        if cutoff is None and pair_cutoffs is None:
            raise ValueError("give a cutoff or pair_cutoffs")
        self.pair_cutoffs = None if pair_cutoffs is None else np.asarray(pair_cutoffs, float)
        self.cutoff = float(cutoff) if cutoff is not None else float(self.pair_cutoffs.max())
        self.skin = float(skin)
        self.n_builds = 0
        self._state = None
        self._list = None
        self._species = None

    def _changed(self, positions, cell, pbc, species) -> bool:
        if self._state is None:
            return True
        x0, cell0, pbc0, sp0 = self._state
        if positions.shape != x0.shape or not np.array_equal(pbc, pbc0):
            return True
        if not np.array_equal(cell, cell0):
            return True
        if (sp0 is None) != (species is None) or (
                species is not None and not np.array_equal(species, sp0)):
            return True
        if len(x0) == 0:
            return False
        moved = np.sqrt(((positions - x0) ** 2).sum(axis=1)).max()
        return bool(moved > 0.5 * self.skin)

    def update(self, positions, cell, pbc, species=None) -> bool:
        """Rebuild if needed; return True when the list was rebuilt."""
        positions = np.asarray(positions, dtype=float)
        cell = np.asarray(cell, dtype=float)
        pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,)).copy()
        species = None if species is None else np.asarray(species, dtype=np.int64)
        if not self._changed(positions, cell, pbc, species):
            return False
        pc = None if self.pair_cutoffs is None else self.pair_cutoffs + self.skin
        self._list = neighbor_list(positions, cell, pbc, self.cutoff + self.skin,
                                   species=species, pair_cutoffs=pc)
        self._state = (positions.copy(), cell.copy(), pbc, None if species is None
                       else species.copy())
        self._species = species
        self.n_builds += 1
        return True

    def get(self, positions, cell):
        """(i, j, S) within the cutoff for the current positions (call :meth:`update` first)."""
        if self._list is None:
            raise RuntimeError("call update() before get()")
        i, j, S = self._list
        positions = np.asarray(positions, dtype=float)
        cell = np.asarray(cell, dtype=float)
        d = positions[j] - positions[i] + S @ cell
        r2 = (d * d).sum(axis=1)
        if self.pair_cutoffs is not None and self._species is not None:
            rc = self.pair_cutoffs[self._species[i], self._species[j]]
            rc = np.minimum(rc, self.cutoff)
        else:
            rc = self.cutoff
        keep = r2 < rc * rc
        return i[keep], j[keep], S[keep]
