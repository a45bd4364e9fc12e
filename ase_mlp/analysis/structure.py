"""Radial distribution functions, coordination numbers and bond-angle distributions.

Functions
---------
* :func:`partial_rdf` gives ``g_ab(r)`` for element pairs, :func:`rdf` the total ``g(r)``.
* :func:`coordination_number` is the running integral ``n_ab(r)``.
* :func:`angle_distribution` is the bond-angle distribution ``P(theta)`` of triplets
  ``neighbor - center - neighbor``.

Neighbour pairs come from :class:`vesin.NeighborList`, which includes every periodic image,
so ``rmax`` may exceed half the cell width (periodic images of an atom, including its own,
then count as neighbours; this equals the RDF of a large enough supercell).

Convention (LAMMPS ``compute rdf``, ASE >= 3.27 ``ase.geometry.rdf.get_rdf``)::

    g_ab(r) = V / (N_a N_b) < sum_{i in a} sum_{j in b, j != i} delta(r - r_ij) > / (4 pi r^2)

histogrammed on ``nbins`` bins of width ``dr = rmax / nbins`` (a distance ``d`` falls in
bin ``ceil(d / dr)``, counted from 1) and divided by the exact shell volume
``4/3 pi (r_hi^3 - r_lo^3)``. Hence ``g_ab = g_ba``, ``g = sum_ab c_a c_b g_ab`` and, for
``a = b``, ``g_aa -> (N_a - 1) / N_a`` at large ``r`` in a finite cell. Frames are
normalised with their own volume and then averaged. Distances in Å, angles in degrees.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from ase.geometry import complete_cell
from vesin import NeighborList

from ase_mlp.analysis._common import Trajectory, as_trajectory, check_finite, check_positive


def _check_bins(rmax, nbins) -> tuple[float, int]:
    rmax = check_positive(rmax, "rmax")
    if isinstance(nbins, bool) or int(nbins) != nbins or nbins < 1:
        raise ValueError(f"nbins must be a positive integer, got {nbins!r}")
    return rmax, int(nbins)


def _volumes(traj: Trajectory, volume) -> np.ndarray:
    if volume is not None:
        return np.full(traj.n_frames, check_positive(volume, "volume"))
    if traj.cells is None:
        raise ValueError("the RDF normalisation needs a volume: give frames a cell or pass volume=")
    vols = np.abs(np.linalg.det(traj.cells))
    if np.any(vols < 1e-10):
        raise ValueError(
            "the RDF normalisation needs a volume: a frame has a zero-volume cell, pass volume="
        )
    return vols


def _pairs_in_frame(traj: Trajectory, k: int, cutoff: float, quantities: str):
    cell = traj.cells[k] if traj.cells is not None else np.zeros((3, 3))
    if traj.pbc.any():
        cell = complete_cell(cell)
    nl = NeighborList(cutoff=cutoff, full_list=True)
    return nl.compute(traj.positions[k], cell, traj.pbc, quantities)


def _element_codes(traj: Trajectory) -> tuple[list[str], np.ndarray]:
    if traj.symbols is None:
        raise ValueError("partial RDFs need chemical symbols: pass ase.Atoms frames or symbols=")
    elements = list(dict.fromkeys(traj.symbols))
    lookup = {el: n for n, el in enumerate(elements)}
    return elements, np.array([lookup[s] for s in traj.symbols], dtype=np.int64)


def _histograms(traj: Trajectory, codes: np.ndarray, nel: int, rmax: float, nbins: int):
    """Pair counts per frame, ``(T, nel, nel, nbins)`` (ordered pairs, ``j != i``)."""
    dr = float(rmax / nbins)
    out = np.zeros((traj.n_frames, nel, nel, nbins))
    for k in range(traj.n_frames):
        i, j, d = _pairs_in_frame(traj, k, rmax, "ijd")
        b = np.ceil(d / dr).astype(np.int64)      # same binning as ase.geometry.rdf
        keep = (b >= 1) & (b <= nbins)
        i, j, b = i[keep].astype(np.int64), j[keep].astype(np.int64), b[keep]
        code = (codes[i] * nel + codes[j]) * nbins + (b - 1)
        out[k] = np.bincount(code, minlength=nel * nel * nbins).reshape(nel, nel, nbins)
    return out


def _shells(rmax: float, nbins: int) -> tuple[np.ndarray, np.ndarray]:
    edges = np.linspace(0.0, rmax, nbins + 1)
    r = 0.5 * (edges[:-1] + edges[1:])
    shell = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    return r, shell


def partial_rdf(
    frames,
    rmax: float,
    nbins: int,
    *,
    pairs: Sequence[tuple[str, str]] | None = None,
    volume: float | None = None,
    cells=None,
    pbc=None,
    symbols=None,
) -> tuple[np.ndarray, dict[tuple[str, str], np.ndarray]]:
    """Partial radial distribution functions ``g_ab(r)`` averaged over frames.

    Parameters
    ----------
    frames : ase.Atoms, sequence of ase.Atoms, or array_like
        Frames, or positions ``(T, N, 3)`` with ``cells``, ``pbc`` and ``symbols``.
    rmax : float
        Largest distance (Å). Any value is allowed (periodic images are included).
    nbins : int
        Number of bins on ``[0, rmax]``.
    pairs : sequence of (str, str), optional
        Element pairs to return, e.g. ``[("Na", "Cl")]``. Default: every ordered pair of the
        elements present (``g_ab`` and ``g_ba`` are both present and equal).
    volume : float, optional
        Volume (Å^3) used for the normalisation instead of the cell volume (needed for
        non-periodic frames without a cell).

    Returns
    -------
    r : numpy.ndarray
        ``(nbins,)`` bin midpoints (Å).
    g : dict of (str, str) to numpy.ndarray
        ``(nbins,)`` partial RDFs.

    Examples
    --------
    >>> r, g = partial_rdf(frames, rmax=6.0, nbins=120)        # doctest: +SKIP
    >>> g["Na", "Cl"]                                          # doctest: +SKIP
    """
    rmax, nbins = _check_bins(rmax, nbins)
    traj = as_trajectory(frames, cells=cells, pbc=pbc, symbols=symbols)
    elements, codes = _element_codes(traj)
    if pairs is None:
        pairs = [(a, b) for a in elements for b in elements]
    else:
        pairs = [tuple(p) for p in pairs]
        if len(pairs) == 0:
            raise ValueError("pairs is empty")
        for p in pairs:
            if len(p) != 2:
                raise ValueError(f"each entry of pairs must be two element symbols, got {p!r}")
            for el in p:
                if el not in elements:
                    raise ValueError(
                        f"unknown species {el!r} in pairs: not present in the frames "
                        f"(present: {', '.join(elements)})"
                    )
    vols = _volumes(traj, volume)
    counts = _histograms(traj, codes, len(elements), rmax, nbins)
    n_el = np.bincount(codes, minlength=len(elements)).astype(float)
    r, shell = _shells(rmax, nbins)
    out = {}
    for a, b in pairs:
        ia, ib = elements.index(a), elements.index(b)
        per_frame = counts[:, ia, ib] * vols[:, None] / (n_el[ia] * n_el[ib] * shell)
        out[(a, b)] = per_frame.mean(axis=0)
    return r, out


def rdf(
    frames,
    rmax: float,
    nbins: int,
    *,
    volume: float | None = None,
    cells=None,
    pbc=None,
) -> tuple[np.ndarray, np.ndarray]:
    """Total radial distribution function ``g(r) = sum_ab c_a c_b g_ab(r)``.

    Same conventions and parameters as :func:`partial_rdf` (symbols are not needed).

    Returns
    -------
    r : numpy.ndarray
        ``(nbins,)`` bin midpoints (Å).
    g : numpy.ndarray
        ``(nbins,)`` total RDF.
    """
    rmax, nbins = _check_bins(rmax, nbins)
    traj = as_trajectory(frames, cells=cells, pbc=pbc)
    vols = _volumes(traj, volume)
    counts = _histograms(traj, np.zeros(traj.n_atoms, dtype=np.int64), 1, rmax, nbins)
    r, shell = _shells(rmax, nbins)
    n = float(traj.n_atoms)
    return r, (counts[:, 0, 0] * vols[:, None] / (n * n * shell)).mean(axis=0)


def coordination_number(r, g, rho_b: float) -> tuple[np.ndarray, np.ndarray]:
    """Running coordination number ``n_ab(r) = 4 pi rho_b int_0^r g_ab(r') r'^2 dr'``.

    Parameters
    ----------
    r : array_like
        ``(nbins,)`` radii (Å). Bin midpoints ``(k + 1/2) dr`` as returned by
        :func:`partial_rdf` are integrated exactly over each histogram shell; any other
        increasing grid is integrated with the trapezoidal rule from ``r = 0``
        (``g(0) = 0``).
    g : array_like
        ``(nbins,)`` RDF ``g_ab`` on ``r``.
    rho_b : float
        Number density of species ``b``, ``N_b / V`` (Å^-3).

    Returns
    -------
    r_n : numpy.ndarray
        Radii at which ``n`` is given: the upper bin edges ``r + dr/2`` for histogram
        midpoints, else ``r`` itself.
    n : numpy.ndarray
        Mean number of ``b`` neighbours of an ``a`` atom within ``r_n``. For histogram
        input from a single frame this is the exact neighbour count.
    """
    r = np.asarray(r, dtype=float)
    g = np.asarray(g, dtype=float)
    if r.ndim != 1 or r.shape != g.shape:
        raise ValueError(f"r and g must be 1-D arrays of equal length, got {r.shape} and {g.shape}")
    if r.size == 0:
        raise ValueError("r is empty")
    check_finite(r, "r")
    check_finite(g, "g")
    rho_b = check_positive(rho_b, "rho_b")
    if r.size > 1 and np.any(np.diff(r) <= 0):
        raise ValueError("r must be strictly increasing")
    if r[0] < 0:
        raise ValueError("r must be non-negative")
    dr = 2.0 * r[0]
    histogram = dr > 0 and np.allclose(r, (np.arange(r.size) + 0.5) * dr, rtol=1e-9, atol=1e-12)
    if histogram:
        edges = np.arange(r.size + 1) * dr
        shell = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
        return edges[1:], rho_b * np.cumsum(g * shell)
    f = 4.0 * np.pi * rho_b * g * r**2
    rr = np.concatenate([[0.0], r])
    ff = np.concatenate([[0.0], f])
    n = np.cumsum(0.5 * (ff[1:] + ff[:-1]) * np.diff(rr))
    return r, n


def angle_distribution(
    frames,
    center: str,
    neighbor: str,
    rcut: float,
    nbins: int = 180,
    *,
    cells=None,
    pbc=None,
    symbols=None,
) -> tuple[np.ndarray, np.ndarray]:
    """Bond-angle distribution ``P(theta)`` of ``neighbor - center - neighbor`` triplets.

    For every ``center`` atom, every unordered pair of distinct ``neighbor`` atoms (periodic
    images count as distinct) within ``rcut`` contributes the angle between the two bond
    vectors. A structural order parameter: e.g. an fcc crystal gives peaks at 60, 90, 120
    and 180 degrees with weights 24 : 12 : 24 : 6.

    Parameters
    ----------
    frames : ase.Atoms, sequence of ase.Atoms, or array_like
        Frames, or positions ``(T, N, 3)`` with ``cells``, ``pbc`` and ``symbols``.
    center, neighbor : str
        Element symbols of the apex atom and of the two bonded atoms.
    rcut : float
        Bond cutoff (Å), typically the first minimum of ``g_{center,neighbor}``.
    nbins : int
        Number of bins on ``[0, 180]`` degrees.

    Returns
    -------
    theta : numpy.ndarray
        ``(nbins,)`` bin midpoints in degrees.
    p : numpy.ndarray
        ``(nbins,)`` probability density per degree, ``sum(p) * dtheta = 1``, averaged over
        all triplets of all frames. All zeros (with a RuntimeWarning) if no triplet exists.
    """
    rcut, nbins = _check_bins(rcut, nbins)
    traj = as_trajectory(frames, cells=cells, pbc=pbc, symbols=symbols)
    elements, codes = _element_codes(traj)
    for label, el in (("center", center), ("neighbor", neighbor)):
        if el not in elements:
            raise ValueError(
                f"unknown species {el!r} for {label}: not present in the frames "
                f"(present: {', '.join(elements)})"
            )
    ca, cb = elements.index(center), elements.index(neighbor)
    edges = np.linspace(0.0, 180.0, nbins + 1)
    counts = np.zeros(nbins)
    for k in range(traj.n_frames):
        i, j, vec = _pairs_in_frame(traj, k, rcut, "ijD")
        i, j = i.astype(np.int64), j.astype(np.int64)
        keep = (codes[i] == ca) & (codes[j] == cb)
        i, vec = i[keep], vec[keep]
        if i.size < 2:
            continue
        order = np.argsort(i, kind="stable")
        i, vec = i[order], vec[order]
        unit = vec / np.linalg.norm(vec, axis=1)[:, None]
        centers, start, n_nb = np.unique(i, return_index=True, return_counts=True)
        kmax = int(n_nb.max())
        slot = np.arange(i.size) - np.repeat(start, n_nb)
        row = np.repeat(np.arange(centers.size), n_nb)
        padded = np.zeros((centers.size, kmax, 3))
        padded[row, slot] = unit
        valid = np.zeros((centers.size, kmax), dtype=bool)
        valid[row, slot] = True
        cos = np.einsum("cma,cna->cmn", padded, padded)
        upper = np.triu(np.ones((kmax, kmax), dtype=bool), k=1)
        mask = valid[:, :, None] & valid[:, None, :] & upper[None]
        theta = np.degrees(np.arccos(np.clip(cos[mask], -1.0, 1.0)))
        counts += np.histogram(theta, bins=edges)[0]
    theta_mid = 0.5 * (edges[:-1] + edges[1:])
    total = counts.sum()
    if total == 0:
        warnings.warn(
            f"angle_distribution: no {neighbor}-{center}-{neighbor} triplet within "
            f"rcut = {rcut} Å",
            RuntimeWarning,
            stacklevel=2,
        )
        return theta_mid, counts
    return theta_mid, counts / (total * (edges[1] - edges[0]))
