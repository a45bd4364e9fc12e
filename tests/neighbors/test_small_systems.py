"""The compiled brute-force search for small structures gives exactly the lists of the
cell-grid (vesin) path: same pairs, shifts and order."""

from __future__ import annotations

import numpy as np
import pytest

from ase_mlp import kernels
from ase_mlp.neighbors import lists, neighbor_list


pytestmark = pytest.mark.skipif(not kernels.available(), reason="compiled kernels unavailable")


def _case(rng, kind):
    n = int(rng.integers(1, 40))
    cell = np.diag(rng.uniform(2.0, 9.0, 3)) + rng.uniform(-1.0, 1.0, (3, 3)) * (kind != "ortho")
    pbc = {"periodic": [True] * 3, "ortho": [True] * 3, "mixed": rng.random(3) < 0.5,
           "open": [False] * 3}[kind if kind in ("ortho", "mixed", "open") else "periodic"]
    frac = rng.uniform(-0.5, 1.5, (n, 3))  # some atoms outside the cell
    pos = frac @ cell
    if kind == "open":
        cell = np.zeros((3, 3))
    return pos, cell, np.asarray(pbc, dtype=bool)


@pytest.mark.parametrize("kind", ["periodic", "ortho", "mixed", "open"])
def test_small_search_equals_grid_search(kind, monkeypatch):
    rng = np.random.default_rng({"periodic": 1, "ortho": 2, "mixed": 3, "open": 4}[kind])
    for _ in range(25):
        pos, cell, pbc = _case(rng, kind)
        cutoff = float(rng.uniform(1.5, 7.0))
        species = rng.integers(0, 2, len(pos))
        pcm = np.array([[cutoff, 0.8 * cutoff], [0.8 * cutoff, 0.6 * cutoff]])
        for kw in ({"cutoff": cutoff}, {"cutoff": None, "species": species,
                                        "pair_cutoffs": pcm}):
            monkeypatch.setattr(lists, "SMALL_SYSTEM", 10**9)
            small = neighbor_list(pos, cell, pbc, **kw)
            monkeypatch.setattr(lists, "SMALL_SYSTEM", 0)
            grid = neighbor_list(pos, cell, pbc, **kw)
            for a, b in zip(small, grid, strict=True):
                np.testing.assert_array_equal(a, b)
