"""Full neighbour lists for one structure or a batch of structures.

The heavy lifting is done by `vesin <https://github.com/Luthaf/vesin>`_ (a
threaded O(N) cell list in C++). This module adds input validation, per
species-pair cutoffs, a deterministic edge order and a batched variant.

Conventions (the same as :func:`ase.neighborlist.neighbor_list`): the cell
holds the lattice vectors as rows, and an edge ``(i, j, S)`` stands for the
vector ``r_ij = x[j] - x[i] + S @ cell`` with ``|r_ij| < cutoff``. Both
directions of every pair are listed. An atom is never its own neighbour with
``S == 0``, but it is with its periodic images (``i == j``, ``S != 0``).

Notes on vesin (checked against vesin 0.6.2)
--------------------------------------------
* ``periodic`` accepts three booleans, so vesin handles mixed boundaries
  natively; along open directions it ignores the box rows (zero rows are
  fine) and uses the bounding box of the atoms. But with mixed boundaries it
  then scans *every* grid cell along the open direction, so a slab with one
  atom far in the vacuum becomes slow (4000-atom slab, adatom 2e4 Å away:
  7 s instead of 50 ms). We therefore always call vesin fully periodic and
  give each open direction a fake, large enough box row (see
  :func:`_candidates`); this is exact.
* Open/mixed systems were only fixed in vesin 0.5.8, so with an older vesin
  the same fully periodic problem is handed to
  :func:`matscipy.neighbours.neighbour_list` instead.
* vesin caps its cell grid at 1e5 cells by rescaling the grid; for very
  anisotropic grids (e.g. an open, flat 2D flake of 1600 x 1600 Å at 5 Å
  cutoff, or two atoms 1e6 Å apart) the rescaling truncates one grid dimension
  to zero and the process dies with SIGFPE. :func:`_vesin_grid_ok` predicts
  this and :func:`_plan` then lengthens the fake box rows of the thinnest open
  directions, or, when the thinnest direction is really periodic, searches
  with a larger radius and filters the extra candidates out; the result stays
  exact.
* Atoms more than 100 cells away along a periodic direction are wrapped back
  before they are handed to vesin (the shifts are corrected back), so they
  cannot overflow vesin's 32-bit cell indices.
* The final ``|r_ij| < cutoff`` test is always done here, in numpy, with the
  caller's (unwrapped) positions: the result is defined by one formula, which
  :class:`ase_mlp.neighbors.VerletNeighborList` reuses to give bit-identical
  lists.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass

import numpy as np
import vesin


__all__ = ["BatchNeighbors", "MAX_PERIODIC_IMAGES", "batch_neighbor_list", "check_cell",
           "neighbor_list"]


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version)[:3])


#: "vesin" (default, needs vesin >= 0.5.8 for correct open/mixed boundaries) or
#: "matscipy". Chosen once at import, never changed by this module.
_BACKEND = "vesin" if _version_tuple(vesin.__version__) >= (0, 5, 8) else "matscipy"

#: ``MAX_NUMBER_OF_CELLS`` in vesin's ``cpu_cell_list.cpp``.
_VESIN_MAX_CELLS = 1e5
#: The candidate search radius is inflated by this much (relative and absolute,
#: Å) so that pairs at the cutoff are never lost to round-off in the wrapped
#: coordinates; the exact test is done afterwards.
_SEARCH_REL = 1e-9
_SEARCH_ABS = 1e-9
#: Positions are wrapped before calling vesin when an atom lies more than this
#: many cells away along a periodic direction.
_WRAP_BEYOND = 100.0
#: A periodic cell vector shorter than this (Å) counts as zero length.
_ZERO_LENGTH = 1e-10
#: Periodic vectors count as linearly dependent when the volume (area) they
#: span divided by the product of their lengths is below this.
_DEPENDENT = 1e-10
#: Largest number of periodic images of the cell a search may visit: more means a
#: periodic cell absurdly small for the cutoff (a 1e-5 Å lattice vector needs ~1e7
#: images and minutes; 1e6 allows e.g. a 1-atom bcc cell with a 100 Å cutoff).
MAX_PERIODIC_IMAGES = 10**6


# ----------------------------------------------------------------------------
# input validation


def _as_positions(positions) -> np.ndarray:
    x = np.ascontiguousarray(positions, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 3:
        raise ValueError(f"positions must have shape (n_atoms, 3), got {x.shape}")
    finite = np.isfinite(x).all(axis=1)
    if not finite.all():
        k = int(np.argmin(finite))
        raise ValueError(f"position of atom {k} is not finite: {x[k].tolist()}")
    return x


def _as_cell(cell) -> np.ndarray:
    if cell is None:
        return np.zeros((3, 3))
    c = np.asarray(cell, dtype=np.float64)
    if c.shape == (3,):
        c = np.diag(c)
    if c.shape != (3, 3):
        raise ValueError(f"cell must be a 3x3 matrix (lattice vectors as rows), got {c.shape}")
    if not np.isfinite(c).all():
        raise ValueError(f"cell is not finite: {c.tolist()}")
    return np.ascontiguousarray(c)


def _as_pbc(pbc) -> np.ndarray:
    p = np.asarray(pbc)
    if p.shape == ():
        p = np.repeat(p, 3)
    if p.shape != (3,):
        raise ValueError(f"pbc must be a bool or 3 bools, got {pbc!r}")
    return p.astype(bool)


def _check_cutoff(cutoff) -> float:
    try:
        value = float(cutoff)
    except (TypeError, ValueError):
        raise ValueError(f"cutoff must be a positive finite number, got {cutoff!r}") from None
    if not np.isfinite(value) or value <= 0.0:
        raise ValueError(f"cutoff must be a positive finite number, got {cutoff!r}")
    return value


def _check_pair_cutoffs(pair_cutoffs, cutoff) -> np.ndarray:
    """Validated pair-cutoff matrix, capped at ``cutoff`` when that is given."""
    pc = np.asarray(pair_cutoffs, dtype=np.float64)
    if pc.ndim != 2 or pc.shape[0] != pc.shape[1] or pc.shape[0] == 0:
        raise ValueError(
            f"pair_cutoffs must be a square (n_species, n_species) matrix, got shape {pc.shape}"
        )
    if not np.isfinite(pc).all() or (pc < 0).any():
        raise ValueError("pair_cutoffs must be finite and non-negative")
    if not np.allclose(pc, pc.T, rtol=0.0, atol=1e-12):
        raise ValueError(
            "pair_cutoffs must be symmetric (pair_cutoffs[a, b] == pair_cutoffs[b, a]), "
            f"largest asymmetry {np.abs(pc - pc.T).max():.3g} Å"
        )
    pc = 0.5 * (pc + pc.T)
    if cutoff is not None:
        pc = np.minimum(pc, cutoff)
    return pc


def _check_species(species, n_atoms: int, n_species: int | None) -> np.ndarray | None:
    if species is None:
        return None
    s = np.asarray(species)
    if s.ndim != 1 or s.shape[0] != n_atoms:
        raise ValueError(
            f"species must have one entry per atom: got shape {s.shape} for {n_atoms} atoms"
        )
    if s.size and not np.issubdtype(s.dtype, np.integer):
        if not np.issubdtype(s.dtype, np.floating) or not np.array_equal(s, np.round(s)):
            raise ValueError(f"species must be integers, got dtype {s.dtype}")
    s = s.astype(np.int64)
    if n_species is not None and s.size and (s.min() < 0 or s.max() >= n_species):
        raise ValueError(
            f"species must lie in [0, {n_species}) to index pair_cutoffs, "
            f"got values in [{s.min()}, {s.max()}]"
        )
    return s


def _completed_cell(cell: np.ndarray, pbc: np.ndarray) -> np.ndarray:
    """Invertible 3x3 matrix equal to ``cell`` on the periodic rows.

    The open rows are replaced by unit vectors orthogonal to the periodic
    ones (to each other too), built exactly as vesin builds its box, so that
    the open directions never mix with the periodic ones. Raises
    ``ValueError`` when the periodic vectors span zero volume.
    """
    periodic = np.flatnonzero(pbc)
    for k in periodic:
        if np.linalg.norm(cell[k]) < _ZERO_LENGTH:
            raise ValueError(
                f"periodic cell has zero volume: cell vector {k} is periodic but has "
                f"zero length ({cell[k].tolist()})"
            )
    m = cell.copy()
    if len(periodic) == 0:
        return np.eye(3)
    if len(periodic) == 1:
        p = int(periodic[0])
        a = cell[p]
        b = np.array([0.0, 1.0, 0.0])
        if abs(np.dot(a / np.linalg.norm(a), b)) > 0.9:
            b = np.array([0.0, 0.0, 1.0])
        c = np.cross(a, b)
        c /= np.linalg.norm(c)
        b = np.cross(c, a)
        b /= np.linalg.norm(b)
        m[(p + 1) % 3] = b
        m[(p + 2) % 3] = c
        return m
    norms = np.linalg.norm(cell[periodic], axis=1)
    if len(periodic) == 2:
        a, b = cell[periodic[0]], cell[periodic[1]]
        n = np.cross(a, b)
        if np.linalg.norm(n) < _DEPENDENT * norms.prod():
            raise ValueError(
                f"periodic cell has zero volume: the periodic cell vectors {periodic.tolist()} "
                "are linearly dependent (parallel)"
            )
        m[3 - periodic[0] - periodic[1]] = n / np.linalg.norm(n)
        return m
    if abs(np.linalg.det(cell)) < _DEPENDENT * norms.prod():
        raise ValueError(
            "periodic cell has zero volume: the three periodic cell vectors are linearly dependent"
        )
    return m


def _check_images(cell: np.ndarray, m: np.ndarray, pbc: np.ndarray, radius: float) -> None:
    """Refuse periodic cells that need more than :data:`MAX_PERIODIC_IMAGES` images
    within ``radius`` (``m`` is :func:`_completed_cell`), naming the shortest direction.

    Plain float arithmetic on the 3x3 matrix (a few microseconds: it runs for every
    structure of a batch)."""
    periodic = pbc.tolist()
    if not any(periodic):
        return
    (a0, a1, a2), (b0, b1, b2), (c0, c1, c2) = m.tolist()
    cross = ((b1 * c2 - b2 * c1, b2 * c0 - b0 * c2, b0 * c1 - b1 * c0),
             (c1 * a2 - c2 * a1, c2 * a0 - c0 * a2, c0 * a1 - c1 * a0),
             (a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0))
    volume = abs(cross[0][0] * a0 + cross[0][1] * a1 + cross[0][2] * a2)
    n_images, reach = 1.0, []
    for d in range(3):
        if not periodic[d]:
            reach.append(-1.0)
            continue
        area = math.sqrt(sum(x * x for x in cross[d]))
        q = radius * area / volume if volume > 0.0 else math.inf
        r = math.ceil(q) if q < 1e18 else math.inf
        reach.append(r)
        n_images *= 2.0 * r + 1.0
    if n_images <= MAX_PERIODIC_IMAGES:
        return
    d = int(np.argmax(reach))
    face = _faces(m)[d]
    raise ValueError(
        f"periodic cell vector {d} {cell[d].tolist()} (length {np.linalg.norm(cell[d]):.3g} Å, "
        f"lattice planes {face:.3g} Å apart) is far too short for the cutoff "
        f"{radius:.4g} Å: the neighbour search would need {n_images:.3g} periodic images of the "
        f"cell (at most {MAX_PERIODIC_IMAGES:.0e}); check the cell (Å, lattice vectors as rows) "
        "and the pbc")


def check_cell(cell, pbc, cutoff) -> None:
    """Validate a cell for a neighbour search with ``cutoff`` (Å) without searching.

    Raises ``ValueError`` for a non-finite cell, zero-length or linearly dependent
    periodic vectors, or a periodic cell that would need more than
    :data:`MAX_PERIODIC_IMAGES` images within the cutoff (naming the vector and its
    length). Rows along open directions are ignored (zero rows are fine).
    """
    c = _as_cell(cell)
    p = _as_pbc(pbc)
    _check_images(c, _completed_cell(c, p), p, _check_cutoff(cutoff))


# ----------------------------------------------------------------------------
# candidate pairs


def _wrap(x: np.ndarray, m: np.ndarray, pbc: np.ndarray):
    """Bring atoms far outside the cell back along periodic directions.

    Returns ``(x_wrapped, k)`` with ``x = x_wrapped + k @ m`` and integer ``k``
    (zero along open directions). vesin wraps atoms itself; this only guards
    its 32-bit cell indices against atoms many cells away, and does nothing
    (``k`` is None) in the usual case.
    """
    frac = _rows_times(x, np.linalg.inv(m))
    if not pbc.any() or np.abs(frac[:, pbc]).max(initial=0.0) <= _WRAP_BEYOND:
        return x, None
    k = np.where(pbc, np.floor(frac), 0.0)
    return np.ascontiguousarray(x - _rows_times(k, m)), k.astype(np.int64)


def _faces(box: np.ndarray) -> np.ndarray:
    """Distances between opposite faces of the cell spanned by the rows of ``box``."""
    a, b, c = box
    # the three cross products written out (np.cross costs ~0.1 ms per call on 3-vectors,
    # which adds up over the structures of a batch)
    cross = np.array([
        [b[1] * c[2] - b[2] * c[1], b[2] * c[0] - b[0] * c[2], b[0] * c[1] - b[1] * c[0]],
        [c[1] * a[2] - c[2] * a[1], c[2] * a[0] - c[0] * a[2], c[0] * a[1] - c[1] * a[0]],
        [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]])
    volume = abs(float(cross[0] @ a))
    return volume / np.sqrt(np.einsum("ij,ij->i", cross, cross))


def _vesin_grid_ok(faces: np.ndarray, cutoff: float) -> bool:
    """Whether vesin's cell-grid rescaling keeps every grid dimension >= 1.

    Mirrors ``CellList::CellList`` in vesin's ``cpu_cell_list.cpp``. Our face
    distances may differ from vesin's in the last bits, so every grid vesin
    could derive from them (each dimension rounded down or up) is checked, and
    the rescaling is simulated erring towards "not ok".
    """
    ratio = faces / cutoff
    lo = np.maximum(np.trunc(ratio * (1.0 - 1e-9)), 1.0)
    hi = np.maximum(np.trunc(ratio * (1.0 + 1e-9)), 1.0)
    safe = 1.0 - 1e-6
    for n in itertools.product(*zip(lo, hi, strict=True)):
        if np.prod(n) <= _VESIN_MAX_CELLS * safe:
            continue
        ratio_xy = n[0] / n[1]
        ratio_yz = n[1] / n[2]
        n2 = np.trunc(np.cbrt(_VESIN_MAX_CELLS / (ratio_xy * ratio_yz * ratio_yz)) * safe)
        n1 = np.trunc(ratio_yz * n2 * safe)
        n0 = np.trunc(ratio_xy * n1 * safe)
        if min(n0, n1, n2) < 1.0:
            return False
    return True


def _fake_box(m, open_dirs, lengths) -> np.ndarray:
    box = m.copy()
    for d, length in zip(open_dirs, lengths, strict=True):
        box[d] = m[d] * length
    return box


def _plan(m, open_dirs, extent, radius):
    """Box and search radius of the fully periodic problem handed to the backend.

    Open direction ``d`` gets the box row ``m[d] * L_d`` with
    ``L_d >= extent_d + radius + 1 Å``. When vesin's grid rescaling would
    crash (:func:`_vesin_grid_ok`), the thinnest open rows are first made
    longer (this only adds empty space); if the thinnest direction is a real
    periodic one, the search radius is increased instead (the extra candidate
    pairs are filtered out by the caller).
    """
    lengths = extent + radius + 1.0
    box = _fake_box(m, open_dirs, lengths)
    if _BACKEND != "vesin":
        return box, radius
    for _ in range(128):
        faces = _faces(box)
        if _vesin_grid_ok(faces, radius):
            return box, radius
        n = np.maximum(np.trunc(faces / radius), 1.0)
        if len(open_dirs) == 0:
            break
        k = int(np.argmin(n[open_dirs]))
        if n[open_dirs[k]] > n.min():
            break
        lengths[k] = 2.0 * max(lengths[k], radius)
        box = _fake_box(m, open_dirs, lengths)
    search = radius
    for _ in range(256):
        search *= 1.25
        box = _fake_box(m, open_dirs, extent + search + 1.0)
        if _vesin_grid_ok(_faces(box), search):
            return box, search
    raise RuntimeError("could not find a cell grid that vesin can handle for this system")


def _to_origin(x, m, open_dirs):
    """Translate along the open directions so that every projection starts at 0.

    Returns the translated positions and the extent along each open direction.
    """
    extent = np.zeros(len(open_dirs))
    if len(open_dirs) == 0:
        return x, extent
    proj = x @ m[open_dirs].T
    lo = proj.min(axis=0)
    extent[:] = proj.max(axis=0) - lo
    return x - lo @ m[open_dirs], extent


def _compact_open(x, m, open_dirs, radius):
    """Close the empty gaps wider than ``radius`` along the open directions.

    Atoms are split into groups wherever their sorted projection on an open
    direction jumps by more than ``radius`` (no pair can cross such a gap).
    Each group is translated along the open directions (never along a periodic
    one, so its shifts are unchanged) and the groups are laid end to end along
    the first open direction, ``radius + 1 Å`` apart: pairs inside a group keep
    their vectors and pairs between groups stay out of range.
    """
    n_atoms = len(x)
    proj = x @ m[open_dirs].T
    labels = np.zeros(n_atoms, dtype=np.int64)
    for col in range(len(open_dirs)):
        order = np.argsort(proj[:, col], kind="stable")
        segment = np.empty(n_atoms, dtype=np.int64)
        segment[order] = np.concatenate([[0], np.cumsum(np.diff(proj[order, col]) > radius)])
        labels = labels * (int(segment[order[-1]]) + 1) + segment
        labels = np.unique(labels, return_inverse=True)[1].reshape(-1)
    n_groups = int(labels.max()) + 1
    if n_groups == 1:
        return x
    group_min = np.full((n_groups, len(open_dirs)), np.inf)
    group_max = np.full((n_groups, len(open_dirs)), -np.inf)
    np.minimum.at(group_min, labels, proj)
    np.maximum.at(group_max, labels, proj)
    target = np.zeros_like(group_min)
    widths = group_max[:, 0] - group_min[:, 0] + radius + 1.0
    target[1:, 0] = np.cumsum(widths)[:-1]
    return x + (target - group_min)[labels] @ m[open_dirs]


def _candidates(x, m, pbc, radius):
    """Superset of the pairs closer than ``radius`` (int64 i, j, S).

    Every open direction is made periodic with a fake box row, the unit vector
    ``m[d]`` (orthogonal to all other rows) times a length larger than
    ``extent + radius``: an image across that row is then always farther than
    ``radius``, so the pairs of the fully periodic problem with zero shift
    along the fake rows are exactly the pairs of the original problem. When
    the atoms are so sparse along the open directions that vesin's grid would
    break, the empty gaps are closed first (:func:`_compact_open`).
    """
    radius = radius * (1.0 + _SEARCH_REL) + _SEARCH_ABS
    open_dirs = np.flatnonzero(~pbc)
    x, extent = _to_origin(x, m, open_dirs)
    if (
        _BACKEND == "vesin"
        and len(open_dirs)
        and not _vesin_grid_ok(_faces(_fake_box(m, open_dirs, extent + radius + 1.0)), radius)
    ):
        x, extent = _to_origin(_compact_open(x, m, open_dirs, radius), m, open_dirs)
    box, search = _plan(m, open_dirs, extent, radius)
    xw, k = _wrap(x, box, pbc)
    if _BACKEND == "vesin":
        calculator = vesin.NeighborList(cutoff=search, full_list=True)
        i, j, s = calculator.compute(points=xw, box=box, periodic=True, quantities="ijS", copy=True)
    else:
        from matscipy.neighbours import neighbour_list as matscipy_neighbour_list

        i, j, s = matscipy_neighbour_list(
            "ijS", positions=xw, cell=box, pbc=np.ones(3, dtype=bool), cutoff=float(search)
        )
    # int32 indices and shifts while they fit (halves the largest arrays of a build);
    # the public functions return int64
    idx = np.int32 if len(x) < 2**31 - 1 else np.int64
    i = np.asarray(i, dtype=idx)
    j = np.asarray(j, dtype=idx)
    s = np.asarray(s).reshape(-1, 3)
    if s.dtype != np.int32 or (k is not None and np.abs(k).max(initial=0) > 2**20):
        s = s.astype(np.int64)
    if len(open_dirs):
        real = ~s[:, open_dirs].any(axis=1)
        if not real.all():
            i, j, s = i[real], j[real], s[real]
    if k is not None:
        s += np.take(k, i, axis=0) - np.take(k, j, axis=0)
    return i, j, s


# ----------------------------------------------------------------------------
# exact filter and order (shared with the Verlet list)


def _rows_times(a: np.ndarray, m: np.ndarray) -> np.ndarray:
    """``a @ m`` for an (n, 3) array and a 3x3 matrix without BLAS: OpenBLAS would start
    (and spin) its threads for large ``n``, taking cycles from other processes and from
    our own kernel threads on shared cores."""
    a = np.asarray(a, dtype=np.float64)
    out = a[:, 0, None] * m[0]
    out += a[:, 1, None] * m[1]
    out += a[:, 2, None] * m[2]
    return out


#: edges per block in :func:`_edge_lengths` (bounds its temporaries to a few MB)
_LENGTH_BLOCK = 1 << 16


def _edge_lengths(x, cell, i, j, s) -> np.ndarray:
    """``|x[j] - x[i] + s @ cell|`` for every edge, in blocks (no (E, 3) temporaries
    of the whole list: the candidate lists of a Verlet skin hold millions of edges)."""
    n = len(i)
    d = np.empty(n)
    for a in range(0, n, _LENGTH_BLOCK):
        b = min(a + _LENGTH_BLOCK, n)
        r = np.take(x, j[a:b], axis=0)
        r -= np.take(x, i[a:b], axis=0)
        r += _rows_times(s[a:b], cell)
        d[a:b] = np.sqrt(np.einsum("ij,ij->i", r, r))
    return d


def _keep_mask(x, cell, i, j, s, cutoff, pcm, species) -> np.ndarray:
    """Mask of the edges inside the (pair) cutoff, without ``i == j`` at ``S == 0``: one
    compiled loop when the kernels are available (no per-edge temporaries), else
    :func:`_edge_lengths` and :func:`_keep`."""
    compiled = i.dtype == j.dtype and i.dtype in (np.int32, np.int64) \
        and s.dtype in (np.int8, np.int32, np.int64) and len(i) > 0
    if compiled:
        from ase_mlp import kernels

        compiled = kernels.available()
    if not compiled:
        return _keep(_edge_lengths(x, cell, i, j, s), i, j, s, cutoff, pcm, species)
    x = np.ascontiguousarray(x, dtype=np.float64)
    c = np.ascontiguousarray(cell, dtype=np.float64)
    i, j, s = (np.ascontiguousarray(a) for a in (i, j, s))
    mask = np.empty(len(i), dtype=np.uint8)
    if pcm is not None:
        sp = np.ascontiguousarray(species, dtype=np.int64)
        p = np.ascontiguousarray(pcm, dtype=np.float64)
        extra = (sp.ctypes.data, p.ctypes.data, p.shape[0], 0.0)
    else:
        extra = (None, None, 0, float(cutoff))
    n = kernels.library().ase_mlp_edge_keep(
        len(i), x.ctypes.data, c.ctypes.data, i.ctypes.data, j.ctypes.data, s.ctypes.data,
        i.dtype.itemsize, s.dtype.itemsize, *extra, mask.ctypes.data)
    if n < 0:
        raise RuntimeError(f"unsupported index widths {i.dtype}/{s.dtype} for the filter")
    return mask.view(bool)


def _keep(d, i, j, s, cutoff, pcm, species) -> np.ndarray:
    """Mask of edges strictly inside the (pair) cutoff, without i == j, S == 0."""
    if pcm is None:
        keep = d < cutoff
    else:
        keep = d < pcm[np.take(species, i), np.take(species, j)]
    self_pairs = np.flatnonzero(i == j)
    if len(self_pairs):
        keep[self_pairs] &= s[self_pairs].any(axis=1)
    return keep


def _sort(i, j, s, n_atoms):
    """Sort edges by ``i``, then ``j``, then ``S`` (lexicographically)."""
    key = i.astype(np.int64) * max(n_atoms, 1) + j
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    if len(key) > 1 and (sorted_key[1:] == sorted_key[:-1]).any():
        # the same (i, j) with several shifts: order those by S too
        order = np.lexsort((s[:, 2], s[:, 1], s[:, 0], j, i))
    return np.take(i, order), np.take(j, order), np.take(s, order, axis=0)


def _empty():
    return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 3), np.int64)


def _validated(positions, cell, pbc, cutoff, species, pair_cutoffs):
    """Check every input of :func:`neighbor_list`.

    Returns ``(x, cell, pbc, m, cutoff, pcm, species)`` where ``m`` is the
    completed cell, ``cutoff`` the search radius and ``pcm`` the effective
    pair-cutoff matrix (or None).
    """
    x = _as_positions(positions)
    cell = _as_cell(cell)
    pbc = _as_pbc(pbc)
    m = _completed_cell(cell, pbc)
    if cutoff is None and pair_cutoffs is None:
        raise ValueError("cutoff is required when pair_cutoffs is not given")
    if cutoff is not None:
        cutoff = _check_cutoff(cutoff)
    pcm = None
    if pair_cutoffs is not None:
        pcm = _check_pair_cutoffs(pair_cutoffs, cutoff)
        if species is None:
            raise ValueError("pair_cutoffs needs species (one species index per atom)")
        cutoff = float(pcm.max())
    species = _check_species(species, len(x), None if pcm is None else pcm.shape[0])
    return x, cell, pbc, m, cutoff, pcm, species


#: structures up to this many atoms go through the compiled brute-force search (no
#: cell grid; ~10 us for 64 atoms against ~1 ms of set-up per vesin call)
SMALL_SYSTEM = 160


def _small_neighbor_list(x, cell, pbc, m, cutoff, pcm, species):
    """All pairs by the compiled O(N^2 x images) search; None if it is unavailable."""
    from ase_mlp import kernels

    if not kernels.available():
        return None
    lib = kernels.library()
    x = np.ascontiguousarray(x, dtype=np.float64)
    cell = np.ascontiguousarray(cell, dtype=np.float64)
    minv = np.ascontiguousarray(np.linalg.inv(m))
    faces = np.ascontiguousarray(_faces(m))
    pbc8 = np.ascontiguousarray(pbc, dtype=np.int8)
    if pcm is not None:
        pcm_c = np.ascontiguousarray(pcm, dtype=np.float64)
        sp = np.ascontiguousarray(species, dtype=np.int64)
        args = (sp.ctypes.data, pcm_c.ctypes.data, pcm_c.shape[0])
    else:
        args = (None, None, 0)
    head = (len(x), x.ctypes.data, cell.ctypes.data, minv.ctypes.data, faces.ctypes.data,
            pbc8.ctypes.data, float(cutoff))
    n = lib.ase_mlp_small_neighbors(*head, *args, -1, None, None, None)
    i = np.empty(n, dtype=np.int64)
    j = np.empty(n, dtype=np.int64)
    s = np.empty((n, 3), dtype=np.int64)
    got = lib.ase_mlp_small_neighbors(*head, *args, n, i.ctypes.data, j.ctypes.data,
                                      s.ctypes.data)
    if got != n:
        raise RuntimeError(f"small neighbour search counted {n} pairs, then {got}")
    return i, j, s


def _neighbor_list(x, cell, pbc, m, cutoff, pcm, species):
    """:func:`neighbor_list` on validated inputs."""
    if len(x) == 0 or cutoff <= 0.0:
        return _empty()
    _check_images(cell, m, pbc, cutoff)
    if len(x) <= SMALL_SYSTEM:
        out = _small_neighbor_list(x, cell, pbc, m, cutoff, pcm, species)
        if out is not None:
            return out
    i, j, s = _candidates(x, m, pbc, cutoff)
    if len(i) == 0:
        return _empty()
    keep = _keep_mask(x, cell, i, j, s, cutoff, pcm, species)
    if not keep.all():
        keep = np.flatnonzero(keep)
        i, j, s = np.take(i, keep), np.take(j, keep), np.take(s, keep, axis=0)
    return _sort(i, j, s, len(x))


# ----------------------------------------------------------------------------
# public API


def neighbor_list(positions, cell, pbc, cutoff, *, species=None, pair_cutoffs=None):
    """Full (both directions) neighbour list of one structure.

    Parameters
    ----------
    positions : array_like, shape (n_atoms, 3)
        Cartesian positions, Å. Atoms may lie outside the cell.
    cell : array_like, shape (3, 3), or None
        Lattice vectors as rows, Å. Rows of open (non-periodic) directions are
        ignored and may be zero; None means a zero cell (only with no pbc).
    pbc : bool or sequence of 3 bool
        Periodicity along each cell vector.
    cutoff : float or None
        Cutoff radius, Å (> 0). May be None when ``pair_cutoffs`` is given,
        the radius is then the largest pair cutoff; when both are given the
        pair cutoffs are capped at ``cutoff``.
    species : array_like of int, shape (n_atoms,), optional
        Species index of every atom (row/column of ``pair_cutoffs``).
    pair_cutoffs : array_like, shape (n_species, n_species), optional
        Symmetric matrix of per species-pair cutoffs, Å. An edge is kept when
        ``|r_ij| < pair_cutoffs[species[i], species[j]]``.

    Returns
    -------
    i, j : numpy.ndarray of int64, shape (n_edges,)
        Centre and neighbour atom indices.
    S : numpy.ndarray of int64, shape (n_edges, 3)
        Integer cell shifts, ``r_ij = x[j] - x[i] + S @ cell``.

    Notes
    -----
    Both directions of every pair are listed. ``i == j`` only appears with
    ``S != 0`` (periodic images). Edges are sorted by ``i``, then ``j``, then
    ``S`` (lexicographically), so the output is deterministic.

    Raises
    ------
    ValueError
        For non-finite positions (naming the first bad atom), a periodic cell
        of zero volume or one so small for the cutoff that more than
        :data:`MAX_PERIODIC_IMAGES` periodic images would be searched, a
        non-positive or non-finite cutoff, or inconsistent ``species`` /
        ``pair_cutoffs``.
    """
    i, j, s = _neighbor_list(*_validated(positions, cell, pbc, cutoff, species, pair_cutoffs))
    return _int64(i), _int64(j), _int64(s)


def _int64(a: np.ndarray) -> np.ndarray:
    return a if a.dtype == np.int64 else a.astype(np.int64)


@dataclass
class BatchNeighbors:
    """Neighbour lists of several structures, concatenated.

    Attributes
    ----------
    i, j : numpy.ndarray of int64, shape (n_edges,)
        Global atom indices into the concatenation of all systems.
    shifts : numpy.ndarray of int64, shape (n_edges, 3)
        Integer cell shifts, in units of the cell of the edge's system.
    edge_system : numpy.ndarray of int64, shape (n_edges,)
        System of each edge.
    atom_system : numpy.ndarray of int64, shape (n_atoms_total,)
        System of each atom.
    offsets : numpy.ndarray of int64, shape (n_systems + 1,)
        ``offsets[k]`` is the global index of the first atom of system ``k``;
        ``offsets[-1]`` is the total number of atoms.
    """

    i: np.ndarray
    j: np.ndarray
    shifts: np.ndarray
    edge_system: np.ndarray
    atom_system: np.ndarray
    offsets: np.ndarray

    @property
    def n_systems(self) -> int:
        return int(self.offsets.shape[0] - 1)

    @property
    def n_atoms(self) -> int:
        return int(self.offsets[-1])

    @property
    def n_edges(self) -> int:
        return int(self.i.shape[0])


def _unpack_system(system):
    from ase import Atoms

    if isinstance(system, Atoms):
        return system.positions, system.cell.array, system.pbc
    try:
        positions, cell, pbc = system
    except (TypeError, ValueError):
        raise ValueError(
            "each system must be an ase.Atoms or a (positions, cell, pbc) tuple, "
            f"got {type(system).__name__}"
        ) from None
    return positions, cell, pbc


def batch_neighbor_list(systems, cutoff, *, species=None, pair_cutoffs=None) -> BatchNeighbors:
    """Neighbour lists of many structures at once, with global atom indices.

    Parameters
    ----------
    systems : sequence of ase.Atoms or of (positions, cell, pbc) tuples
        Structures of any size (one atom, no edges, ... are fine).
    cutoff : float or None
        As in :func:`neighbor_list`.
    species : sequence of int arrays, optional
        One species array per system (needed with ``pair_cutoffs``).
    pair_cutoffs : array_like, shape (n_species, n_species), optional
        As in :func:`neighbor_list`, shared by all systems.

    Returns
    -------
    BatchNeighbors
        The concatenation of the per-system lists of :func:`neighbor_list`,
        with ``i`` and ``j`` offset by the first atom index of their system.
    """
    systems = list(systems)
    if species is not None:
        species = list(species)
        if len(species) != len(systems):
            raise ValueError(
                f"species must hold one array per system: got {len(species)} "
                f"for {len(systems)} systems"
            )
    ii, jj, ss, es, sizes = [], [], [], [], []
    offset = 0
    for k, system in enumerate(systems):
        positions, cell, pbc = _unpack_system(system)
        try:
            args = _validated(
                positions,
                cell,
                pbc,
                cutoff,
                None if species is None else species[k],
                pair_cutoffs,
            )
            i, j, s = (_int64(a) for a in _neighbor_list(*args))
        except ValueError as error:
            raise ValueError(f"system {k}: {error}") from None
        n_atoms = len(args[0])
        ii.append(i + offset)
        jj.append(j + offset)
        ss.append(s)
        es.append(np.full(len(i), k, dtype=np.int64))
        sizes.append(n_atoms)
        offset += n_atoms
    sizes = np.asarray(sizes, dtype=np.int64)
    offsets = np.zeros(len(systems) + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    if not systems:
        i, j, s = _empty()
        return BatchNeighbors(i, j, s, np.zeros(0, np.int64), np.zeros(0, np.int64), offsets)
    return BatchNeighbors(
        i=np.concatenate(ii),
        j=np.concatenate(jj),
        shifts=np.concatenate(ss),
        edge_system=np.concatenate(es),
        atom_system=np.repeat(np.arange(len(systems), dtype=np.int64), sizes),
        offsets=offsets,
    )
