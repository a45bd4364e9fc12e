"""``MLPCalculator``: any ase_mlp model as an ASE calculator, one structure or a batch."""

from __future__ import annotations

import copy
import pathlib
from importlib.metadata import entry_points

import numpy as np
import torch
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from ase_mlp.kernels import check_backend, check_threads, kernel_settings
from ase_mlp.models.base import Model, symbols_to_species
from ase_mlp.models.committee import Committee
from ase_mlp.neighbors import VerletNeighborList, batch_neighbor_list
from ase_mlp.neighbors.device import choose_neighbors, device_batch_neighbors
from ase_mlp.neighbors.graph import Graph, graph_from_neighbors


def _default_device():
    return "cuda" if torch.cuda.is_available() else "cpu"


def model_formats() -> dict:
    """Model file formats registered under the ``ase_mlp.model_formats`` entry point group."""
    return {ep.name: ep for ep in entry_points(group="ase_mlp.model_formats")}


def load_model(*paths) -> Model:
    """Open a model from one file (our format) or a pair of LAMMPS files (either order)."""
    paths = [pathlib.Path(p) for p in paths]
    if not paths:
        raise ValueError("no model file given")
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"model file not found: {p}")
    tried = []
    for name, ep in model_formats().items():
        fmt = ep.load()
        tried.append(name)
        if fmt.can_load(paths):
            return fmt.load(paths)
    raise ValueError(
        f"cannot recognise the model file(s) {[str(p) for p in paths]}; supported: one ase_mlp "
        f"model file, a LAMMPS .snapcoeff/.snapparam pair, an ML-IAP .model/.descriptor pair, or a "
        f"LAMMPS .snap/.mliap wrapper (formats tried: {tried})")


def _check_atoms(atoms, elements):
    pos = atoms.positions
    bad = ~np.isfinite(pos).all(axis=1)
    if bad.any():
        k = int(np.argmax(bad))
        raise ValueError(f"atom {k} has a non-finite position {pos[k].tolist()}")
    species = symbols_to_species(atoms.get_chemical_symbols(), elements)
    cell = np.asarray(atoms.cell.array, dtype=float)
    if not np.isfinite(cell).all():
        raise ValueError(f"the cell has non-finite entries: {cell.tolist()}")
    if np.any(atoms.pbc) and abs(np.linalg.det(cell)) < 1e-12:
        raise ValueError(
            f"periodic cell (pbc={atoms.pbc.tolist()}) has zero volume: {cell.tolist()}")
    return species


class MLPCalculator(Calculator):
    """ASE calculator for ase_mlp models (SNAP, quadratic SNAP, NN-SNAP, ZBL, sums).

    Parameters
    ----------
    model : ase_mlp.models.Model
        The model; it is copied if a different ``device``/``dtype`` is requested.
    device : str or torch.device, optional
        ``"cpu"`` or ``"cuda"``; default: CUDA when available, else CPU.
    dtype : torch.dtype or str, optional
        ``torch.float64`` (default; LAMMPS-exact) or ``torch.float32``, or their names
        ``"float64"`` / ``"float32"``.
    skin : float
        Verlet skin (Å) of the neighbour list kept between single-structure
        calls: it is rebuilt only when an atom moved more than ``skin / 2``.
    neighbors : {"auto", "host", "device"}
        Where :meth:`calculate_batch` builds its lists: on the host
        (:func:`~ase_mlp.neighbors.batch_neighbor_list`, any boundaries) or on the
        model's device (vesin-torch, periodic cells, no host round trip);
        ``"auto"`` picks the device on a GPU when vesin-torch is installed and every
        structure is periodic.
    threads : int, optional
        CPU threads of the compiled kernels for each evaluation (default: one per ~64
        atoms, at most the cores this process may use). The threads exist only during a
        call and never spin, so other processes on the same cores are not slowed down
        by idle workers, and a later ``fork()`` is safe. Process-wide settings (torch's
        own thread count, environment variables) are never changed.
    backend : {"auto", "compiled", "torch"}, optional
        Implementation of the SNAP family: the compiled kernels
        (:mod:`ase_mlp.kernels`; ``"auto"`` falls back to torch with a warning when no
        C++ compiler is available, ``"compiled"`` raises instead) or the torch code.
        Default: that of the enclosing :func:`ase_mlp.kernels.kernel_settings`
        context, ``"auto"`` outside any. ``threads=None`` likewise defers to it.

    Implemented properties: ``energy``, ``free_energy``, ``energies``,
    ``forces``, ``stress``, ``stresses`` (per-atom, eV/Å³, summing to ``stress``).
    With a :class:`~ase_mlp.models.Committee` the results are the committee
    means, plus ``energy_std`` (eV), ``forces_std`` (per atom,
    ``sqrt(mean_m |F_m - <F>|^2)``, eV/Å) and ``stress_std`` (Voigt, eV/Å³).
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress", "stresses"]

    def __init__(self, model: Model, device=None, dtype=None, *, skin: float = 1.0,
                 neighbors: str = "auto", threads: int | None = None, backend: str | None = None,
                 **kwargs):
        super().__init__(**kwargs)
        self.threads = check_threads(threads)
        self.backend = None if backend is None else check_backend(backend)
        if not isinstance(model, Model):
            raise TypeError(f"model must be an ase_mlp Model, got {type(model).__name__}")
        self.device = torch.device(device if device is not None else _default_device())
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(
                f"device={str(device)!r} was requested, but torch {torch.__version__} sees no "
                f"CUDA device (torch.cuda.is_available() is False): use device='cpu', or "
                f"install a CUDA build of torch on a machine with a GPU")
        if isinstance(dtype, str):
            if dtype not in ("float64", "float32"):
                raise ValueError(f"dtype must be 'float64' or 'float32', got {dtype!r}")
            dtype = getattr(torch, dtype)
        self.dtype = dtype if dtype is not None else torch.float64
        choose_neighbors(neighbors, True, self.device)   # validates the choice early
        self.neighbors = neighbors
        if self.dtype not in (torch.float64, torch.float32):
            raise ValueError(f"dtype must be torch.float64 or torch.float32, got {self.dtype}")
        params = list(model.parameters()) + list(model.buffers())
        same = all(p.device == self.device and (not p.is_floating_point() or p.dtype == self.dtype)
                   for p in params)
        self.model = model if same else copy.deepcopy(model).to(device=self.device,
                                                                dtype=self.dtype)
        self.model.eval()
        self.elements = list(self.model.elements)
        self.committee = isinstance(self.model, Committee) or getattr(
            self.model, "has_committee", False)
        if self.committee:
            self.implemented_properties = list(type(self).implemented_properties) + [
                "energy_std", "forces_std", "stress_std"]
        self._pair_cutoffs = np.asarray(self.model.pair_cutoffs(), dtype=float)
        if skin < 0:
            raise ValueError(f"skin must be >= 0, got {skin}")
        self.skin = float(skin)
        # rebuilds itself when species, pbc, the cell or the atom count change
        self._verlet = VerletNeighborList(None, skin=self.skin, pair_cutoffs=self._pair_cutoffs)

    @classmethod
    def from_file(cls, *paths, device=None, dtype=None, **kwargs) -> "MLPCalculator":
        """Open a model file: ours (one path), or LAMMPS SNAP / ML-IAP pairs in either order."""
        return cls(load_model(*paths), device=device, dtype=dtype, **kwargs)

    # ------------------------------------------------------------ single
    def calculate(self, atoms=None, properties=None, system_changes=all_changes):
        if properties is None:
            properties = self.implemented_properties
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        species = _check_atoms(atoms, self.elements)
        self._verlet.update(atoms.positions, atoms.cell.array, atoms.pbc, species)
        i, j, S = self._verlet.get(atoms.positions, atoms.cell.array)
        n = len(atoms)
        graph = graph_from_neighbors(
            atoms.positions, atoms.cell.array[None], species, np.zeros(n, dtype=np.int64),
            i, j, S, dtype=self.dtype, device=self.device, pbc=atoms.pbc[None])
        del i, j, S  # the graph holds its own copies: free these before the model runs
        want_stress = bool({"stress", "stresses", "stress_std"} & set(properties))
        if not want_stress and "forces" in properties and atoms.pbc.all():
            # the virial costs ~5 % on top of the forces, while a later get_stress() at the
            # same positions (NPT MD, cell metadynamics) would cost a whole evaluation
            want_stress = abs(np.linalg.det(atoms.cell.array)) > 1e-12
        self.results = self._evaluate(graph, [atoms], want_stress)[0]

    # ------------------------------------------------------------ batch
    def calculate_batch(self, images, properties=("energy", "forces", "stress")) -> list[dict]:
        """Evaluate many structures (any sizes) in one model call.

        Returns one dict per structure with ASE's result keys (``energy``,
        ``free_energy``, ``energies``, ``forces``, and ``stress``/``stresses``
        when asked; structures whose cell is not 3D (open clusters) get no stress
        keys instead of failing the whole batch). Does not attach results to the
        images.
        """
        images = list(images)
        if not images:
            return []
        unknown = set(properties) - set(self.implemented_properties)
        if unknown:
            raise PropertyNotImplementedError(f"unknown properties {sorted(unknown)}")
        species = [_check_atoms(a, self.elements) for a in images]
        periodic = all(a.pbc.all() for a in images)
        if choose_neighbors(self.neighbors, periodic, self.device) == "device":
            graph = self._device_graph(images, species)
        else:
            nb = batch_neighbor_list(
                [(a.positions, a.cell.array, a.pbc) for a in images], None,
                species=species, pair_cutoffs=self._pair_cutoffs)
            graph = graph_from_neighbors(
                np.concatenate([a.positions for a in images]),
                np.stack([a.cell.array for a in images]),
                np.concatenate(species), nb.atom_system, nb.i, nb.j, nb.shifts,
                dtype=self.dtype, device=self.device, pbc=np.stack([a.pbc for a in images]))
        want_stress = bool({"stress", "stresses", "stress_std"} & set(properties))
        return self._evaluate(graph, images, want_stress, strict_stress=False)

    def _device_graph(self, images, species) -> Graph:
        """Batched graph with its neighbour list built on the device (one copy of the
        positions and cells to the device, none back)."""
        sizes = [len(a) for a in images]
        pos = torch.as_tensor(np.concatenate([a.positions for a in images]),
                              dtype=self.dtype, device=self.device)
        cells = torch.as_tensor(np.stack([a.cell.array for a in images]), dtype=self.dtype,
                                device=self.device)
        edge_index, shifts = device_batch_neighbors(pos, cells, sizes,
                                                    float(self._pair_cutoffs.max()))
        system = np.repeat(np.arange(len(images)), sizes)
        return Graph(positions=pos, cells=cells,
                     species=torch.as_tensor(np.concatenate(species), device=self.device),
                     system=torch.as_tensor(system, device=self.device),
                     edge_index=edge_index, shifts=shifts, n_systems=len(images),
                     pbc=torch.ones((len(images), 3), dtype=torch.bool, device=self.device))

    # ------------------------------------------------------------ shared
    def _evaluate(self, graph, images, want_stress, strict_stress=True):
        with torch.no_grad(), kernel_settings(backend=self.backend, threads=self.threads):
            out = self.model(graph, forces=True, stress=want_stress)
        energy = out["energy"].detach().cpu().numpy().astype(float)
        energies = out["energies"].detach().cpu().numpy().astype(float)
        forces = out["forces"].detach().cpu().numpy().astype(float)
        if want_stress:
            virial = out["virial"].detach().cpu().numpy().astype(float)
            atom_virial = out["atom_virial"].detach().cpu().numpy().astype(float)
        if self.committee:
            e_std = out["energy_std"].detach().cpu().numpy().astype(float)
            f_std = out["forces_std"].detach().cpu().numpy().astype(float)
            v_std = out["virial_std"].detach().cpu().numpy().astype(float) if want_stress \
                else None
        results = []
        start = 0
        for k, atoms in enumerate(images):
            n = len(atoms)
            r = {
                "energy": float(energy[k]),
                "free_energy": float(energy[k]),
                "energies": energies[start:start + n].copy(),
                "forces": forces[start:start + n].copy(),
            }
            if self.committee:
                r["energy_std"] = float(e_std[k])
                r["forces_std"] = f_std[start:start + n].copy()
            if want_stress:
                if atoms.cell.rank == 3:
                    vol = atoms.get_volume()
                    r["stress"] = full_3x3_to_voigt_6_stress(-virial[k] / vol)
                    r["stresses"] = full_3x3_to_voigt_6_stress(-atom_virial[start:start + n] / vol)
                    if self.committee:
                        v = v_std[k] / vol
                        r["stress_std"] = np.array([v[0, 0], v[1, 1], v[2, 2], v[1, 2], v[0, 2],
                                                    v[0, 1]])
                elif strict_stress:
                    raise PropertyNotImplementedError(
                        "stress needs a cell with three non-zero lattice vectors "
                        f"(structure {k} has cell rank {atoms.cell.rank})")
            results.append(r)
            start += n
        return results
