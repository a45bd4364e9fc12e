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
from ase_mlp.models.base import Model, check_finite_parameters, symbols_to_species
from ase_mlp.models.committee import Committee
from ase_mlp.neighbors import VerletNeighborList, batch_neighbor_list, check_cell
from ase_mlp.neighbors.device import choose_neighbors, device_batch_neighbors
from ase_mlp.neighbors.graph import Graph, graph_from_neighbors, short_edges


#: default of ``MLPCalculator(max_batch_atoms=...)``: atoms per model call of
#: ``calculate_batch`` (~1.4 GB peak for the water DeePot-SE of benchmarks/bench_deepmd.py
#: on the CPU, against 2.2 GB for its 4096-atom batch in one call)
MAX_BATCH_ATOMS = 2048


def _check_max_batch_atoms(value) -> int | None:
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) \
            or value < 1:
        raise ValueError(f"max_batch_atoms must be a positive integer or None, got {value!r}")
    return int(value)


def _chunks(indices, sizes, limit) -> list[list[int]]:
    """Consecutive groups of ``indices`` holding at most ``limit`` atoms in all
    (``sizes[k]`` atoms each); a structure larger than ``limit`` forms a group alone."""
    groups, current, count = [], [], 0
    for k in indices:
        if current and limit is not None and count + sizes[k] > limit:
            groups.append(current)
            current, count = [], 0
        current.append(k)
        count += sizes[k]
    if current:
        groups.append(current)
    return groups


def _default_device():
    return "cuda" if torch.cuda.is_available() else "cpu"


def model_formats() -> dict:
    """Model file formats registered under the ``ase_mlp.model_formats`` entry point group."""
    return {ep.name: ep for ep in entry_points(group="ase_mlp.model_formats")}


def load_model(*paths) -> Model:
    """Open a model from one file (our format) or a pair of LAMMPS files (either order).

    The model's ``source_file`` attribute holds the absolute path (a list of two for a
    pair), which :class:`MLPCalculator` records in its ``parameters``.
    """
    paths = [pathlib.Path(p) for p in paths]
    if not paths:
        raise ValueError("no model file given")
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"model file not found: {p}")
    tried, broken, formats = [], [], []
    for name, ep in model_formats().items():
        try:
            formats.append((name, ep.load()))
        except Exception as err:  # a broken third-party plugin must not hide the others
            broken.append(f"{name} ({ep.value}): {type(err).__name__}: {err}")
    # catch-all formats (``fallback = True``: ase_mlp's own, which claims any torch.save
    # archive to report what is wrong with it) are asked after every specific one, so a
    # MACE pickle is not mistaken for a damaged ase_mlp file
    formats.sort(key=lambda item: bool(getattr(item[1], "fallback", False)))
    for name, fmt in formats:
        tried.append(name)
        if fmt.can_load(paths):
            model = fmt.load(paths)
            files = [str(p.resolve()) for p in paths]
            model.source_file = files[0] if len(files) == 1 else files
            return model
    raise ValueError(
        f"cannot recognise the model file(s) {[str(p) for p in paths]}; supported: one ase_mlp "
        f"model file, a LAMMPS .snapcoeff/.snapparam pair, an ML-IAP .model/.descriptor pair, a "
        f"LAMMPS .snap/.mliap wrapper, a DeePMD .dp file, a metatomic .pt, a NequIP/Allegro "
        f".nequip.pth/.pt2, a MACE .model or a GAP .xml (formats tried: "
        f"{tried}" + (f"; formats that failed to import: {broken}" if broken else "") + ")")


def _check_atoms(atoms, elements, radius: float, min_distance: float, accepted=None):
    """Species indices of ``atoms``; ``ValueError`` naming the atom, element or cell
    vector for input no model can evaluate (cheap: O(N), vectorised). ``accepted``
    (a one-entry list) remembers the last cell that passed, so MD at a fixed cell
    skips its checks."""
    pos = atoms.positions
    bad = ~np.isfinite(pos).all(axis=1)
    if bad.any():
        k = int(np.argmax(bad))
        raise ValueError(f"atom {k} has a non-finite position {pos[k].tolist()}")
    species = symbols_to_species(atoms.get_chemical_symbols(), elements)
    cell = np.asarray(atoms.cell.array, dtype=float)
    if not np.isfinite(cell).all():
        raise ValueError(f"the cell has non-finite entries: {cell.tolist()}")
    pbc = np.asarray(atoms.pbc, dtype=bool)
    key = (cell.tobytes(), pbc.tobytes())
    if pbc.any() and (accepted is None or accepted[0] != key):
        # only the periodic vectors matter: open directions may have zero rows
        # (ase.build.nanotube, slabs with c = 0, molecules)
        lengths = np.linalg.norm(cell, axis=1)
        short = np.flatnonzero(pbc & (lengths > 0.0) & (lengths < min_distance))
        if len(short):
            d = int(short[0])
            raise ValueError(
                f"periodic cell vector {d} {cell[d].tolist()} is only {lengths[d]:.3g} Å long: "
                f"every atom would overlap its own periodic image (closer than min_distance="
                f"{min_distance:g} Å)")
        check_cell(cell, pbc, radius)
        if accepted is not None:
            accepted[0] = key
    return species


def _describe_short(graph: Graph, edges, lengths, offsets, min_distance) -> dict[int, str]:
    """One message per structure with edges shorter than min_distance: its closest pair."""
    i, j = (graph.edge_index[:, torch.as_tensor(edges, device=graph.edge_index.device)]
            .cpu().numpy())
    shifts = graph.shifts[torch.as_tensor(edges, device=graph.shifts.device)].cpu().numpy()
    system = graph.system.cpu().numpy()[i] if graph.n_systems > 1 else np.zeros(len(i), int)
    out = {}
    for k in np.unique(system):
        sel = np.flatnonzero(system == k)
        e = sel[int(np.argmin(lengths[sel]))]
        a, b = int(i[e] - offsets[k]), int(j[e] - offsets[k])
        if a == b:
            what = (f"atom {a} and its own periodic image (cell shift "
                    f"{shifts[e].astype(int).tolist()}) are")
        else:
            a, b = min(a, b), max(a, b)
            what = f"atoms {a} and {b} are"
        out[int(k)] = (f"{what} {lengths[e]:.3g} Å apart, closer than min_distance="
                       f"{min_distance:g} Å; overlapping atoms give meaningless energies "
                       "(MLPCalculator(min_distance=...) lowers the threshold, 0 disables it)")
    return out


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
    min_distance : float
        Smallest allowed distance between two atoms (or an atom and a periodic image
        of itself), Å; default 0.1. Closer atoms raise ``ValueError`` naming the two
        atoms and their distance: overlapping atoms give finite but meaningless
        energies (no model was trained on them, and pairs closer than 1e-10 Å are
        ignored altogether, as in LAMMPS). Checked on the edge vectors of the
        neighbour list (one vectorised pass); ``0`` disables the check.
    max_batch_atoms : int or None
        Most atoms :meth:`calculate_batch` gives the model in one call (default
        ``"auto"``: the model's ``cpu_batch_atoms`` on the CPU where it sets one, e.g. 128
        for MACE, whose large calls cost more per atom on a CPU; else
        :data:`MAX_BATCH_ATOMS` = 2048): a longer list of structures is split into
        consecutive chunks of whole structures, one model call each, so the peak memory
        (neighbour lists, per-edge intermediates, autograd graphs: ~0.5 MB per atom for
        a water DeePot-SE) is bounded instead of growing with the batch. A structure
        larger than the limit is evaluated alone. The results are those of one call
        (each structure is evaluated independently). ``None``: no limit.

    Input checks: non-finite positions, unknown elements, periodic cell vectors of
    zero length or so short that the neighbour search would need more than
    :data:`ase_mlp.neighbors.MAX_PERIODIC_IMAGES` periodic images, and NaN or infinite
    model weights (at construction, naming the parameter) raise ``ValueError``.
    Lattice vectors along non-periodic directions are ignored and may be zero
    (``ase.build.nanotube``, slabs with ``c = 0``, molecules): energies and forces
    are those of the same structure in a vacuum cell; ``stress`` then raises
    ``PropertyNotImplementedError`` (no volume), as for open clusters.

    ``parameters`` (and so ``todict()``, trajectories and ``ase.db`` rows) record the
    model class, ``model_file`` (when it was loaded from one, else None),
    ``model_checksum`` (:func:`ase_mlp.models.serialization.model_checksum` of the
    given model: the digest stored in files written by ``model.save``), ``elements``,
    ``cutoff``, ``dtype``, ``device``, ``skin`` and ``min_distance``.

    Implemented properties: ``energy``, ``free_energy``, ``energies``,
    ``forces``, ``stress``, ``stresses`` (per-atom, eV/Å³, summing to ``stress``).
    With a :class:`~ase_mlp.models.Committee` the results are the committee
    means, plus ``energy_std`` (eV), ``forces_std`` (per atom,
    ``sqrt(mean_m |F_m - <F>|^2)``, eV/Å) and ``stress_std`` (Voigt, eV/Å³).
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress", "stresses"]

    def __init__(self, model: Model, device=None, dtype=None, *, skin: float = 1.0,
                 neighbors: str = "auto", threads: int | None = None, backend: str | None = None,
                 min_distance: float = 0.1, max_batch_atoms: int | str | None = "auto",
                 **kwargs):
        super().__init__(**kwargs)
        auto_batch = isinstance(max_batch_atoms, str) and max_batch_atoms == "auto"
        self.max_batch_atoms = None if auto_batch else _check_max_batch_atoms(max_batch_atoms)
        self.threads = check_threads(threads)
        self.backend = None if backend is None else check_backend(backend)
        if not isinstance(model, Model):
            raise TypeError(f"model must be an ase_mlp Model, got {type(model).__name__}")
        try:
            min_distance = float(min_distance)
        except (TypeError, ValueError):
            raise ValueError(f"min_distance must be a number >= 0 (Å), got {min_distance!r}"
                             ) from None
        if not np.isfinite(min_distance) or min_distance < 0.0:
            raise ValueError(f"min_distance must be a finite number >= 0 (Å), got {min_distance}")
        self.min_distance = min_distance
        source = getattr(model, "source_file", None)
        check_finite_parameters(model, where=None if source is None else str(source))
        self.device = torch.device(device if device is not None else _default_device())
        if auto_batch:  # the model's preferred chunk on the CPU (MACE: small calls), else 2048
            hint = getattr(model, "cpu_batch_atoms", None) if self.device.type == "cpu" else None
            self.max_batch_atoms = _check_max_batch_atoms(hint or MAX_BATCH_ATOMS)
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
        # radius of the Verlet neighbour search (the cell check counts images within it)
        self._radius = max(float(self._pair_cutoffs.max()) + self.skin, 1e-12)
        self._accepted_cell = [None]  # last cell that passed the checks of _check_atoms
        # rebuilds itself when species, pbc, the cell or the atom count change
        self._verlet = VerletNeighborList(None, skin=self.skin, pair_cutoffs=self._pair_cutoffs)
        from ase_mlp.models.serialization import model_checksum

        self.model_file = source
        self.parameters.update(
            model=type(model).__name__, model_file=source, model_checksum=model_checksum(model),
            elements=list(self.elements), cutoff=float(self._pair_cutoffs.max()),
            dtype=str(self.dtype).replace("torch.", ""), device=str(self.device),
            skin=self.skin, min_distance=self.min_distance)

    def __repr__(self) -> str:
        p = self.parameters
        model = p["model"]
        if hasattr(self.model, "models"):
            model += "(" + " + ".join(type(m).__name__ for m in self.model.models) + ")"
        file = "" if p["model_file"] is None else f", file={p['model_file']!r}"
        return (f"{type(self).__name__}(model={model}, elements={p['elements']}, "
                f"cutoff={p['cutoff']:.4g} Å, dtype={p['dtype']}, device={p['device']}"
                f"{file}, checksum={p['model_checksum'][:12]})")

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
        species = _check_atoms(atoms, self.elements, self._radius, self.min_distance,
                               self._accepted_cell)
        self._verlet.update(atoms.positions, atoms.cell.array, atoms.pbc, species)
        i, j, S = self._verlet.get(atoms.positions, atoms.cell.array)
        n = len(atoms)
        graph = graph_from_neighbors(
            atoms.positions, atoms.cell.array[None], species, np.zeros(n, dtype=np.int64),
            i, j, S, dtype=self.dtype, device=self.device, pbc=atoms.pbc[None])
        del i, j, S  # the graph holds its own copies: free these before the model runs
        bad = self._short(graph, [0])
        if bad:
            raise ValueError(bad[0])
        want_stress = bool({"stress", "stresses", "stress_std"} & set(properties))
        if not want_stress and "forces" in properties and atoms.pbc.all():
            # the virial costs ~5 % on top of the forces, while a later get_stress() at the
            # same positions (NPT MD, cell metadynamics) would cost a whole evaluation
            want_stress = abs(np.linalg.det(atoms.cell.array)) > 1e-12
        self.results = self._evaluate(graph, [atoms], want_stress)[0]
        missing = [p for p in ("energies", "stresses") if p in properties
                   and p not in self.results and (p == "energies" or atoms.cell.rank == 3)]
        if missing:
            what = {"energies": "per-atom energies", "stresses": "per-atom virials"}
            raise PropertyNotImplementedError(
                f"{type(self.model).__name__} cannot give "
                f"{' or '.join(what[p] for p in missing)} ({', '.join(missing)}); energy, "
                f"forces and stress are available")

    # ------------------------------------------------------------ batch
    def calculate_batch(self, images, properties=("energy", "forces", "stress"), *,
                        errors: str = "raise") -> list[dict]:
        """Evaluate many structures (any sizes), in as few model calls as
        ``max_batch_atoms`` allows.

        Returns one dict per structure with ASE's result keys (``energy``,
        ``free_energy``, ``energies``, ``forces``, and ``stress``/``stresses``
        when asked; structures whose cell is not 3D (open clusters) get no stress
        keys instead of failing the whole batch). Does not attach results to the
        images. Structures are given to the model in consecutive chunks of at most
        ``max_batch_atoms`` atoms (see the class docstring; a structure is never split,
        and one larger than the limit runs alone): the results equal one call's, the
        peak memory is that of the largest chunk.

        Parameters
        ----------
        images : sequence of ase.Atoms
        properties : sequence of str
            Properties to compute (stress is skipped when none of ``stress``,
            ``stresses``, ``stress_std`` is asked for).
        errors : {"raise", "skip"}
            What a structure that fails the input checks (unknown element, non-finite
            position, bad cell, atoms closer than ``min_distance``) does: ``"raise"``
            (default) raises ``ValueError("structure k of n: ...")`` naming its index
            in ``images``; ``"skip"`` evaluates the others and puts
            ``{"error": "structure k of n: ..."}`` (no result keys) in its place.
            Atoms closer than ``min_distance`` are found chunk by chunk, so with
            ``"raise"`` the chunks before the failing one have been evaluated already.
        """
        if errors not in ("raise", "skip"):
            raise ValueError(f"errors must be 'raise' or 'skip', got {errors!r}")
        images = list(images)
        if not images:
            return []
        unknown = set(properties) - set(self.implemented_properties)
        if unknown:
            raise PropertyNotImplementedError(f"unknown properties {sorted(unknown)}")
        n = len(images)
        failed: dict[int, str] = {}

        def fail(k: int, message: str):
            message = f"structure {k} of {n}: {message}"
            if errors == "raise":
                raise ValueError(message) from None
            failed[k] = message

        species = {}
        for k, atoms in enumerate(images):
            try:
                species[k] = _check_atoms(atoms, self.elements, self._radius, self.min_distance)
            except ValueError as err:
                fail(k, str(err))
        want_stress = bool({"stress", "stresses", "stress_std"} & set(properties))
        results = [None] * n
        checked = [k for k in range(n) if k not in failed]
        for good in _chunks(checked, [len(a) for a in images], self.max_batch_atoms):
            graph = self._batch_graph([images[k] for k in good], [species[k] for k in good])
            bad = self._short(graph, [0] if len(good) == 1 else None)
            if bad:
                for b in sorted(bad):
                    fail(good[b], bad[b])
                good = [k for k in good if k not in failed]
                graph = None  # free it before the next one is built
                graph = self._batch_graph([images[k] for k in good],
                                          [species[k] for k in good])
            if good:
                for k, r in zip(good, self._evaluate(graph, [images[k] for k in good],
                                                     want_stress, strict_stress=False),
                                strict=True):
                    results[k] = r
            graph = None
        # a model may find out only in a later chunk that it cannot give per-atom values
        # (metatomic): then no structure gets them
        drop = [key for key, ok in (("energies", self.model.per_atom_energies),
                                    ("stresses", self.model.per_atom_virials)) if not ok]
        for k in range(n):
            if k in failed:
                results[k] = {"error": failed[k]}
            else:
                for key in drop:
                    results[k].pop(key, None)
        return results

    def _batch_graph(self, images, species) -> Graph | None:
        """Batched graph of ``images`` (checked already); None when there are none."""
        if not images:
            return None
        periodic = all(a.pbc.all() for a in images)
        if choose_neighbors(self.neighbors, periodic, self.device) == "device":
            return self._device_graph(images, species)
        nb = batch_neighbor_list(
            [(a.positions, a.cell.array, a.pbc) for a in images], None,
            species=species, pair_cutoffs=self._pair_cutoffs)
        return graph_from_neighbors(
            np.concatenate([a.positions for a in images]),
            np.stack([a.cell.array for a in images]),
            np.concatenate(species), nb.atom_system, nb.i, nb.j, nb.shifts,
            dtype=self.dtype, device=self.device, pbc=np.stack([a.pbc for a in images]))

    def _short(self, graph, offsets=None) -> dict[int, str]:
        """Structures (index in the graph) with atoms closer than ``min_distance``, each
        with a message naming its closest pair; empty (one vectorised pass) when none."""
        if graph is None or self.min_distance <= 0.0:
            return {}
        edges, lengths = short_edges(graph, self.min_distance)
        if len(edges) == 0:
            return {}
        if offsets is None:
            sizes = torch.bincount(graph.system, minlength=graph.n_systems).cpu().numpy()
            offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        return _describe_short(graph, edges, lengths, offsets, self.min_distance)

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
        # models that cannot give per-atom energies or virials (e.g. a metatomic model
        # without per-atom outputs) say so after the call: those keys are left out
        has_energies = self.model.per_atom_energies
        has_stresses = self.model.per_atom_virials
        results = []
        start = 0
        for k, atoms in enumerate(images):
            n = len(atoms)
            r = {
                "energy": float(energy[k]),
                "free_energy": float(energy[k]),
                "forces": forces[start:start + n].copy(),
            }
            if has_energies:
                r["energies"] = energies[start:start + n].copy()
            if self.committee:
                r["energy_std"] = float(e_std[k])
                r["forces_std"] = f_std[start:start + n].copy()
            if want_stress:
                if atoms.cell.rank == 3:
                    vol = atoms.get_volume()
                    r["stress"] = full_3x3_to_voigt_6_stress(-virial[k] / vol)
                    if has_stresses:
                        r["stresses"] = full_3x3_to_voigt_6_stress(
                            -atom_virial[start:start + n] / vol)
                    if self.committee:
                        v = v_std[k] / vol
                        r["stress_std"] = np.array([v[0, 0], v[1, 1], v[2, 2], v[1, 2], v[0, 2],
                                                    v[0, 1]])
                elif strict_stress:
                    raise PropertyNotImplementedError(
                        "stress is not defined for a cell of zero volume: it needs three "
                        "linearly independent lattice vectors, but this cell has rank "
                        f"{atoms.cell.rank} ({atoms.cell.array.tolist()}, pbc="
                        f"{atoms.pbc.tolist()}); give the open directions a vacuum lattice "
                        "vector to get the stress of that cell")
            results.append(r)
            start += n
        return results
