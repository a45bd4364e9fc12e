"""Descriptors and their gradients of labelled frames, computed once and cached.

Training fits models of the form ``E_i = f(B_i)`` on fixed descriptors
``B_i`` and fixed descriptor gradients ``dB_i/dr_ij`` (one
:meth:`~ase_mlp.descriptors.Bispectrum.jacobian` call per frame batch). Every
fitter (least squares, NN, committees) then works from :class:`FrameFeatures`
only, so descriptors are computed once however many fits follow. With
``cache_dir`` they also persist on disk, keyed by the descriptor settings and
the frame's geometry, so an interrupted or repeated fit skips the work done.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
from dataclasses import dataclass

import numpy as np
import torch

from ase_mlp.models.base import symbols_to_species
from ase_mlp.neighbors import batch_neighbor_list
from ase_mlp.neighbors.graph import graph_from_neighbors


@dataclass
class FrameFeatures:
    """One labelled frame reduced to what a fitter needs (CPU tensors).

    ``B`` (N, K) descriptors; ``ei``/``ej`` (E,) centre/neighbour of every edge
    within the cutoff (local indices); ``rij`` (E, 3) edge vectors; ``J``
    (E, K, 3) ``dB_ei/dr_ij``. Labels are the targets *minus* the baseline
    (fixed model) predictions: ``energy`` (eV), ``forces`` (N, 3) eV/Å,
    ``stress`` (6,) ASE Voigt in eV/Å³; None when absent.
    """

    species: torch.Tensor
    B: torch.Tensor
    ei: torch.Tensor
    ej: torch.Tensor
    rij: torch.Tensor
    J: torch.Tensor
    volume: float
    energy: float | None = None
    forces: torch.Tensor | None = None
    stress: torch.Tensor | None = None
    weight: float = 1.0
    group: str = "default"
    #: multipliers of the energy, force and stress rows (group weights)
    kind_weights: tuple = (1.0, 1.0, 1.0)

    @property
    def n_atoms(self) -> int:
        return int(self.species.shape[0])


def _frame_key(descriptor_config: dict, atoms) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(descriptor_config, sort_keys=True).encode())
    h.update(np.ascontiguousarray(atoms.numbers, dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(atoms.positions, dtype=np.float64).tobytes())
    h.update(np.ascontiguousarray(atoms.cell.array, dtype=np.float64).tobytes())
    h.update(np.ascontiguousarray(atoms.pbc, dtype=bool).tobytes())
    return h.hexdigest()[:32]


class FeatureCache:
    """In-memory (and optionally on-disk) cache of descriptor geometry terms.

    Stores ``B, ei, ej, rij, J`` per frame; labels are not cached (they are
    cheap and may be re-weighted between fits).
    """

    def __init__(self, cache_dir=None):
        self.memory: dict[str, dict] = {}
        self.dir = None if cache_dir is None else pathlib.Path(cache_dir)
        if self.dir is not None:
            self.dir.mkdir(parents=True, exist_ok=True)

    def get(self, key):
        if key in self.memory:
            return self.memory[key]
        if self.dir is not None:
            path = self.dir / f"{key}.pt"
            if path.exists():
                try:
                    item = torch.load(path, map_location="cpu", weights_only=True)
                except Exception:  # noqa: BLE001 - a truncated file is recomputed
                    return None
                self.memory[key] = item
                return item
        return None

    def put(self, key, item):
        self.memory[key] = item
        if self.dir is not None:
            tmp = self.dir / f"{key}.pt.tmp"
            torch.save(item, tmp)
            tmp.replace(self.dir / f"{key}.pt")  # atomic: never a half-written entry


def _baseline_results(baseline, frames, dtype):
    from ase_mlp.calculators.mlp import MLPCalculator

    calc = MLPCalculator(baseline, device="cpu", dtype=dtype)
    out = []
    for k in range(0, len(frames), 64):
        chunk = frames[k:k + 64]
        out.extend(calc.calculate_batch(chunk, ("energy", "forces", "stress")))
    return out


def compute_features(descriptor, frames, *, elements=None, baseline=None,
                     reference_energies=None, cache=None, dtype=torch.float64,
                     batch_atoms: int = 2000, progress: bool = False,
                     labels=None, store_dtype=None) -> list[FrameFeatures]:
    """Descriptors, descriptor gradients and baseline-subtracted labels of ``frames``.

    Parameters
    ----------
    descriptor : Bispectrum
    frames : list of ase.Atoms
        Labelled frames (see :mod:`ase_mlp.training.data`).
    elements : list of str, optional
        Element order of the model (default: the descriptor's).
    baseline : Model, optional
        A fixed model (e.g. ZBL) whose predictions are subtracted from the labels.
    reference_energies : dict, optional
        Isolated-atom energies per element, subtracted from the energy labels.
    cache : FeatureCache, optional
    labels : LabelSpec, optional
        How to read labels from plain Atoms (default: calculator results, then info/arrays).
    store_dtype : torch.dtype, optional
        Precision in which descriptors and their gradients are kept (computed in
        ``dtype``); ``torch.float32`` halves the memory of float32 NN training.
    """
    from ase_mlp.training.data import labels_of

    elements = list(descriptor.elements if elements is None else elements)
    cfg = descriptor.config()
    cache = FeatureCache() if cache is None else cache
    frames = list(frames)
    base = _baseline_results(baseline, frames, dtype) if baseline is not None else None
    eref = np.zeros(len(elements))
    if reference_energies:
        unknown = set(reference_energies) - set(elements)
        if unknown:
            raise ValueError(f"reference_energies name elements {sorted(unknown)} that the "
                             f"model does not cover ({elements})")
        eref = np.array([float(reference_energies.get(e, 0.0)) for e in elements])

    store_dtype = dtype if store_dtype is None else store_dtype
    keys = [_frame_key(cfg, a) + ("" if store_dtype == torch.float64 else f"-{store_dtype}")
            for a in frames]
    todo = [k for k, key in enumerate(keys) if cache.get(key) is None]
    bar = None
    if progress and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc="descriptors", unit="frame")
    # batch frames into one graph of up to ~batch_atoms atoms
    start = 0
    while start < len(todo):
        stop, n = start, 0
        while stop < len(todo) and (n == 0 or n + len(frames[todo[stop]]) <= batch_atoms):
            n += len(frames[todo[stop]])
            stop += 1
        chunk = [frames[k] for k in todo[start:stop]]
        for k, item in zip(todo[start:stop], _geometry(descriptor, chunk, elements, dtype),
                           strict=True):
            for name in ("B", "rij", "J"):
                item[name] = item[name].to(store_dtype)
            cache.put(keys[k], item)
        if bar is not None:
            bar.update(stop - start)
        start = stop
    if bar is not None:
        bar.close()

    out = []
    for k, atoms in enumerate(frames):
        geo = cache.get(keys[k])
        lab = labels_of(atoms, labels, index=k)
        species = geo["species"]
        energy = lab.energy
        forces = None if lab.forces is None else torch.as_tensor(lab.forces, dtype=dtype)
        stress = None if lab.stress is None else torch.as_tensor(lab.stress, dtype=dtype)
        if energy is not None:
            energy = float(energy) - float(eref[species.numpy()].sum())
        if base is not None:
            b = base[k]
            if energy is not None:
                energy -= b["energy"]
            if forces is not None:
                forces = forces - torch.as_tensor(b["forces"], dtype=dtype)
            if stress is not None and "stress" in b:
                stress = stress - torch.as_tensor(b["stress"], dtype=dtype)
        vol = float(abs(np.linalg.det(atoms.cell.array))) if atoms.cell.rank == 3 else 0.0
        out.append(FrameFeatures(
            species=species, B=geo["B"], ei=geo["ei"], ej=geo["ej"],
            rij=geo["rij"], J=geo["J"], volume=vol, energy=energy,
            forces=forces, stress=stress if vol > 0 else None, weight=float(lab.weight),
            group=str(lab.group)))
    return out


def _geometry(descriptor, frames, elements, dtype):
    species = [symbols_to_species(a.get_chemical_symbols(), elements) for a in frames]
    nb = batch_neighbor_list([(a.positions, a.cell.array, a.pbc) for a in frames], None,
                             species=species, pair_cutoffs=descriptor.pair_cutoffs())
    graph = graph_from_neighbors(
        np.concatenate([a.positions for a in frames]), np.stack([a.cell.array for a in frames]),
        np.concatenate(species), nb.atom_system, nb.i, nb.j, nb.shifts, dtype=dtype,
        device="cpu")
    with torch.no_grad():
        vectors = graph.edge_vectors()
        B, sel, J = descriptor.jacobian(graph, vectors)
    ei, ej = graph.edge_index[:, sel]
    rij = vectors[sel]
    edge_sys = graph.system[ei]
    offsets = np.concatenate([[0], np.cumsum([len(a) for a in frames])])
    order = torch.argsort(edge_sys, stable=True)
    counts = torch.bincount(edge_sys, minlength=len(frames)).tolist()
    pos = 0
    for k in range(len(frames)):
        idx = order[pos:pos + counts[k]]
        pos += counts[k]
        a, b = int(offsets[k]), int(offsets[k + 1])
        if len(frames) == 1:  # no copies of the (largest) per-edge arrays
            yield {"species": torch.as_tensor(species[k]), "B": B, "ei": ei, "ej": ej,
                   "rij": rij, "J": J}
            continue
        # (advanced indexing copies: no clone needed)
        yield {"species": torch.as_tensor(species[k]), "B": B[a:b].clone(),
               "ei": ei[idx] - a, "ej": ej[idx] - a, "rij": rij[idx], "J": J[idx]}


# ----------------------------------------------------------------- batching
@dataclass
class Batch:
    """Several :class:`FrameFeatures` concatenated (global atom indices)."""

    species: torch.Tensor
    B: torch.Tensor
    ei: torch.Tensor
    ej: torch.Tensor
    rij: torch.Tensor
    J: torch.Tensor
    atom_frame: torch.Tensor
    n_atoms: torch.Tensor  # per frame
    volume: torch.Tensor
    energy: torch.Tensor  # NaN where absent
    has_energy: torch.Tensor
    forces: torch.Tensor  # NaN rows where absent
    has_forces: torch.Tensor  # per atom
    stress: torch.Tensor
    has_stress: torch.Tensor
    weight: torch.Tensor  # per frame
    kind_weights: torch.Tensor  # per frame: energy, force, stress multipliers
    n_frames: int

    def to(self, dtype=None, device=None) -> "Batch":
        kw = {}
        for name in self.__dataclass_fields__:
            v = getattr(self, name)
            if isinstance(v, torch.Tensor):
                if v.is_floating_point():
                    v = v.to(dtype=dtype or v.dtype, device=device)
                else:
                    v = v.to(device=device)
            kw[name] = v
        return Batch(**kw)


def collate(features: list[FrameFeatures]) -> Batch:
    if not features:
        raise ValueError("cannot collate zero frames")
    dtype = features[0].B.dtype
    offs = np.concatenate([[0], np.cumsum([f.n_atoms for f in features])])
    nan3 = float("nan")
    forces, has_f, stress, energy = [], [], [], []
    for f in features:
        if f.forces is None:
            forces.append(torch.full((f.n_atoms, 3), nan3, dtype=dtype))
            has_f.append(torch.zeros(f.n_atoms, dtype=torch.bool))
        else:
            forces.append(f.forces.to(dtype))
            has_f.append(torch.ones(f.n_atoms, dtype=torch.bool))
        stress.append(torch.full((6,), nan3, dtype=dtype) if f.stress is None
                      else f.stress.to(dtype))
        energy.append(nan3 if f.energy is None else f.energy)
    return Batch(
        species=torch.cat([f.species for f in features]),
        B=torch.cat([f.B for f in features]),
        ei=torch.cat([f.ei + int(o) for f, o in zip(features, offs, strict=False)]),
        ej=torch.cat([f.ej + int(o) for f, o in zip(features, offs, strict=False)]),
        rij=torch.cat([f.rij for f in features]),
        J=torch.cat([f.J for f in features]),
        atom_frame=torch.repeat_interleave(torch.arange(len(features)),
                                           torch.tensor([f.n_atoms for f in features])),
        n_atoms=torch.tensor([f.n_atoms for f in features], dtype=dtype),
        volume=torch.tensor([f.volume for f in features], dtype=dtype),
        energy=torch.tensor(energy, dtype=dtype),
        has_energy=torch.tensor([f.energy is not None for f in features]),
        forces=torch.cat(forces),
        has_forces=torch.cat(has_f),
        stress=torch.stack(stress),
        has_stress=torch.tensor([f.stress is not None for f in features]),
        weight=torch.tensor([f.weight for f in features], dtype=dtype),
        kind_weights=torch.tensor([list(f.kind_weights) for f in features], dtype=dtype),
        n_frames=len(features),
    )


def predict(batch: Batch, atom_energy, create_graph: bool = False):
    """Energies, forces and stress of a batch for ``E_i = atom_energy(B_i, species)``.

    ``atom_energy`` must be differentiable in ``B`` (autograd); with
    ``create_graph`` the forces stay differentiable in the model parameters.
    Returns ``(energy (F,), forces (N, 3), stress (F, 6) ASE Voigt eV/Å³)``.
    """
    B = batch.B.detach().requires_grad_(True)
    with torch.enable_grad():
        e = atom_energy(B, batch.species)
        (dEdB,) = torch.autograd.grad(e.sum(), B, create_graph=create_graph)
    energy = e.new_zeros(batch.n_frames).index_add(0, batch.atom_frame, e)
    g = torch.einsum("ek,ekd->ed", dEdB.index_select(0, batch.ei), batch.J)
    forces = e.new_zeros((batch.B.shape[0], 3)).index_add(0, batch.ei, g).index_add(
        0, batch.ej, -g)
    # ASE stress = -W/V with W = -sum r (x) g
    rg = batch.rij.unsqueeze(2) * g.unsqueeze(1)
    rg = 0.5 * (rg + rg.transpose(1, 2))
    frame_of_edge = batch.atom_frame.index_select(0, batch.ei)
    s = e.new_zeros((batch.n_frames, 3, 3)).index_add(0, frame_of_edge, rg)
    vol = torch.where(batch.volume > 0, batch.volume, torch.ones_like(batch.volume))
    s = s / vol.view(-1, 1, 1)
    voigt = torch.stack([s[:, 0, 0], s[:, 1, 1], s[:, 2, 2], s[:, 1, 2], s[:, 0, 2], s[:, 0, 1]],
                        dim=1)
    return energy, forces, voigt

