"""Per-atom coordination, phase labels, nuclei and X-ray powder patterns.

Structural analysis for phase transitions (e.g. cell metadynamics): everything here is a pure
function of :class:`ase.Atoms` (or a sequence of them) and returns numpy arrays or small
dataclasses. Neighbours are found with :func:`ase_mlp.neighbors.neighbor_list` (minimum image
is not needed: every periodic image within the cutoff counts, so small and triclinic cells are
exact).

* :func:`coordination_numbers`: neighbours per atom and per (atom, neighbour species).
* :func:`phase_labels`: per-atom labels (integer codes and names) for AB compounds
  (zincblende / wurtzite / rocksalt / CsCl) and group-14 elements (cubic / hexagonal diamond /
  beta-tin), to be stored as ``atoms.arrays["phase"]``.
* :func:`find_nuclei`, :func:`nucleus_sizes`: clusters of atoms carrying one label (connected
  components through periodic boundaries) and their sizes along a trajectory.
* :func:`powder_pattern`, :func:`xrd_pattern`, :func:`xrd_along_trajectory`: X-ray powder
  diffraction of crystals from structure factors, or of finite clusters with ASE's Debye
  formula (:class:`ase.utils.xrdebye.XrDebye`).
* :func:`plot_metad`: enthalpy, volume and cell CVs versus metastep (matplotlib on demand).

Units: Å, degrees for 2θ, eV.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers, covalent_radii

from ase_mlp.neighbors import neighbor_list


__all__ = [
    "AB_PHASES",
    "GROUP14_PHASES",
    "Coordination",
    "PhaseFingerprint",
    "PhaseLabels",
    "PowderPattern",
    "coordination_numbers",
    "default_cutoffs",
    "find_nuclei",
    "form_factor",
    "nucleus_sizes",
    "phase_labels",
    "plot_metad",
    "powder_pattern",
    "read_metad_log",
    "xrd_along_trajectory",
    "xrd_pattern",
]

#: Phase names of :func:`phase_labels` with ``kind="AB"``; the integer code is the index.
AB_PHASES = ("other", "tetrahedral", "zincblende", "wurtzite", "rocksalt", "CsCl")
#: Phase names of :func:`phase_labels` with ``kind="group14"``; the integer code is the index.
GROUP14_PHASES = ("other", "tetrahedral", "cubic diamond", "hexagonal diamond", "beta-tin")

#: Default pair cutoff = this factor times the sum of the covalent radii (ASE's table). With
#: 1.25 the first shells of wurtzite/zincblende/rocksalt/CsCl GaN and of diamond and beta-tin
#: Si (4 + 2 neighbours at 2.43 and 2.585 Å, next shell at 3.04 Å) are all counted and the
#: next shells are not.
COVALENT_FACTOR = 1.25


# --------------------------------------------------------------------------- neighbours


def default_cutoffs(symbols, factor: float = COVALENT_FACTOR) -> dict:
    """Pair cutoffs ``factor * (r_cov(a) + r_cov(b))`` for every pair of species present.

    Parameters
    ----------
    symbols : sequence of str
        Chemical symbols (e.g. ``atoms.get_chemical_symbols()``).
    factor : float
        Scale applied to the sum of ASE's covalent radii.

    Returns
    -------
    dict
        ``{(a, b): cutoff}`` with both orders of every pair, Å.
    """
    if not factor > 0:
        raise ValueError(f"factor must be positive, got {factor}")
    species = list(dict.fromkeys(symbols))
    return {
        (a, b): float(factor * (covalent_radii[atomic_numbers[a]]
                                + covalent_radii[atomic_numbers[b]]))
        for a in species
        for b in species
    }


def _species(atoms: Atoms) -> tuple[list[str], np.ndarray]:
    symbols = atoms.get_chemical_symbols()
    species = list(dict.fromkeys(symbols))
    lookup = {s: n for n, s in enumerate(species)}
    return species, np.array([lookup[s] for s in symbols], dtype=np.int64)


def _pair_matrix(species: list[str], cutoffs) -> np.ndarray:
    ns = len(species)
    if cutoffs is None:
        cutoffs = default_cutoffs(species)
    if isinstance(cutoffs, Mapping):
        mat = np.zeros((ns, ns))
        index = {s: n for n, s in enumerate(species)}
        for key, value in cutoffs.items():
            if not (isinstance(key, tuple) and len(key) == 2):
                raise ValueError(f"cutoffs keys must be (symbol, symbol) pairs, got {key!r}")
            a, b = key
            if a not in index or b not in index:
                continue
            value = float(value)
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"cutoff for {key} must be finite and >= 0, got {value}")
            ia, ib = index[a], index[b]
            if mat[ia, ib] > 0 and mat[ia, ib] != value:
                raise ValueError(f"conflicting cutoffs for {a}-{b}: {mat[ia, ib]} and {value}")
            mat[ia, ib] = mat[ib, ia] = value
        return mat
    value = float(cutoffs)
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"cutoff must be a positive number or a dict, got {cutoffs!r}")
    return np.full((ns, ns), value)


def _bonds(atoms: Atoms, cutoffs):
    """Edges ``i, j`` and bond vectors ``r_ij`` (both directions), with species codes."""
    species, codes = _species(atoms)
    mat = _pair_matrix(species, cutoffs)
    if mat.max() <= 0:
        empty = np.zeros(0, dtype=np.int64)
        return species, codes, empty, empty, np.zeros((0, 3))
    pos = atoms.get_positions()
    cell = np.asarray(atoms.cell.array, dtype=np.float64)
    i, j, S = neighbor_list(pos, cell, atoms.pbc, None, species=codes, pair_cutoffs=mat)
    vec = pos[j] - pos[i] + S @ cell
    return species, codes, i, j, vec


# --------------------------------------------------------------------------- coordination


@dataclass
class Coordination:
    """Coordination numbers of one structure.

    Attributes
    ----------
    total : numpy.ndarray of int, shape (n_atoms,)
        Number of neighbours of each atom (all periodic images counted).
    by_species : numpy.ndarray of int, shape (n_atoms, n_species)
        ``by_species[i, s]`` = neighbours of atom ``i`` of species ``species[s]``.
    species : list of str
        Species in order of first appearance.
    """

    total: np.ndarray
    by_species: np.ndarray
    species: list

    def of(self, symbol: str) -> np.ndarray:
        """Neighbours of species ``symbol`` of every atom (zeros when absent)."""
        if symbol not in self.species:
            return np.zeros(self.total.shape[0], dtype=np.int64)
        return self.by_species[:, self.species.index(symbol)]


def coordination_numbers(atoms: Atoms, cutoffs=None) -> Coordination:
    """Per-atom coordination numbers, in total and per neighbour species.

    Parameters
    ----------
    atoms : ase.Atoms
        Periodic (any, also triclinic, cell) or finite structure.
    cutoffs : float or dict, optional
        One radius for all pairs (Å), or ``{("Ga", "N"): 2.4, ("Ga", "Ga"): 3.0, ...}``; a pair
        missing from the dict is never bonded, either order of a key may be given. Default:
        :func:`default_cutoffs` (1.25 times the sum of covalent radii).

    Returns
    -------
    Coordination
        ``total`` (n_atoms,), ``by_species`` (n_atoms, n_species) and ``species``.
    """
    species, codes, i, j, _ = _bonds(atoms, cutoffs)
    n, ns = len(atoms), len(species)
    by = np.zeros((n, ns), dtype=np.int64)
    np.add.at(by, (i, codes[j]), 1)
    return Coordination(total=by.sum(axis=1), by_species=by, species=species)


# --------------------------------------------------------------------------- phase labels


@dataclass
class PhaseLabels:
    """Per-atom phase labels.

    Attributes
    ----------
    codes : numpy.ndarray of int, shape (n_atoms,)
        Index into ``names``; store as ``atoms.arrays["phase"] = labels.codes`` to colour
        snapshots (extxyz keeps it as a per-atom column).
    names : tuple of str
        :data:`AB_PHASES` or :data:`GROUP14_PHASES`.
    coordination : numpy.ndarray of int, shape (n_atoms,)
        Coordination used for the label (unlike-species neighbours for ``kind="AB"``).
    """

    codes: np.ndarray
    names: tuple
    coordination: np.ndarray

    @property
    def labels(self) -> np.ndarray:
        """Names of the per-atom labels, shape (n_atoms,)."""
        return np.asarray(self.names, dtype=object)[self.codes]

    def code(self, name: str) -> int:
        """Integer code of phase ``name``."""
        return self.names.index(name)

    def counts(self) -> dict:
        """Number of atoms with each label, ``{name: count}``."""
        c = np.bincount(self.codes, minlength=len(self.names))
        return {name: int(c[k]) for k, name in enumerate(self.names)}


def _eclipsed_bonds(n_atoms: int, i: np.ndarray, j: np.ndarray, vec: np.ndarray,
                    four: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eclipsed-bond count of 4-fold atoms whose 4 neighbours are 4-fold.

    For a bond i-j the three other bonds of i and of j are projected onto the plane normal to
    the bond; with dihedral angles phi, ``mean(cos 3 phi)`` is -1 for the staggered
    (cubic: zincblende / diamond) and +1 for the eclipsed (hexagonal: wurtzite, lonsdaleite,
    the bond along c) conformation. Returns (ok, n_eclipsed) per atom.
    """
    ok = np.zeros(n_atoms, dtype=bool)
    n_ecl = np.zeros(n_atoms, dtype=np.int64)
    sel = four[i]
    if not sel.any():
        return ok, n_ecl
    # neighbour vectors of the 4-fold atoms, (n_atoms, 4, 3); edges are sorted by i
    ii, jj, vv = i[sel], j[sel], vec[sel]
    slot = np.arange(ii.shape[0]) - np.searchsorted(ii, ii)
    V = np.zeros((n_atoms, 4, 3))
    J = np.full((n_atoms, 4), -1, dtype=np.int64)
    V[ii, slot] = vv
    J[ii, slot] = jj
    ok = four & np.all(four[np.where(J >= 0, J, 0)] & (J >= 0), axis=1)
    e = ok[ii] & ok[jj]
    ii, jj, vv, slot = ii[e], jj[e], vv[e], slot[e]
    if ii.shape[0] == 0:
        return ok, n_ecl
    b = vv / np.linalg.norm(vv, axis=1, keepdims=True)
    others = np.arange(4)[None, :] != slot[:, None]                       # (E, 4)
    pk = V[ii][others].reshape(-1, 3, 3)                                   # other bonds of i
    back = np.argmin(np.linalg.norm(V[jj] + vv[:, None, :], axis=2), axis=1)
    pl = V[jj][np.arange(4)[None, :] != back[:, None]].reshape(-1, 3, 3)  # other bonds of j

    def _project(p):
        p = p - np.einsum("ekx,ex->ek", p, b)[:, :, None] * b[:, None, :]
        return p / np.maximum(np.linalg.norm(p, axis=2, keepdims=True), 1e-12)

    c = np.einsum("ekx,elx->ekl", _project(pk), _project(pl)).clip(-1.0, 1.0)
    cos3 = (4.0 * c**3 - 3.0 * c).mean(axis=(1, 2))
    np.add.at(n_ecl, ii, (cos3 > 0).astype(np.int64))
    return ok, n_ecl


def _tetrahedral_order(n_atoms: int, i: np.ndarray, vec: np.ndarray,
                       cn: np.ndarray) -> np.ndarray:
    """Errington-Debenedetti ``q = 1 - 3/8 sum_{pairs} (cos psi + 1/3)^2`` of 4-fold atoms.

    ``q = 1`` for a regular tetrahedron (diamond, zincblende, wurtzite), 0.69 for the four
    short bonds of beta-tin; NaN for atoms that are not 4-fold. Edges must be sorted by ``i``.
    """
    q = np.full(n_atoms, np.nan)
    sel = (cn == 4)[i]
    if not sel.any():
        return q
    u = vec[sel] / np.linalg.norm(vec[sel], axis=1, keepdims=True)
    u = u.reshape(-1, 4, 3)
    c = np.einsum("akx,alx->akl", u, u)
    iu = np.triu_indices(4, 1)
    q[np.flatnonzero(cn == 4)] = 1 - 3 / 8 * ((c[:, iu[0], iu[1]] + 1 / 3) ** 2).sum(axis=1)
    return q


def phase_labels(atoms: Atoms, kind: str = "AB", cutoffs=None, *,
                 q_min: float = 0.8) -> PhaseLabels:
    """Per-atom phase labels from coordination and the stacking of tetrahedral bonds.

    Parameters
    ----------
    atoms : ase.Atoms
        The structure (periodic or not; any cell shape).
    kind : {"AB", "group14"}
        ``"AB"``: binary compound (GaN, ZnO, SiC, NaCl, ...); only unlike-species neighbours
        count. 4-fold atoms are ``"zincblende"`` (B3: all four bonds staggered),
        ``"wurtzite"`` (B4: exactly one eclipsed bond) or ``"tetrahedral"`` (anything else, or
        a neighbour not tetrahedral); 6-fold -> ``"rocksalt"`` (B1), 8-fold -> ``"CsCl"`` (B2),
        else ``"other"``. ``"group14"``: element (C, Si, Ge, Sn); all neighbours count.
        4-fold -> ``"cubic diamond"`` / ``"hexagonal diamond"`` / ``"tetrahedral"`` as above,
        6-fold -> ``"beta-tin"`` (its 4 + 2 shell at 2.43 and 2.585 Å in Si lies within the
        default cutoff; other 6-fold phases such as Imma or simple cubic get the same label),
        else ``"other"``.
    cutoffs : float or dict, optional
        As in :func:`coordination_numbers`; default :func:`default_cutoffs`. For MD snapshots
        at high temperature or pressure, the first minimum of the partial RDF
        (:func:`ase_mlp.analysis.partial_rdf`) is a good explicit choice.
    q_min : float
        4-fold atoms count as tetrahedral only when their tetrahedral order parameter
        (:func:`tetrahedral_order`, 1 for a regular tetrahedron) is at least ``q_min``;
        otherwise they are ``"other"`` (e.g. the 4 short bonds of beta-tin, q = 0.69).

    Returns
    -------
    PhaseLabels
        ``codes`` (ints), ``names`` (:data:`AB_PHASES` or :data:`GROUP14_PHASES`),
        ``coordination``; ``labels`` gives the names per atom.
    """
    if kind not in ("AB", "group14"):
        raise ValueError(f"kind must be 'AB' or 'group14', got {kind!r}")
    species, codes, i, j, vec = _bonds(atoms, cutoffs)
    if kind == "AB":
        if len(species) != 2:
            raise ValueError(f"kind='AB' needs exactly two species, got {species}")
        keep = codes[i] != codes[j]
        i, j, vec = i[keep], j[keep], vec[keep]
        names = AB_PHASES
    else:
        names = GROUP14_PHASES
    n = len(atoms)
    cn = np.bincount(i, minlength=n)
    out = np.zeros(n, dtype=np.int64)                                   # "other"
    four = (cn == 4) & (_tetrahedral_order(n, i, vec, cn) >= q_min)
    ok, n_ecl = _eclipsed_bonds(n, i, j, vec, four)
    out[four] = 1                                                        # "tetrahedral"
    out[ok & (n_ecl == 0)] = 2                                           # cubic
    out[ok & (n_ecl == 1)] = 3                                           # hexagonal
    if kind == "AB":
        out[cn == 6] = names.index("rocksalt")
        out[cn == 8] = names.index("CsCl")
    else:
        out[cn == 6] = names.index("beta-tin")
    return PhaseLabels(codes=out, names=names, coordination=cn)


class PhaseFingerprint:
    """Mean coordination and phase fractions of a structure: a metadynamics fingerprint.

    Calling it on ``atoms`` returns ``{"cn_mean": ..., "f_<phase>": ...}`` with one
    fraction per name of :data:`AB_PHASES` or :data:`GROUP14_PHASES` (spaces become
    ``_``), e.g. ``f_cubic_diamond`` and ``f_beta-tin``; pass it as
    ``CellMetadynamics(..., fingerprint=PhaseFingerprint("group14"))`` to log them every
    metastep.

    Parameters
    ----------
    kind, cutoffs, q_min
        As in :func:`phase_labels`.
    """

    def __init__(self, kind: str = "AB", cutoffs=None, *, q_min: float = 0.8):
        if kind not in ("AB", "group14"):
            raise ValueError(f"kind must be 'AB' or 'group14', got {kind!r}")
        self.kind, self.cutoffs, self.q_min = kind, cutoffs, q_min

    def __call__(self, atoms: Atoms) -> dict:
        lab = phase_labels(atoms, self.kind, self.cutoffs, q_min=self.q_min)
        n = max(len(atoms), 1)
        out = {"cn_mean": float(np.mean(lab.coordination)) if len(atoms) else 0.0}
        for name, count in lab.counts().items():
            out["f_" + name.replace(" ", "_")] = count / n
        return out

    def __repr__(self) -> str:
        return f"PhaseFingerprint(kind={self.kind!r}, cutoffs={self.cutoffs!r})"


# --------------------------------------------------------------------------- nuclei


def find_nuclei(atoms: Atoms, labels, phase, cutoff: float) -> list:
    """Clusters of atoms carrying one phase label, joined through periodic boundaries.

    Parameters
    ----------
    atoms : ase.Atoms
        The structure.
    labels : array_like, shape (n_atoms,)
        Per-atom labels: integer codes or names, or a :class:`PhaseLabels`.
    phase : int or str
        The label of the new phase (a name is converted with ``labels.names`` when ``labels``
        is a :class:`PhaseLabels`).
    cutoff : float
        Two selected atoms closer than this (any periodic image) belong to the same cluster, Å.

    Returns
    -------
    list of numpy.ndarray
        Atom indices of every cluster, largest first (ties: lowest first index first).
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if isinstance(labels, PhaseLabels):
        if isinstance(phase, str):
            phase = labels.code(phase)
        labels = labels.codes
    labels = np.asarray(labels)
    if labels.shape != (len(atoms),):
        raise ValueError(f"labels must have shape ({len(atoms)},), got {labels.shape}")
    if not (np.isfinite(cutoff) and cutoff > 0):
        raise ValueError(f"cutoff must be positive, got {cutoff}")
    idx = np.flatnonzero(labels == phase)
    if idx.size == 0:
        return []
    pos = atoms.get_positions()[idx]
    i, j, _ = neighbor_list(pos, np.asarray(atoms.cell.array), atoms.pbc, float(cutoff))
    graph = coo_matrix((np.ones(i.shape[0]), (i, j)), shape=(idx.size, idx.size))
    _, comp = connected_components(graph, directed=False)
    clusters = [idx[comp == c] for c in range(comp.max() + 1)]
    clusters.sort(key=lambda c: (-c.size, c[0]))
    return clusters


def nucleus_sizes(trajectory, phase, cutoff: float, *, kind: str = "AB", cutoffs=None,
                  labels=None) -> list:
    """Sizes of the clusters of ``phase`` in every frame.

    Parameters
    ----------
    trajectory : ase.Atoms or sequence of ase.Atoms
        The frames.
    phase : int or str
        Phase of the nuclei (name from :data:`AB_PHASES` / :data:`GROUP14_PHASES` or code).
    cutoff : float
        Clustering distance, Å (e.g. a bit beyond the nearest-neighbour distance of the new
        phase, so that the cluster is connected through its bonds).
    kind, cutoffs
        Passed to :func:`phase_labels` when ``labels`` is not given.
    labels : callable or sequence, optional
        ``labels(atoms) -> codes`` or one label array per frame; default :func:`phase_labels`.

    Returns
    -------
    list of numpy.ndarray
        Per frame, the cluster sizes in decreasing order (empty when no atom has the label);
        ``[s[0] if s.size else 0 for s in sizes]`` is the largest nucleus over time.
    """
    frames = [trajectory] if isinstance(trajectory, Atoms) else list(trajectory)
    names = AB_PHASES if kind == "AB" else GROUP14_PHASES
    if isinstance(phase, str):
        if phase not in names:
            raise ValueError(f"unknown phase {phase!r} for kind={kind!r}; choose from {names}")
        phase = names.index(phase)
    out = []
    for k, atoms in enumerate(frames):
        if labels is None:
            lab = phase_labels(atoms, kind=kind, cutoffs=cutoffs).codes
        elif callable(labels):
            lab = labels(atoms)
        else:
            lab = labels[k]
        out.append(np.array([c.size for c in find_nuclei(atoms, lab, phase, cutoff)],
                            dtype=np.int64))
    return out


# --------------------------------------------------------------------------- X-ray diffraction


def form_factor(symbol: str, s) -> np.ndarray:
    """Atomic X-ray form factor (electrons) at ``s = sin(theta) / lambda`` (1/Å).

    Waasmaier-Kirfel coefficients as tabulated in :mod:`ase.utils.xrdebye`,
    ``f(s) = sum_i a_i exp(-b_i s^2) + c``; elements missing there (including H) fall back to
    the atomic number, independent of ``s``.
    """
    from ase.utils.xrdebye import waasmaier

    s = np.asarray(s, dtype=np.float64)
    if symbol not in waasmaier:
        return np.full(s.shape, float(atomic_numbers[symbol]))
    c = waasmaier[symbol]
    s2 = s * s
    return c[10] + sum(c[2 * k] * np.exp(-c[2 * k + 1] * s2) for k in range(5))


@dataclass
class PowderPattern:
    """An X-ray powder pattern.

    Attributes
    ----------
    two_theta : numpy.ndarray
        Grid of 2θ (degrees).
    intensity : numpy.ndarray
        Gaussian-broadened intensity on the grid (max 100 when normalised).
    peak_two_theta : numpy.ndarray
        Positions of the reflections (degrees), symmetry-equivalent ones merged.
    peak_intensity : numpy.ndarray
        Integrated intensity of each merged reflection (same scale as ``intensity``'s peaks
        before broadening: max 100 when normalised).
    peak_hkl : numpy.ndarray, shape (n_peaks, 3)
        One representative (h, k, l) per peak, in the basis of ``atoms.cell`` (the largest
        indices, i.e. h >= k >= l >= 0 when possible).
    multiplicity : numpy.ndarray
        Number of merged (h, k, l).
    """

    two_theta: np.ndarray
    intensity: np.ndarray
    peak_two_theta: np.ndarray
    peak_intensity: np.ndarray
    peak_hkl: np.ndarray
    multiplicity: np.ndarray

    def intensity_at(self, two_theta: float, tol: float = 0.2) -> float:
        """Summed peak intensity within ``tol`` degrees of ``two_theta`` (0 if none)."""
        near = np.abs(self.peak_two_theta - two_theta) <= tol
        return float(self.peak_intensity[near].sum())


def powder_pattern(atoms: Atoms, two_theta_range=(10.0, 90.0), wavelength: float = 1.5406, *,
                   fwhm: float = 0.1, step: float = 0.02, b_factor: float = 0.0,
                   normalize: bool = True, min_rel_intensity: float = 1e-6) -> PowderPattern:
    """X-ray powder pattern of a crystal from its structure factors.

    For every reciprocal lattice vector ``G = 2 pi (h, k, l) @ inv(cell).T`` with
    ``2 theta`` in range (Bragg: ``sin theta = lambda |G| / 4 pi``), the intensity is
    ``|F|^2 * LP * exp(-2 B s^2)`` with ``F = sum_j f_j(s) exp(i G . x_j)``,
    ``s = sin theta / lambda``, and the Lorentz-polarisation factor of an unpolarised beam
    ``LP = (1 + cos^2 2theta) / (sin^2 theta cos theta)``. All (h, k, l) are enumerated, so the
    multiplicity is included; equivalent reflections (same 2θ within 1e-6 deg) are merged.
    The structure factors are matrix products over the (h, k, l) box, O(n_hkl * n_atoms),
    i.e. O(N^2) for supercells.

    Parameters
    ----------
    atoms : ase.Atoms
        A periodic structure (all three directions); any cell, also a supercell snapshot.
    two_theta_range : (float, float)
        2θ range, degrees, ``0 < lo < hi < 180``.
    wavelength : float
        X-ray wavelength, Å (default Cu K-alpha1).
    fwhm : float
        Full width at half maximum of the Gaussian peaks, degrees.
    step : float
        Grid spacing, degrees.
    b_factor : float
        Isotropic Debye-Waller B (Å^2), the same for all atoms.
    normalize : bool
        Scale so that the strongest peak is 100.
    min_rel_intensity : float
        Reflections weaker than this fraction of the strongest are dropped (systematic
        absences give ``|F|^2`` at round-off level).

    Returns
    -------
    PowderPattern
    """
    if not np.all(atoms.pbc):
        raise ValueError("powder_pattern needs a periodic crystal; use xrd_pattern(method='debye')")
    lo, hi = (float(x) for x in two_theta_range)
    if not 0 < lo < hi < 180:
        raise ValueError(f"two_theta_range must satisfy 0 < lo < hi < 180, got {two_theta_range}")
    if not (wavelength > 0 and fwhm > 0 and step > 0):
        raise ValueError("wavelength, fwhm and step must be positive")
    cell = np.asarray(atoms.cell.array, dtype=np.float64)
    recip = 2 * np.pi * np.linalg.inv(cell).T                    # rows b_i, a_i . b_j = 2 pi d_ij
    gmax = 4 * np.pi * np.sin(np.radians(hi / 2)) / wavelength
    nmax = np.ceil(gmax * np.linalg.norm(cell, axis=1) / (2 * np.pi)).astype(int)
    axes = [np.arange(-m, m + 1) for m in nmax]
    hkl = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    g = np.linalg.norm(hkl @ recip, axis=1)
    sin_t = np.minimum(g * wavelength / (4 * np.pi), 1.0)
    tt = 2 * np.degrees(np.arcsin(sin_t))
    ok = (g > 0) & (sin_t < 1) & (tt >= lo - 3 * fwhm) & (tt <= hi + 3 * fwhm)
    hkl, g, sin_t, tt = hkl[ok], g[ok], sin_t[ok], tt[ok]

    s = sin_t / wavelength
    frac = atoms.get_scaled_positions(wrap=False)
    symbols = np.array(atoms.get_chemical_symbols())
    F = np.zeros(hkl.shape[0], dtype=np.complex128)
    idx = hkl + nmax                                              # position in the (h, k, l) box
    for sym in dict.fromkeys(symbols.tolist()):
        xs = frac[symbols == sym]
        # exp(2 pi i (h x + k y + l z)) = e_x[h] e_y[k] e_z[l]: one matrix product per h
        e = [np.exp(2j * np.pi * np.outer(ax, xs[:, d])) for d, ax in enumerate(axes)]
        box = np.empty((axes[0].size, axes[1].size, axes[2].size), dtype=np.complex128)
        for h in range(axes[0].size):
            box[h] = (e[0][h] * e[1]) @ e[2].T
        F += form_factor(sym, s) * box[idx[:, 0], idx[:, 1], idx[:, 2]]
    theta = np.radians(tt / 2)
    lp = (1 + np.cos(2 * theta) ** 2) / (np.sin(theta) ** 2 * np.cos(theta))
    inten = np.abs(F) ** 2 * lp * np.exp(-2 * b_factor * s**2)

    # merge equivalent reflections
    key = np.round(tt, 6)
    uniq, inv = np.unique(key, return_inverse=True)
    peak_i = np.bincount(inv, weights=inten, minlength=uniq.size)
    mult = np.bincount(inv, minlength=uniq.size)
    rep = np.zeros((uniq.size, 3), dtype=np.int64)
    order = np.lexsort((hkl[:, 2], hkl[:, 1], hkl[:, 0]))       # last one per group = largest
    rep[inv[order]] = hkl[order]
    imax = peak_i.max() if peak_i.size else 0.0
    keep = peak_i > min_rel_intensity * imax if imax > 0 else np.zeros(uniq.size, dtype=bool)
    peak_tt, peak_i, mult, rep = uniq[keep], peak_i[keep], mult[keep], rep[keep]

    grid = np.arange(lo, hi + 0.5 * step, step)
    sigma = fwhm / (2 * np.sqrt(2 * np.log(2)))
    prof = np.zeros_like(grid)
    lo_i = np.searchsorted(grid, peak_tt - 5 * sigma)
    hi_i = np.searchsorted(grid, peak_tt + 5 * sigma)
    for t0, i0, a, b in zip(peak_tt, peak_i, lo_i, hi_i, strict=True):
        prof[a:b] += i0 * np.exp(-0.5 * ((grid[a:b] - t0) / sigma) ** 2)
    if normalize and peak_i.size:
        scale = 100.0 / peak_i.max()
        peak_i = peak_i * scale
        prof = prof * (100.0 / prof.max()) if prof.max() > 0 else prof
    inside = (peak_tt >= lo) & (peak_tt <= hi)
    return PowderPattern(two_theta=grid, intensity=prof, peak_two_theta=peak_tt[inside],
                         peak_intensity=peak_i[inside], peak_hkl=rep[inside],
                         multiplicity=mult[inside])


def xrd_pattern(atoms: Atoms, two_theta, wavelength: float = 1.5406, method: str = "powder",
                **kwargs) -> np.ndarray:
    """X-ray diffraction intensity on a 2θ grid.

    Parameters
    ----------
    atoms : ase.Atoms
        The structure.
    two_theta : array_like
        2θ grid, degrees (evenly spaced for ``method="powder"``).
    wavelength : float
        Å.
    method : {"powder", "debye"}
        ``"powder"``: :func:`powder_pattern` of the periodic crystal (Bragg peaks, Gaussian
        broadened; ``kwargs`` such as ``fwhm``, ``b_factor`` are passed on). ``"debye"``:
        ASE's :class:`~ase.utils.xrdebye.XrDebye` (Debye scattering equation over all pairs of
        the atoms *as a finite cluster*: periodic images are ignored, so a crystal cell gives
        a size-broadened pattern of that finite piece; ``kwargs`` go to ``XrDebye``, e.g.
        ``damping``).

    Returns
    -------
    numpy.ndarray
        Intensity on the grid (max 100 for "powder"; raw Debye intensity for "debye").
    """
    tt = np.asarray(two_theta, dtype=np.float64)
    if method == "debye":
        from ase.utils.xrdebye import XrDebye

        xrd = XrDebye(atoms, wavelength=wavelength, warn=False, **kwargs)
        return np.asarray(xrd.calc_pattern(x=tt, mode="XRD"), dtype=np.float64)
    if method != "powder":
        raise ValueError(f"method must be 'powder' or 'debye', got {method!r}")
    if tt.ndim != 1 or tt.size < 2:
        raise ValueError("two_theta must be a 1D grid with at least two points")
    step = float(np.diff(tt).mean())
    pat = powder_pattern(atoms, (tt[0], tt[-1]), wavelength, step=step, **kwargs)
    return np.interp(tt, pat.two_theta, pat.intensity)


def xrd_along_trajectory(trajectory, two_theta, wavelength: float = 1.5406,
                         method: str = "powder", **kwargs) -> np.ndarray:
    """:func:`xrd_pattern` of every frame, shape (n_frames, len(two_theta))."""
    frames = [trajectory] if isinstance(trajectory, Atoms) else list(trajectory)
    return np.stack([xrd_pattern(a, two_theta, wavelength, method, **kwargs) for a in frames])


# --------------------------------------------------------------------------- metadynamics plot

_ALIASES = {"h": "enthalpy", "enthalpy": "enthalpy", "v": "volume", "vol": "volume",
            "volume": "volume", "step": "metastep", "metastep": "metastep"}


def read_metad_log(path) -> dict:
    """Read a whitespace-separated metadynamics log into a history dict.

    The header is the last comment line before the data, e.g.
    ``# metastep H[eV] V[A^3] cv1 cv2 cv3 cv4 cv5 cv6``; units in [] or () are dropped and
    names lower-cased, ``H`` -> ``enthalpy``, ``V`` -> ``volume``. Returns ``{name: array}``.
    """
    header = None
    with open(path) as fh:
        for line in fh:
            if line.startswith("#"):
                header = line.lstrip("#").split()
            elif line.strip():
                break
    if header is None:
        raise ValueError(f"{path}: no '# metastep H[eV] ...' header line")
    data = np.atleast_2d(np.loadtxt(path, comments="#"))
    if data.size and data.shape[1] != len(header):
        raise ValueError(f"{path}: header has {len(header)} columns, data {data.shape[1]}")
    out = {}
    for k, name in enumerate(header):
        key = name.split("[")[0].split("(")[0].lower()
        out[_ALIASES.get(key, key)] = data[:, k] if data.size else np.zeros(0)
    return out


def _history_dict(history) -> dict:
    if isinstance(history, (str, os.PathLike)):
        history = read_metad_log(history)
    if isinstance(history, Sequence) and history and isinstance(history[0], Mapping):
        # CellMetadynamics.history: one dict per metastep; its fingerprints become columns
        recs = list(history)
        history = {k: [rec[k] for rec in recs] for k in recs[0] if k != "fingerprint"}
        for key in recs[0].get("fingerprint") or {}:
            history[key] = [rec["fingerprint"][key] for rec in recs]
    if not isinstance(history, Mapping):
        raise ValueError("history must be a dict of arrays, a list of per-metastep dicts "
                         "(CellMetadynamics.history) or a path to a log file")
    return {_ALIASES.get(k.lower(), k.lower()): v for k, v in history.items()}


def _history_arrays(history) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    h = _history_dict(history)
    if "enthalpy" not in h:
        raise ValueError(f"history needs 'enthalpy', has {sorted(h)}")
    enth = np.asarray(h["enthalpy"], dtype=np.float64)
    n = enth.shape[0]
    step = np.asarray(h.get("metastep", np.arange(n)), dtype=np.float64)
    vol = np.asarray(h["volume"], dtype=np.float64) if "volume" in h else None
    if "cv" in h:
        cv = np.asarray(h["cv"], dtype=np.float64).reshape(n, -1)
    else:
        cols = [h[f"cv{k}"] for k in range(1, 10) if f"cv{k}" in h] or [
            h[f"s{k}"] for k in range(1, 10) if f"s{k}" in h]  # CellMetadynamics' log
        cv = np.asarray(cols, dtype=np.float64).T.reshape(n, -1) if cols else np.zeros((n, 0))
    return step, enth, vol, cv


def _fractions(history) -> dict:
    """Phase-fraction columns ``f_<phase>`` (PhaseFingerprint) that are ever non-zero."""
    h = _history_dict(history)
    out = {}
    for k, v in h.items():
        if k.startswith("f_"):
            arr = np.asarray(v, dtype=np.float64)
            if np.any(arr > 0):
                out[k[2:].replace("_", " ")] = arr
    return out


def plot_metad(history, path=None, *, cv_labels: Sequence[str] | None = None):
    """Enthalpy, volume, collective variables and phase fractions versus metastep.

    Phase fractions (``f_<phase>`` entries of a :class:`PhaseFingerprint`, in the history's
    fingerprints or the log's columns) get a panel of their own when any is non-zero.

    Parameters
    ----------
    history : dict or path
        ``{"metastep": (n,), "enthalpy": (n,) eV, "volume": (n,) Å^3, "cv": (n, 6)}`` (or
        ``"cv1"`` ... ``"cv6"`` instead of ``"cv"``; ``metastep`` defaults to 0..n-1, volume
        and CVs are optional), ``CellMetadynamics.history``, or a whitespace log with a header line
        ``# metastep H[eV] V[A^3] cv1 ... cv6`` (see :func:`read_metad_log`).
    path : str or path-like, optional
        Save the figure there (format from the suffix, e.g. ``.png``).
    cv_labels : sequence of str, optional
        Legend labels of the CVs (default ``cv1`` ...).

    Returns
    -------
    matplotlib.figure.Figure
        Built without pyplot (no global state).
    """
    try:
        from matplotlib.figure import Figure
    except ImportError as err:  # pragma: no cover
        raise ImportError("plot_metad needs matplotlib: pip install matplotlib") from err
    step, enth, vol, cv = _history_arrays(history)
    fractions = _fractions(history)
    panels = 1 + (vol is not None) + (cv.shape[1] > 0) + bool(fractions)
    fig = Figure(figsize=(6.0, 2.2 * panels), layout="constrained")
    axes = fig.subplots(panels, 1, sharex=True, squeeze=False)[:, 0]
    axes[0].plot(step, enth, "o-", ms=3)
    axes[0].set_ylabel("H (eV)")
    k = 1
    if vol is not None:
        axes[k].plot(step, vol, "o-", ms=3, color="C1")
        axes[k].set_ylabel("V (Å$^3$)")
        k += 1
    if cv.shape[1]:
        labels = cv_labels or [f"cv{m + 1}" for m in range(cv.shape[1])]
        for m in range(cv.shape[1]):
            axes[k].plot(step, cv[:, m], "-", label=labels[m])
        axes[k].set_ylabel("CV")
        axes[k].legend(ncol=min(cv.shape[1], 6), fontsize="small")
        k += 1
    if fractions:
        for name, frac in fractions.items():
            axes[k].plot(step, frac, "-", label=name)
        axes[k].set_ylabel("fraction")
        axes[k].set_ylim(-0.02, 1.02)
        axes[k].legend(ncol=min(len(fractions), 4), fontsize="small")
    axes[-1].set_xlabel("metastep")
    if path is not None:
        fig.savefig(path)
    return fig
