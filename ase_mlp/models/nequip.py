"""Run compiled NequIP and Allegro models (``nequip-compile`` files) as ase_mlp models.

The NequIP framework (``nequip``, ``nequip-allegro``; MIT) deploys a trained model with
``nequip-compile``: ``--mode torchscript`` writes a TorchScript ``*.nequip.pth`` archive
(PyTorch < 2.10 only in the CLI), ``--mode aotinductor --target batch`` an AOTInductor
package ``*.nequip.pt2``. Both take the same inputs, which map one to one onto a batched
:class:`~ase_mlp.neighbors.Graph`:

=====================  ===============================================================
nequip field           from the graph
=====================  ===============================================================
``pos``                positions (model length unit)
``edge_index``         ``(2, n_edges)``: row 0 the centre ``i``, row 1 the neighbour ``j``
``edge_cell_shift``    integer shifts ``S``: ``r_ij = x_j - x_i + S @ cell`` (ASE rows)
``cell``               ``(n_systems, 3, 3)`` (a zero-volume cell is completed, see below)
``atom_types``         index into the model's ``type_names``
``batch``/``num_atoms``  the structure of each atom / atoms per structure
=====================  ===============================================================

as nequip's own ``NequIPCalculator`` (``nequip/integrations/ase.py``, with
``nequip/nn/utils.py:with_edge_vectors_`` for the vectors) builds them. Edges are kept
when ``r_ij < rc[t_i, t_j]``: ``r_max``, or the per-edge-type cutoffs of the metadata
(indexed centre type, neighbour type, as ``EdgeLengthNormalizer`` does; they may be
asymmetric, so :meth:`NequipModel.pair_cutoffs` gives the symmetric maximum and the
direction is filtered here). The model returns per-atom energies, forces and the
strain derivative (nequip's ``ForceStressOutput``): its ``virial`` output is
``-dE/d(strain)``, ase_mlp's virial ``W`` (positive under compression), and its
``stress`` is ``virial_in / V = -W / V`` (ASE's sign). Models that return only
``stress`` (AOT targets ``batch``/``ase``) give ``W = -stress * V``; for structures with a
zero-volume cell (molecules, slabs with a zero cell row) the missing rows are completed
(``ase.geometry.complete_cell``), which changes nothing the model sees since no edge
has a shift along them, so ``V`` is never zero.

Per-atom energies: yes (``atomic_energy``). Per-atom virials: refused
(:attr:`NequipModel.per_atom_virials` is False: a compiled model returns no edge
gradients), so :class:`~ase_mlp.calculators.MLPCalculator` raises
``PropertyNotImplementedError`` for ``stresses``.

Units: a NequIP model is in the units of its training data and its metadata does not
say which. ase_mlp assumes eV and Å unless told otherwise:
``NequipModel.from_file(path, energy_unit="kcal/mol", length_unit="Angstrom")``
converts (positions to the model unit on the way in, energies, forces and virials back
to eV and Å). Species: the metadata's ``type_names`` are used as chemical symbols when
they all are; otherwise pass ``chemical_symbols`` (a list in ``type_names`` order, or a
dict symbol -> type name, nequip's ``chemical_species_to_atom_type_map``).

An AOTInductor file is compiled for one device (its metadata says which) and runs only
there. The ``batch`` target takes any number of structures at once; its exported
shapes start at two frames, two atoms and two edges, so every call appends a small
dummy frame (a dimer) whose results are dropped. Files of single-frame targets (``ase``,
``pair_nequip``) are run one structure at a time. A large batch goes to the model in
calls of at most ``max_edges_per_call`` edges (default 4096): on a CPU a NequIP call
on a much larger graph costs more per edge.

Requires ``pip install 'ase_mlp[nequip]'`` (``nequip``; ``nequip-allegro`` for Allegro
models, ``torch`` >= 2.6 for ``.nequip.pt2``).
"""

from __future__ import annotations

import hashlib
import pathlib
import zipfile
from typing import ClassVar

import numpy as np
import torch
from ase import units as ase_units
from ase.data import chemical_symbols as _SYMBOLS

from ase_mlp.models.base import Model, check_finite_parameters
from ase_mlp.neighbors.graph import Graph


_INSTALL = "pip install 'ase_mlp[nequip]' (nequip; nequip-allegro for Allegro models)"
TS_SUFFIX, AOT_SUFFIX = ".nequip.pth", ".nequip.pt2"
_ENERGY_UNITS = {"ev": 1.0, "mev": 1e-3, "kcal/mol": ase_units.kcal / ase_units.mol,
                 "kj/mol": ase_units.kJ / ase_units.mol, "hartree": ase_units.Hartree,
                 "ha": ase_units.Hartree, "ry": ase_units.Rydberg,
                 "rydberg": ase_units.Rydberg}
_LENGTH_UNITS = {"angstrom": 1.0, "a": 1.0, "å": 1.0, "bohr": ase_units.Bohr,
                 "nm": 10.0, "pm": 0.01}
_META = ("r_max", "type_names", "per_edge_type_cutoff", "model_dtype", "allow_tf32")


class NequipFormatError(ValueError):
    """A file cannot be used as a compiled NequIP/Allegro model; the message names the file
    and the problem."""


def _file_digest(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _zip_names(path) -> list[str]:
    try:
        with zipfile.ZipFile(path) as zf:
            return zf.namelist()
    except (OSError, zipfile.BadZipFile, ValueError):
        return []


def is_nequip_file(path) -> bool:
    """Whether ``path`` looks like a ``nequip-compile`` output: a zip named ``*.nequip.pth``
    or ``*.nequip.pt2``, or a TorchScript zip carrying nequip's ``type_names`` and
    ``r_max`` extra files. Reads only the zip directory; never raises."""
    try:
        path = pathlib.Path(path)
        names = _zip_names(path)
        if not names:
            return False
        if path.name.endswith((TS_SUFFIX, AOT_SUFFIX)):
            return True
        return (any(n.endswith("/extra/type_names") for n in names)
                and any(n.endswith("/extra/r_max") for n in names))
    except Exception:  # noqa: BLE001 - can_load must never raise
        return False


def _unit(value: str, table: dict, what: str) -> float:
    try:
        return float(table[str(value).strip().lower()])
    except KeyError:
        raise ValueError(f"unknown {what} unit {value!r}; known: {sorted(table)}") from None


def _read_torchscript(path: pathlib.Path):
    import warnings

    extra = {k: "" for k in _META}
    try:
        with warnings.catch_warnings():  # torch >= 2.10 deprecates TorchScript loading
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(path), _extra_files=extra, map_location="cpu")
    except Exception as err:  # noqa: BLE001 - TorchScript raises RuntimeError and others
        raise NequipFormatError(f"{path}: cannot load it as a TorchScript NequIP model "
                                f"({type(err).__name__}: {err})") from err
    meta = {k: (v.decode("utf-8") if isinstance(v, bytes) else str(v)) for k, v in extra.items()}
    return module.eval(), meta


def _read_aot(path: pathlib.Path):
    try:
        import torch._inductor  # noqa: F401 - aoti_load_package
        from nequip.utils.aoti_metadata import import_custom_ops_libs
    except ImportError as err:
        raise ImportError(f"NequIP .nequip.pt2 models need nequip and torch>=2.6: {_INSTALL} "
                          f"({err})") from err
    try:
        import_custom_ops_libs(str(path))  # custom op schemas first, as nequip does
        runner = torch._inductor.aoti_load_package(str(path))
        meta = dict(runner.get_metadata())
    except Exception as err:  # noqa: BLE001 - the C++ loader raises RuntimeError
        raise NequipFormatError(f"{path}: cannot load it as an AOTInductor NequIP model "
                                f"({type(err).__name__}: {err})") from err
    return runner, {k: str(v) for k, v in meta.items()}


class NequipModel(Model):
    """A ``nequip-compile`` model (NequIP, Allegro, ...) as an ase_mlp model.

    Build it with :meth:`from_file`. ``elements`` are the chemical symbols the model
    accepts (in ``type_names`` order for the default identity map); the cutoff matrix
    comes from ``r_max`` and the per-edge-type cutoffs in Å. The wrapped module keeps its
    dtype (``model_dtype`` metadata); inputs are converted to it and the results back to
    the graph's dtype. It is held outside the module tree, so ``.to(dtype=...)`` never
    casts the compiled weights.
    """

    edge_decomposable: ClassVar[bool] = False
    #: per-atom energies: nequip's ``atomic_energy`` output
    per_atom_energies = True
    #: per-atom virials: not available from a compiled model
    per_atom_virials = False

    def __init__(self, module, metadata: dict, *, kind: str, chemical_symbols=None,
                 energy_unit: str = "eV", length_unit: str = "Angstrom",
                 jit_optimize: bool = False, max_edges_per_call: int = 4096,
                 source: str | None = None):
        super().__init__()
        where = source or "NequIP model"
        self.kind = kind
        self.source_file = source
        self.jit_optimize = bool(jit_optimize)
        #: structures of a batch go to the model in calls of at most this many edges
        #: (0: all at once); see :meth:`_chunks`
        self.max_edges_per_call = int(max_edges_per_call)
        self.energy_unit, self.length_unit = str(energy_unit), str(length_unit)
        self._e = _unit(energy_unit, _ENERGY_UNITS, "energy")
        self._l = _unit(length_unit, _LENGTH_UNITS, "length")
        try:
            type_names = metadata["type_names"].split()
            r_max = float(metadata["r_max"])
        except (KeyError, ValueError, AttributeError) as err:
            raise NequipFormatError(f"{where}: metadata 'type_names'/'r_max' missing or "
                                    f"unreadable ({err!r}); not a nequip-compile file") from None
        if not type_names or not np.isfinite(r_max) or r_max <= 0.0:
            raise NequipFormatError(f"{where}: metadata type_names={type_names!r}, "
                                    f"r_max={r_max}: need at least one type and r_max > 0")
        self.type_names = type_names
        n_t = len(type_names)
        cut = np.full((n_t, n_t), r_max)
        per_edge = (metadata.get("per_edge_type_cutoff") or "").split()
        if per_edge:
            if len(per_edge) != n_t * n_t:
                raise NequipFormatError(f"{where}: per_edge_type_cutoff holds {len(per_edge)} "
                                        f"values, expected {n_t}x{n_t} for {type_names}")
            cut = np.array([float(x) for x in per_edge]).reshape(n_t, n_t)
        self._type_cutoffs = cut * self._l  # Å, [centre type, neighbour type]
        dtype = metadata.get("model_dtype") or "float64"
        if dtype not in ("float32", "float64"):
            raise NequipFormatError(f"{where}: unsupported model_dtype {dtype!r}")
        self.model_dtype = getattr(torch, dtype)
        self.elements, types = self._species_map(type_names, chemical_symbols, where)
        self._types = torch.tensor(types, dtype=torch.long)  # element index -> nequip type
        if kind == "aot":
            ins = metadata.get("nequip_aoti_inputs", "").split()
            outs = metadata.get("nequip_aoti_outputs", "").split()
            need = {"pos", "edge_index", "atom_types", "cell", "edge_cell_shift"}
            if not need <= set(ins) or not ({"forces"} <= set(outs)) or not (
                    {"total_energy", "atomic_energy"} & set(outs)):
                raise NequipFormatError(
                    f"{where}: AOT inputs {ins} / outputs {outs}: ase_mlp needs the inputs "
                    f"{sorted(need)} and energy and forces outputs (compile with --target "
                    "batch)")
            self._inputs, self._outputs = ins, outs
            self.batched = {"batch", "num_atoms"} <= set(ins)
            self.device_compiled = torch.device(metadata.get("AOTI_DEVICE_KEY", "cpu"))
        else:
            self.batched = True
            self.device_compiled = None
        if kind == "torchscript":
            try:  # NaN weights give NaN everywhere: refuse them at load, naming the tensor
                check_finite_parameters(module, where=where)
            except ValueError as err:
                raise NequipFormatError(str(err)) from None
        self._holder = {"module": module, "device": torch.device("cpu")}
        self._digest = _file_digest(pathlib.Path(source)) if source else None

    @staticmethod
    def _species_map(type_names, chemical_symbols, where):
        if chemical_symbols is None:
            bad = [t for t in type_names if t not in _SYMBOLS[1:]]
            if bad:
                raise ValueError(
                    f"{where}: the model's type names {type_names} are not all chemical "
                    f"symbols ({bad}); pass chemical_symbols=[...] (one symbol per type, in "
                    "this order) or a dict {symbol: type name}")
            return list(type_names), list(range(len(type_names)))
        if isinstance(chemical_symbols, dict):
            pairs = list(chemical_symbols.items())
        else:
            chemical_symbols = list(chemical_symbols)
            if len(chemical_symbols) != len(type_names):
                raise ValueError(f"{where}: chemical_symbols has {len(chemical_symbols)} "
                                 f"entries for the {len(type_names)} types {type_names}")
            pairs = list(zip(chemical_symbols, type_names, strict=True))
        elements, types = [], []
        for sym, tname in pairs:
            if sym not in _SYMBOLS[1:]:
                raise ValueError(f"{where}: {sym!r} is not a chemical symbol")
            if tname not in type_names:
                raise ValueError(f"{where}: type name {tname!r} (for {sym}) is not one of the "
                                 f"model's types {type_names}")
            if sym in elements:
                raise ValueError(f"{where}: element {sym!r} is mapped twice")
            elements.append(sym)
            types.append(type_names.index(tname))
        if not elements:
            raise ValueError(f"{where}: chemical_symbols maps no element")
        return elements, types

    # -- construction ------------------------------------------------------
    @classmethod
    def from_file(cls, path, *, chemical_symbols=None, energy_unit: str = "eV",
                  length_unit: str = "Angstrom", jit_optimize: bool = False,
                  max_edges_per_call: int = 4096) -> "NequipModel":
        """Load a ``*.nequip.pth`` (TorchScript) or ``*.nequip.pt2`` (AOTInductor) file.

        ``energy_unit``/``length_unit``: the units the model was trained in (nequip files
        do not record them; default eV and Å). ``chemical_symbols``: needed when the
        ``type_names`` are not chemical symbols (see the module docstring).
        """
        path = pathlib.Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"NequIP model file not found: {path}")
        if not _zip_names(path):
            raise NequipFormatError(f"{path}: not a zip archive, so not a nequip-compile "
                                    "output (.nequip.pth or .nequip.pt2)")
        try:
            import nequip  # noqa: F401 - registers nequip's ops; needed by Allegro/AOT files
        except ImportError as err:
            raise ImportError(f"NequIP models need nequip: {_INSTALL} ({err})") from err
        if path.name.endswith(AOT_SUFFIX) or not any("/code/" in n for n in _zip_names(path)):
            module, meta = _read_aot(path)
            kind = "aot"
        else:
            module, meta = _read_torchscript(path)
            kind = "torchscript"
        return cls(module, meta, kind=kind, chemical_symbols=chemical_symbols,
                   energy_unit=energy_unit, length_unit=length_unit,
                   jit_optimize=jit_optimize, max_edges_per_call=max_edges_per_call,
                   source=str(path.resolve()))

    def __deepcopy__(self, memo):  # share the compiled module, copy the rest
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        new.__dict__.update({k: v for k, v in self.__dict__.items() if k != "_holder"})
        for name in ("_parameters", "_buffers", "_modules"):
            new.__dict__[name] = dict(getattr(self, name))
        new._holder = dict(self._holder)
        return new

    # -- Model contract ----------------------------------------------------
    def pair_cutoffs(self) -> np.ndarray:
        t = self._types.numpy()
        c = self._type_cutoffs[np.ix_(t, t)]
        return np.maximum(c, c.T)

    def config(self) -> dict:
        return {"file": self.source_file, "file_sha256": self._digest, "kind": self.kind,
                "elements": list(self.elements), "type_names": list(self.type_names),
                "energy_unit": self.energy_unit, "length_unit": self.length_unit}

    def save(self, path) -> None:
        raise TypeError("a NequipModel is not saved in ase_mlp's format: keep the "
                        f"nequip-compile file ({self.source_file})")

    def extra_repr(self) -> str:
        return (f"{self.kind}, elements={self.elements}, type_names={self.type_names}, "
                f"cutoff={self.cutoff:.4f} Å, units {self.energy_unit}/{self.length_unit}")

    def _module_on(self, device: torch.device):
        if self.kind == "aot":
            if torch.device(device).type != self.device_compiled.type:
                raise ValueError(f"{self.source_file} was compiled for "
                                 f"{self.device_compiled}, not {device}; recompile it "
                                 "with nequip-compile --device")
            return self._holder["module"]
        if self._holder["device"] != device:
            self._holder["module"] = self._holder["module"].to(device)
            self._holder["device"] = device
        return self._holder["module"]

    # -- evaluation --------------------------------------------------------
    def forward(self, graph: Graph, forces: bool = True, stress: bool = True) -> dict:
        device, out_dtype, dtype = graph.positions.device, graph.positions.dtype, self.model_dtype
        n_sys = graph.n_systems
        i, j = graph.edge_index
        with torch.no_grad():
            vec = graph.edge_vectors()
            rc = torch.as_tensor(self._type_cutoffs, dtype=vec.dtype, device=device)
            types = self._types.to(device)[graph.species]
            r2 = (vec * vec).sum(1)
            keep = (r2 < rc[types[i], types[j]] ** 2) & (r2 > 1e-20)
        idx = torch.nonzero(keep).squeeze(1)
        cells = _completed_cells(graph)
        inputs = {
            "pos": (graph.positions.detach() / self._l).to(dtype),
            "edge_index": graph.edge_index[:, idx],
            "atom_types": types,
            "cell": (cells / self._l).to(dtype),
            "edge_cell_shift": graph.shifts[idx].to(dtype),
            "batch": graph.system,
            "num_atoms": torch.bincount(graph.system, minlength=n_sys),
        }
        module = self._module_on(device)
        parts = [self._call(module, chunk) for chunk in self._chunks(inputs, n_sys)]
        out = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
        energies = out["atomic_energy"].reshape(-1)
        e_sys = energies.new_zeros(n_sys).index_add_(0, graph.system, energies)
        res = {"energies": (energies * self._e).to(out_dtype),
               "energy": (e_sys * self._e).to(out_dtype)}
        if forces:
            res["forces"] = (out["forces"] * (self._e / self._l)).to(out_dtype)
        if stress:
            if "virial" in out:
                w = out["virial"]
            else:  # stress = -W / V with the (completed) cell the model saw
                vol = torch.linalg.det(inputs["cell"]).abs().view(-1, 1, 1)
                w = -out["stress"] * vol
            res["virial"] = (w * self._e).to(out_dtype)
            # no edge gradients: per-atom virials are unknown (per_atom_virials is False)
            res["atom_virial"] = torch.full((graph.n_atoms, 3, 3), float("nan"),
                                            dtype=out_dtype, device=device)
        return res

    def _chunks(self, inputs: dict, n_sys: int):
        """Split the batch into model calls of consecutive structures holding at most
        :attr:`max_edges_per_call` edges (one structure per call for single-frame AOT
        files; ``max_edges_per_call <= 0``: all in one call). A NequIP call on a much
        larger graph costs more per edge on a CPU (its per-edge tensors leave the caches):
        16 x 64 Cu/Au atoms (4-layer NequIP, 2.7k edges each) took 4.1 s in calls of one
        structure, 4.8 s in calls of four, 6.9 s in calls of eight; 8-atom structures gain
        from batching (85 -> 54 ms per structure)."""
        n_edges = int(inputs["edge_index"].shape[1])
        limit = self.max_edges_per_call if self.batched else 0   # 0 here: one per call
        if n_sys == 1 or (self.batched and (limit <= 0 or n_edges <= limit)):
            yield inputs
            return
        sys_of_edge = inputs["batch"][inputs["edge_index"][0]]
        counts = torch.bincount(sys_of_edge, minlength=n_sys).tolist()
        sizes = inputs["num_atoms"].tolist()
        first_atom = np.concatenate([[0], np.cumsum(sizes)])
        s0 = 0
        while s0 < n_sys:
            s1, total = s0 + 1, counts[s0]
            while limit and s1 < n_sys and total + counts[s1] <= limit:
                total += counts[s1]
                s1 += 1
            a0, a1 = int(first_atom[s0]), int(first_atom[s1])
            mask = (sys_of_edge >= s0) & (sys_of_edge < s1)
            yield {"pos": inputs["pos"][a0:a1], "atom_types": inputs["atom_types"][a0:a1],
                   "edge_index": inputs["edge_index"][:, mask] - a0,
                   "cell": inputs["cell"][s0:s1],
                   "edge_cell_shift": inputs["edge_cell_shift"][mask],
                   "batch": inputs["batch"][a0:a1] - s0,
                   "num_atoms": inputs["num_atoms"][s0:s1]}
            s0 = s1

    def _call(self, module, inputs: dict) -> dict:
        """One model call; ``atomic_energy``, ``forces`` and ``virial`` or ``stress``
        (shaped ``(n_frames, 3, 3)``) of the structures in ``inputs``."""
        n_atoms, n_sys = int(inputs["pos"].shape[0]), int(inputs["cell"].shape[0])
        single = {k: inputs[k] for k in ("pos", "atom_types", "edge_index", "cell",
                                         "edge_cell_shift")}
        if self.kind == "torchscript":
            # one structure: leave out batch/num_atoms, as nequip's ASE calculator does
            data = {k: v.contiguous() for k, v in (single if n_sys == 1 else inputs).items()}
            data["pos"] = data["pos"].clone()   # the model sets requires_grad on it
            with torch.enable_grad(), torch.jit.optimized_execution(self.jit_optimize):
                out = {k: v.detach() for k, v in module(data).items()}
        elif self.batched:
            dimer = 0.5 * float(self._type_cutoffs[0, 0]) / self._l   # model length unit
            data = _with_dummy_frame(inputs, dimer)
            with torch.no_grad():
                values = module([data[k].contiguous() for k in self._inputs])
            out = dict(zip(self._outputs, values, strict=True))
        else:
            n_edges = int(single["edge_index"].shape[1])
            if n_atoms < 2 or n_edges < 2:
                raise ValueError(
                    f"{self.source_file}: a single-frame AOT model (target ase/pair_nequip) "
                    f"needs >= 2 atoms and >= 2 edges per structure; got {n_atoms} atoms and "
                    f"{n_edges} edges (compile with --target batch)")
            with torch.no_grad():
                values = module([single[k].contiguous() for k in self._inputs])
            out = dict(zip(self._outputs, values, strict=True))
        if "atomic_energy" not in out:
            raise NequipFormatError(f"{self.source_file}: the model returns no atomic_energy "
                                    f"(outputs {sorted(out)})")
        res = {"atomic_energy": out["atomic_energy"].reshape(-1)[:n_atoms],
               "forces": out["forces"][:n_atoms]}
        key = "virial" if "virial" in out else "stress"
        if key in out:
            res[key] = out[key].reshape(-1, 3, 3)[:n_sys]
        return res


def _completed_cells(graph: Graph) -> torch.Tensor:
    """The graph's cells with zero rows filled in (``ase.geometry.complete_cell``), so that
    every volume is positive; edges have no shift along those rows."""
    cells = graph.cells.detach()
    vol = torch.linalg.det(cells).abs()
    if bool((vol > 1e-12).all()):
        return cells
    from ase.geometry import complete_cell

    fixed = cells.clone()
    for s in torch.nonzero(vol <= 1e-12).squeeze(1).tolist():
        c = cells[s].cpu().numpy()
        fixed[s] = torch.as_tensor(complete_cell(c), dtype=cells.dtype, device=cells.device)
    return fixed


def _with_dummy_frame(inputs: dict, bond: float) -> dict:
    """Append a two-atom frame (a dimer of type 0, ``bond`` apart in the model's length
    unit, both edge directions): the ``batch`` AOT target was exported for >= 2 frames,
    atoms and edges; its results are dropped."""
    n, s = int(inputs["pos"].shape[0]), int(inputs["cell"].shape[0])
    pos, cell = inputs["pos"], inputs["cell"]
    out = dict(inputs)
    out["pos"] = torch.cat([pos, pos.new_tensor([[0.0, 0.0, 0.0], [bond, 0.0, 0.0]])])
    out["cell"] = torch.cat([cell, torch.eye(3, dtype=cell.dtype, device=cell.device)[None]
                             * (10.0 * bond)])
    ei = inputs["edge_index"]
    out["edge_index"] = torch.cat([ei, ei.new_tensor([[n, n + 1], [n + 1, n]])], 1)
    out["edge_cell_shift"] = torch.cat([inputs["edge_cell_shift"],
                                        inputs["edge_cell_shift"].new_zeros((2, 3))])
    out["atom_types"] = torch.cat([inputs["atom_types"],
                                   inputs["atom_types"].new_zeros(2)])
    out["batch"] = torch.cat([inputs["batch"], inputs["batch"].new_full((2,), s)])
    out["num_atoms"] = torch.cat([inputs["num_atoms"], inputs["num_atoms"].new_tensor([2])])
    return out


class NequipFormat:
    """Entry point (group ``ase_mlp.model_formats``): one ``nequip-compile`` file."""

    name = "nequip"

    @staticmethod
    def can_load(paths) -> bool:
        return len(paths) == 1 and is_nequip_file(paths[0])

    @staticmethod
    def load(paths) -> NequipModel:
        return NequipModel.from_file(paths[0])


__all__ = ["NequipModel", "NequipFormat", "NequipFormatError", "is_nequip_file"]
