"""Descriptors, results and plots for :mod:`ase_mlp.analysis.environments` (private).

* ``"bispectrum"``: SNAP bispectrum components of :class:`ase_mlp.descriptors.Bispectrum`
  (compiled kernels when available), optionally species-resolved (``chemflag``).
* ``"soap"``: the SOAP power spectrum of featomic (``pip install featomic``), when installed.

Both can be neighbour-averaged (Lechner & Dellago, J. Chem. Phys. 129, 114707 (2008)):
``q_i <- (q_i + sum_j f_c(r_ij) q_j) / (1 + sum_j f_c(r_ij))`` with the cosine cutoff
``f_c(r) = (1 + cos(pi r / r_c)) / 2`` over the descriptor's pair cutoffs, repeated
``average`` times. Averaging shrinks thermal noise of a crystal much more than the
difference between phases, so rattled crystal and liquid separate cleanly.

Also here: :class:`EnvironmentResult`, reservoir sampling and :func:`plot_environments`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse
import torch
from ase import Atoms
from ase.data import atomic_numbers, covalent_radii

from ase_mlp.neighbors import neighbor_list


__all__ = ["EnvironmentDescriptor", "EnvironmentResult", "plot_environments"]

#: Label of the noise points of HDBSCAN/DBSCAN.
NOISE = -1

_SOAP_INSTALL = "descriptor='soap' needs featomic: pip install featomic"


class EnvironmentDescriptor:
    """Per-atom descriptor of local environments, ``(n_atoms, n_features)`` per frame.

    Parameters
    ----------
    elements : sequence of str
        Chemical symbols that may appear; their order fixes the feature layout.
    kind : {"bispectrum", "soap"}
        SNAP bispectrum (built in) or featomic's SOAP power spectrum (optional).
    twojmax : int
        Band limit of the bispectrum (6 gives 30 components per block, 8 gives 55).
    cutoff_factor : float
        Pair cutoff ``r_c = cutoff_factor * (R_a + R_b)`` with ASE's covalent radii ``R``
        (Å); the default 1.8 puts Si-Si at 4.0 Å, past the second diamond shell (3.84 Å).
    cutoff : float, optional
        One cutoff (Å) for every pair instead of ``cutoff_factor``.
    species_blocks : bool
        Species-resolved blocks (the bispectrum's ``chemflag``: ``n_elements**3`` blocks;
        SOAP: one block per neighbour-species pair). Without them every neighbour has
        weight 1 whatever its species.
    average : int
        Number of neighbour-averaging passes (0: the bare descriptor).
    soap_max_radial, soap_max_angular, soap_gaussian_width : int, int, float
        Basis of the SOAP power spectrum (``kind="soap"`` only; width in Å). SOAP uses one
        radius, the largest pair cutoff, with a 0.5 Å shifted-cosine smoothing; without
        ``species_blocks`` the neighbour-species pair channels are summed.
    """

    def __init__(self, elements, *, kind: str = "bispectrum", twojmax: int = 6,
                 cutoff_factor: float = 1.8, cutoff: float | None = None,
                 species_blocks: bool = False, average: int = 1,
                 soap_max_radial: int = 6, soap_max_angular: int = 4,
                 soap_gaussian_width: float = 0.4):
        elements = [str(e) for e in elements]
        if not elements:
            raise ValueError("elements is empty: give the chemical symbols of the trajectory")
        bad = [e for e in elements if e not in atomic_numbers]
        if bad:
            raise ValueError(f"elements contains unknown chemical symbol(s) {bad}")
        if len(set(elements)) != len(elements):
            raise ValueError(f"elements has duplicates: {elements}")
        if kind not in ("bispectrum", "soap"):
            raise ValueError(f"kind must be 'bispectrum' or 'soap', got {kind!r}")
        if int(average) != average or average < 0:
            raise ValueError(f"average must be a non-negative integer, got {average!r}")
        if not (np.isfinite(cutoff_factor) and cutoff_factor > 0):
            raise ValueError(f"cutoff_factor must be positive, got {cutoff_factor}")
        if cutoff is not None and not (np.isfinite(cutoff) and cutoff > 0):
            raise ValueError(f"cutoff must be a positive length in Å, got {cutoff}")
        self.elements = elements
        self.kind = kind
        self.twojmax = int(twojmax)
        self.cutoff_factor = float(cutoff_factor)
        self.species_blocks = bool(species_blocks)
        self.average = int(average)
        radii = np.array([covalent_radii[atomic_numbers[e]] for e in elements])
        if cutoff is not None:
            radii = np.full(len(elements), 0.5 * float(cutoff))
            self.cutoff_factor = 1.0
        self.radii = radii
        self.pair_cutoffs = self.cutoff_factor * (radii[:, None] + radii[None, :])
        self.soap = dict(max_radial=int(soap_max_radial), max_angular=int(soap_max_angular),
                         width=float(soap_gaussian_width))
        self._bispectrum = None
        self._soap = None
        if kind == "bispectrum":
            from ase_mlp.descriptors import Bispectrum

            self._bispectrum = Bispectrum(
                elements, self.twojmax, self.cutoff_factor,
                {e: float(r) for e, r in zip(elements, radii, strict=True)},
                chemflag=self.species_blocks)
        else:
            try:
                import featomic  # noqa: F401
            except ImportError as exc:
                raise ImportError(_SOAP_INSTALL) from exc

    @property
    def cutoff(self) -> float:
        """Largest pair cutoff (Å)."""
        return float(self.pair_cutoffs.max())

    @property
    def n_features(self) -> int | None:
        """Descriptor components per atom (None for SOAP before the first frame)."""
        if self._bispectrum is not None:
            return int(self._bispectrum.n_descriptors)
        return None

    def config(self) -> dict:
        return dict(elements=list(self.elements), kind=self.kind, twojmax=self.twojmax,
                    cutoff_factor=self.cutoff_factor, species_blocks=self.species_blocks,
                    average=self.average, pair_cutoffs=self.pair_cutoffs.tolist(),
                    soap=dict(self.soap))

    def species(self, atoms: Atoms, name: str = "atoms") -> np.ndarray:
        """Index of every atom's element in :attr:`elements` (ValueError names the atom)."""
        index = {e: k for k, e in enumerate(self.elements)}
        symbols = atoms.get_chemical_symbols()
        out = np.empty(len(symbols), dtype=np.int64)
        for a, s in enumerate(symbols):
            k = index.get(s)
            if k is None:
                raise ValueError(f"{name}: atom {a} is {s}, which is not in elements "
                                 f"{self.elements}")
            out[a] = k
        return out

    def neighbors(self, atoms: Atoms, species: np.ndarray):
        """Full neighbour list within the pair cutoffs: ``(i, j, shifts, vectors)``."""
        i, j, s = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, None,
                                species=species, pair_cutoffs=self.pair_cutoffs)
        d = atoms.positions[j] - atoms.positions[i] + s @ atoms.cell.array
        return i, j, s, d

    def compute(self, atoms: Atoms, name: str = "atoms"):
        """Descriptors ``(n_atoms, n_features)`` and the neighbour list used.

        Returns ``(X, species, (i, j, r, d))``: neighbour pairs, distances (Å) and
        vectors ``d = x_j - x_i`` (periodic images unfolded).
        """
        species = self.species(atoms, name)
        if not np.all(np.isfinite(atoms.positions)):
            bad = int(np.nonzero(~np.isfinite(atoms.positions).all(1))[0][0])
            raise ValueError(f"{name}: atom {bad} has a non-finite position")
        i, j, s, d = self.neighbors(atoms, species)
        r = np.sqrt((d * d).sum(1))
        if self.kind == "bispectrum":
            X = self._bispectrum_of(atoms, species, i, j, s)
        else:
            X = self._soap_of(atoms)
        if self.average:
            rc = self.pair_cutoffs[species[i], species[j]]
            w = 0.5 * (1.0 + np.cos(np.pi * np.minimum(r / rc, 1.0)))
            n = len(atoms)
            W = scipy.sparse.csr_matrix((w, (i, j)), shape=(n, n))  # duplicates are summed
            norm = 1.0 + np.bincount(i, weights=w, minlength=n)
            for _ in range(self.average):
                X = (X + W @ X) / norm[:, None]
        return X, species, (i, j, r, d)

    def _bispectrum_of(self, atoms, species, i, j, s):
        from ase_mlp.neighbors.graph import graph_from_neighbors

        n = len(atoms)
        graph = graph_from_neighbors(atoms.positions, atoms.cell.array[None], species,
                                     np.zeros(n, dtype=np.int64), i, j, s,
                                     dtype=torch.float64, device="cpu", pbc=atoms.pbc[None])
        with torch.no_grad():
            B = self._bispectrum(graph)
        return B.numpy().astype(np.float64, copy=False)

    def _soap_of(self, atoms):
        import featomic

        if self._soap is None:
            self._soap = featomic.SoapPowerSpectrum(
                cutoff={"radius": self.cutoff,
                        "smoothing": {"type": "ShiftedCosine", "width": 0.5}},
                density={"type": "Gaussian", "width": self.soap["width"]},
                basis={"type": "TensorProduct", "max_angular": self.soap["max_angular"],
                       "radial": {"type": "Gto", "max_radial": self.soap["max_radial"]}})
        import metatensor  # installed with featomic

        desc = self._soap.compute(atoms)
        z = [int(atomic_numbers[e]) for e in self.elements]

        keys = metatensor.Labels(["neighbor_1_type", "neighbor_2_type"],
                                 np.array([[a, b] for a in z for b in z if a <= b],
                                          dtype=np.int32))
        desc = desc.keys_to_properties(keys)
        desc = desc.keys_to_samples("center_type")
        block = desc.block()
        atom = block.samples.column("atom")
        X = np.zeros((len(atoms), block.values.shape[1]))
        X[np.asarray(atom)] = block.values
        if not self.species_blocks:  # sum the neighbour-species pairs
            n = len(keys)
            X = X.reshape(len(atoms), n, -1).sum(1)
        return X


# ----------------------------------------------------------------------- results
@dataclass
class EnvironmentResult:
    """Labels and summaries of :func:`classify_environments`.

    Attributes
    ----------
    labels : numpy.ndarray
        Cluster of every atom of every frame, flattened (int16/int32; ``-1``: noise);
        frame ``k`` is ``labels[offsets[k]:offsets[k + 1]]`` (:meth:`frame_labels`).
    offsets : numpy.ndarray
        ``(n_frames + 1,)`` start of each frame in ``labels``.
    n_clusters : int
        Number of clusters (noise excluded).
    times : numpy.ndarray
        ``(n_frames,)`` time of every frame (the frame index unless given).
    fractions : numpy.ndarray
        ``(n_frames, n_clusters)`` fraction of the atoms of each frame in each cluster.
    composition : numpy.ndarray
        ``(n_clusters, n_elements)`` atom-frame counts per element.
    elements : list of str
        Element order of ``composition``.
    mean_descriptor : numpy.ndarray
        ``(n_clusters, n_features)`` average (neighbour-averaged) descriptor.
    mean_coordination : numpy.ndarray
        ``(n_clusters,)`` average number of neighbours within the first-shell cutoffs
        (1.25 x the sum of covalent radii).
    profile_edges, profile : numpy.ndarray or None
        Bin edges (Å) along ``axis`` and ``(n_bins, n_clusters)`` fractions per bin,
        summed over frames (NaN in empty bins); None without ``axis``.
    projection, projection_labels : numpy.ndarray
        A sample of atom-frames: first two principal components and their labels.
    members : dict
        ``cluster -> list of Atoms``: a few environments of each cluster (centre atom
        first, neighbours within the descriptor cutoff, ``info`` naming frame and atom).
    """

    labels: np.ndarray
    offsets: np.ndarray
    n_clusters: int
    times: np.ndarray
    fractions: np.ndarray
    composition: np.ndarray
    elements: list
    mean_descriptor: np.ndarray
    mean_coordination: np.ndarray
    profile_edges: np.ndarray | None
    profile: np.ndarray | None
    projection: np.ndarray
    projection_labels: np.ndarray
    members: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)

    @property
    def n_frames(self) -> int:
        return len(self.offsets) - 1

    def frame_labels(self, k: int) -> np.ndarray:
        """Labels of the atoms of frame ``k``."""
        if not -self.n_frames <= k < self.n_frames:
            raise IndexError(f"frame {k} out of range for {self.n_frames} frames")
        k %= self.n_frames
        return self.labels[self.offsets[k]:self.offsets[k + 1]]

    def labels_2d(self) -> np.ndarray:
        """``(n_frames, n_atoms)`` labels (the atom count must not change)."""
        n = np.diff(self.offsets)
        if np.any(n != n[0]):
            raise ValueError("the number of atoms changes between frames: use frame_labels(k)")
        return self.labels.reshape(self.n_frames, int(n[0]))

    def summary(self) -> dict:
        """JSON-ready summary (no per-atom data)."""
        total = self.composition.sum(1)
        return dict(
            n_frames=self.n_frames, n_atom_frames=int(len(self.labels)),
            n_clusters=self.n_clusters, elements=list(self.elements),
            noise_fraction=float(np.mean(self.labels == NOISE)) if len(self.labels) else 0.0,
            clusters=[dict(label=c, atom_frames=int(total[c]),
                           fraction=float(total[c] / max(len(self.labels), 1)),
                           composition={e: int(n) for e, n in
                                        zip(self.elements, self.composition[c], strict=True)},
                           mean_coordination=float(self.mean_coordination[c]))
                      for c in range(self.n_clusters)],
            settings=self.settings)

    def write_members(self, directory, prefix: str = "cluster") -> list[str]:
        """Write ``{prefix}_{c}.extxyz`` per cluster with its sampled member environments."""
        import ase.io

        os.makedirs(directory, exist_ok=True)
        paths = []
        for c in range(self.n_clusters):
            path = os.path.join(directory, f"{prefix}_{c}.extxyz")
            members = self.members.get(c, [])
            if members:
                ase.io.write(path, members, format="extxyz")
                paths.append(path)
        return paths


def _environment(atoms, a, i, j, vec, frame, label):
    """Centre atom ``a`` and its neighbours (periodic images unfolded) as an Atoms."""
    sel = np.nonzero(i == a)[0]
    pos = np.vstack([np.zeros(3), vec[sel]])
    env = Atoms(numbers=np.concatenate([[atoms.numbers[a]], atoms.numbers[j[sel]]]),
                positions=pos)
    env.info.update(frame=int(frame), atom=int(a), cluster=int(label))
    return env


def _last_per_slot(pairs):
    """``(slots, items)`` of reservoir pairs, keeping the last item written to each slot."""
    if len(pairs) == 0:
        return pairs[:, 0], pairs[:, 1]
    rev = pairs[::-1]
    _, first = np.unique(rev[:, 0], return_index=True)
    return rev[first, 0], rev[first, 1]


def _chain(first, rest):
    yield from first
    yield from rest


def _reservoir(rng, seen: int, m: int, size: int) -> np.ndarray:
    """Reservoir sampling (algorithm R) of ``m`` new items after ``seen``: (slot, item) pairs.

    Item ``t`` (global index ``seen + t``) enters slot ``t`` while the reservoir fills, then
    replaces a uniformly drawn slot with probability ``size / (seen + t + 1)``.
    """
    if size <= 0 or m == 0:
        return np.zeros((0, 2), dtype=np.int64)
    g = seen + np.arange(m)
    fill = g < size
    u = rng.integers(0, np.maximum(g + 1, 1))
    keep = fill | (u < size)
    slot = np.where(fill, g, u)
    out = np.column_stack([slot[keep], np.nonzero(keep)[0]])
    return out.astype(np.int64)


# --------------------------------------------------------------------------- plots
def plot_environments(result: EnvironmentResult, directory=None, *, time_label="frame"):
    """Figures: fractions vs time, vs position (when binned) and the 2D projection.

    Returns a dict ``name -> matplotlib.figure.Figure``; with ``directory`` they are also
    saved there as ``{name}.png``. matplotlib is imported here (``pip install
    'ase-mlp[plot]'``).
    """
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError("plotting needs matplotlib: pip install 'ase-mlp[plot]'") from exc

    def _new_figure():
        fig = Figure(figsize=(5.0, 3.6), layout="constrained")
        return fig, fig.add_subplot()

    figs = {}
    fig, ax = _new_figure()
    for c in range(result.n_clusters):
        ax.plot(result.times, result.fractions[:, c], label=f"cluster {c}")
    ax.set_xlabel(time_label)
    ax.set_ylabel("fraction of atoms")
    ax.legend(fontsize="small")
    figs["fractions_time"] = fig
    if result.profile is not None:
        fig, ax = _new_figure()
        mid = 0.5 * (result.profile_edges[1:] + result.profile_edges[:-1])
        for c in range(result.n_clusters):
            ax.plot(mid, result.profile[:, c], label=f"cluster {c}")
        ax.set_xlabel("position along the cell vector (Å)")
        ax.set_ylabel("fraction of atoms")
        ax.legend(fontsize="small")
        figs["fractions_position"] = fig
    fig, ax = _new_figure()
    for c in range(-1, result.n_clusters):
        m = result.projection_labels == c
        if m.any():
            ax.scatter(result.projection[m, 0], result.projection[m, 1], s=3,
                       color="0.6" if c == NOISE else None,
                       label="noise" if c == NOISE else f"cluster {c}")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.legend(fontsize="small", markerscale=3)
    figs["projection"] = fig
    if directory is not None:
        os.makedirs(directory, exist_ok=True)
        for name, f in figs.items():
            f.savefig(os.path.join(directory, f"{name}.png"), dpi=150)
    return figs
