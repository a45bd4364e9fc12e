"""Run metatomic models (``metatomic-torch``, the model-exchange format of LAMMPS, i-PI,
ASE and torch-sim) as ase_mlp models.

:class:`MetatomicModel` wraps an exported :class:`metatomic.torch.AtomisticModel`
(a TorchScript ``.pt`` file) in the :class:`~ase_mlp.models.base.Model` contract, so
:class:`~ase_mlp.calculators.MLPCalculator` (single structures and ``calculate_batch``),
:class:`~ase_mlp.dynamics.ResidentMD` and the thermostats run it like any other model::

    calc = MLPCalculator.from_file("model.pt")    # the ``metatomic`` entry point
    calc = MLPCalculator(MetatomicModel.from_file("model.pt", variant="pbe"))

One evaluation builds one metatomic :class:`~metatomic.torch.System` per structure of
the batched graph: the graph's edges (within each requested cutoff; ``i < j`` or a
positive cell shift for half lists) become the neighbour-list
:class:`~metatensor.torch.TensorBlock` of every
:meth:`~metatomic.torch.AtomisticModel.requested_neighbor_lists` option, with samples
``first_atom, second_atom, cell_shift_a, cell_shift_b, cell_shift_c``. Positions and
cells are multiplied by a per-structure strain ``(I + eps)``, so one backward pass gives
forces ``-dE/dx`` and the virial ``W = -dE/d eps`` (symmetrised), as ``metatomic_ase``
computes them. The model is asked for ``energy`` in ``eV`` with positions in ``angstrom``
(``ModelEvaluationOptions(length_unit="angstrom")``): metatomic converts from the units
the model declares in its capabilities.

Per-atom virials (``stresses``) come from the gradients of the energy with respect to
the neighbour-list vectors, split half to each end as for every ase_mlp model. That is
exact when the model's energy depends on the positions only through its neighbour
lists (checked at every call: the edge virials must add up to the strain virial); a
model that uses the positions directly has :attr:`MetatomicModel.per_atom_virials`
turned False, and :class:`~ase_mlp.calculators.MLPCalculator` then refuses ``stresses``
with ``PropertyNotImplementedError``. Per-atom energies need the model to declare
``sample_kind="atom"`` for its energy output; otherwise
:attr:`MetatomicModel.per_atom_energies` is False and ``energies`` are refused likewise.
Models that need extra inputs (charges, spins) or declare no energy output are refused
when they are loaded.

Requires ``pip install ase_mlp[metatomic]`` (``metatomic-torch``; ``metatomic-ase`` for
the comparison in the tests).
"""

from __future__ import annotations

import hashlib
import pathlib
import zipfile
from typing import ClassVar

import numpy as np
import torch
from ase.data import chemical_symbols

from ase_mlp.models.base import Model, assemble, check_finite_parameters
from ase_mlp.neighbors.graph import Graph


_INSTALL = "pip install 'ase_mlp[metatomic]' (metatomic-torch)"


def _metatomic():
    try:
        import metatomic.torch as mta
        from metatensor.torch import Labels, TensorBlock
    except ImportError as err:
        raise ImportError(f"metatomic models need metatomic-torch: {_INSTALL} ({err})") from err
    return mta, Labels, TensorBlock


def is_metatomic_file(path) -> bool:
    """Whether ``path`` is a TorchScript archive written by ``AtomisticModel.save``
    (a zip holding ``<name>/extra/metatomic-version``). Reads only the zip directory."""
    try:
        with zipfile.ZipFile(path) as zf:
            return any(n.endswith("/extra/metatomic-version") for n in zf.namelist())
    except (OSError, zipfile.BadZipFile, ValueError):
        return False


def _file_digest(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class MetatomicModel(Model):
    """An exported metatomic ``AtomisticModel`` as an ase_mlp model.

    Parameters
    ----------
    model : metatomic.torch.AtomisticModel
        The exported model (``metatomic.torch.load_atomistic_model(path)``, or an
        ``AtomisticModel`` built in this process).
    variant : str, optional
        Variant of the energy output (``"energy/<variant>"``); default the plain
        ``"energy"`` output.
    check_consistency : bool
        Let metatomic check the inputs and outputs of every call (slow; for debugging).
    jit_optimize : bool
        Run the TorchScript model with the profiling executor's optimisations
        (``torch.jit.optimized_execution(True)``, scoped to each call). Off by default:
        the executor re-profiles and re-optimises for new input shapes, and a batch or a
        neighbour-list rebuild changes them, which cost 0.5--1 s per new shape for a
        small SNAP, while the unoptimised interpreter was as fast after warm-up.

    The element list is the model's ``atomic_types`` (atomic numbers), the cutoff the
    largest requested neighbour-list cutoff in Å. The wrapped model keeps its own dtype
    (``capabilities().dtype``): inputs are converted to it and the results back to the
    graph's dtype. It is not a submodule, so ``.to(dtype=...)`` leaves its weights alone;
    it follows the graph's device at the first call there (one of its
    ``supported_devices``).
    """

    #: the energy is not a sum over graph edges in ase_mlp's sense (metatomic evaluates
    #: it): SumModel adds this model's :meth:`forward` results
    edge_decomposable: ClassVar[bool] = False

    def __init__(self, model, *, variant: str | None = None, check_consistency: bool = False,
                 jit_optimize: bool = False, source: str | None = None):
        super().__init__()
        mta, _, _ = _metatomic()
        where = source or "metatomic model"
        if not isinstance(model, torch.nn.Module) or not hasattr(model, "capabilities"):
            raise TypeError(f"{where}: expected a metatomic AtomisticModel, got "
                            f"{type(model).__name__}")
        caps = model.capabilities()
        key = "energy" if variant is None else f"energy/{variant}"
        if key not in caps.outputs:
            energy_like = sorted(k for k in caps.outputs if k.split("/")[0] == "energy")
            raise ValueError(
                f"{where}: the model has no {key!r} output (it declares "
                f"{sorted(caps.outputs)}; energy outputs: {energy_like}); ase_mlp needs a "
                "conservative energy" + ("" if variant is None else "; check variant="))
        declared = caps.outputs[key]
        if declared.unit == "":
            raise ValueError(
                f"{where}: output {key!r} declares no unit, so its energies cannot be "
                "converted to eV; re-export it with ModelOutput(unit='eV', ...)")
        if caps.length_unit == "":
            raise ValueError(f"{where}: the model declares no length unit (capabilities"
                             ".length_unit), so Å positions cannot be converted")
        try:
            mta.unit_conversion_factor(declared.unit, "eV")
            mta.unit_conversion_factor("angstrom", caps.length_unit)
        except Exception as err:  # noqa: BLE001 - metatomic raises RuntimeError/ValueError
            raise ValueError(f"{where}: cannot convert the model's units (energy "
                             f"{declared.unit!r}, length {caps.length_unit!r}) to eV and "
                             f"Å: {err}") from err
        inputs = model.requested_inputs(use_new_names=True)
        if len(inputs):
            raise ValueError(
                f"{where}: the model requests extra inputs {sorted(inputs)}, which ase_mlp "
                "does not provide (only positions, cells, types and neighbour lists)")
        elements = []
        for z in caps.atomic_types:
            if not 0 < int(z) < len(chemical_symbols):
                raise ValueError(f"{where}: atomic type {int(z)} is not an atomic number, so "
                                 "it cannot be matched to ASE's chemical symbols")
            elements.append(chemical_symbols[int(z)])
        if not elements:
            raise ValueError(f"{where}: the model declares no atomic_types")
        if caps.dtype not in ("float64", "float32"):
            raise ValueError(f"{where}: unsupported model dtype {caps.dtype!r}")
        try:  # NaN weights give NaN everywhere: refuse them at load, naming the tensor
            check_finite_parameters(model, where=where)
        except ValueError as err:
            raise ValueError(str(err)) from None
        self.elements = elements
        self.variant = variant
        self.check_consistency = bool(check_consistency)
        self.jit_optimize = bool(jit_optimize)
        self.energy_key = key
        self.energy_unit = declared.unit
        self.length_unit = caps.length_unit
        self.model_dtype = getattr(torch, caps.dtype)
        self.supported_devices = list(caps.supported_devices)
        #: whether the model gives per-atom energies (``energies``; else NaN)
        self.per_atom_energies = declared.sample_kind == "atom"
        #: False once a call found energy terms outside the neighbour lists (then
        #: per-atom virials are NaN)
        self.per_atom_virials = True
        self._options = list(model.requested_neighbor_lists())
        self._cutoffs = [float(o.engine_cutoff("angstrom")) for o in self._options]
        rc = max(self._cutoffs, default=0.0)
        if rc <= 0.0:
            rc = float(caps.interaction_range) * mta.unit_conversion_factor(
                caps.length_unit, "angstrom")
        if not np.isfinite(rc) or rc <= 0.0:
            raise ValueError(f"{where}: the model requests no neighbour list and declares "
                             f"interaction_range={caps.interaction_range}; ase_mlp needs a "
                             "finite cutoff")
        self._rc = rc
        self._types = torch.tensor(caps.atomic_types, dtype=torch.int32)
        # not a submodule: Module.to(dtype) must not cast a float32 model's weights, and
        # deep copies of this wrapper share the (read-only) TorchScript module
        self._holder = {"model": model.eval(), "device": torch.device("cpu")}
        self._state_digest = self._digest(model)
        self.source_file = source

    # -- construction ------------------------------------------------------
    @classmethod
    def from_file(cls, path, *, variant: str | None = None, extensions_directory=None,
                  check_consistency: bool = False, jit_optimize: bool = False
                  ) -> "MetatomicModel":
        """Load an exported ``.pt`` file (``metatomic.torch.load_atomistic_model``)."""
        mta, _, _ = _metatomic()
        path = pathlib.Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"metatomic model file not found: {path}")
        try:
            model = mta.load_atomistic_model(str(path), extensions_directory=extensions_directory)
        except Exception as err:  # noqa: BLE001 - TorchScript/metatomic raise RuntimeError
            raise ValueError(f"{path}: cannot load it as a metatomic model ({err})") from err
        out = cls(model, variant=variant, check_consistency=check_consistency,
                  jit_optimize=jit_optimize, source=str(path.resolve()))
        out._file_digest = _file_digest(path)
        return out

    @staticmethod
    def _digest(model) -> str:
        from ase_mlp.models.serialization import checksum

        return checksum({k: v for k, v in model.state_dict().items()})

    @property
    def metatomic_model(self):
        """The wrapped ``AtomisticModel``."""
        return self._holder["model"]

    def __deepcopy__(self, memo):
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        new.__dict__.update({k: v for k, v in self.__dict__.items() if k != "_holder"})
        for name in ("_parameters", "_buffers", "_modules"):
            new.__dict__[name] = dict(getattr(self, name))
        new._holder = dict(self._holder)
        return new

    # -- Model contract ----------------------------------------------------
    def pair_cutoffs(self) -> np.ndarray:
        n = len(self.elements)
        return np.full((n, n), self._rc)

    def config(self) -> dict:
        return {"file": self.source_file, "variant": self.variant,
                "state_sha256": self._state_digest,
                "file_sha256": getattr(self, "_file_digest", None)}

    def save(self, path) -> None:
        raise TypeError(
            "a MetatomicModel is saved by metatomic, not in ase_mlp's format: keep the "
            f"exported .pt file ({self.source_file}) or call "
            "model.metatomic_model.save(path)")

    def extra_repr(self) -> str:
        return (f"elements={self.elements}, cutoff={self._rc:.4f}, energy={self.energy_key!r} "
                f"[{self.energy_unit}], length unit {self.length_unit!r}")

    def _model_on(self, device: torch.device):
        if self._holder["device"] != device:
            if device.type not in self.supported_devices:
                raise ValueError(
                    f"this metatomic model supports the devices {self.supported_devices}, "
                    f"not {device.type!r}")
            self._holder["model"] = self._holder["model"].to(device=device)
            self._holder["device"] = device
        return self._holder["model"]

    def forward(self, graph: Graph, forces: bool = True, stress: bool = True) -> dict:
        # callers (MLPCalculator, ResidentMD) run models under no_grad: the forces come
        # from autograd here
        with torch.enable_grad():
            return self._forward(graph, bool(forces), bool(stress))

    def _forward(self, graph: Graph, forces: bool, stress: bool) -> dict:
        mta, Labels, TensorBlock = _metatomic()
        out_dtype = graph.positions.dtype
        device = graph.positions.device
        dtype = self.model_dtype
        model = self._model_on(device)
        n_atoms, n_sys = graph.n_atoms, graph.n_systems
        need_grad = forces or stress

        pos = graph.positions.detach().to(dtype).requires_grad_(forces)
        cells = graph.cells.detach().to(dtype)
        if graph.pbc is not None:
            pbc = graph.pbc.to(device=device, dtype=torch.bool)
        else:  # unknown: a 3D cell counts as periodic
            dets = torch.linalg.det(cells).abs() > 1e-12
            pbc = dets[:, None].expand(n_sys, 3)
        cells = cells * pbc[:, :, None].to(dtype)  # metatomic: zero rows when not periodic
        strain = torch.eye(3, dtype=dtype, device=device).repeat(n_sys, 1, 1)
        strain.requires_grad_(stress)
        sizes = torch.bincount(graph.system, minlength=n_sys)
        offsets = torch.cumsum(sizes, 0) - sizes
        if stress:
            pos_s = torch.bmm(pos.unsqueeze(1), strain[graph.system]).squeeze(1)
            cell_s = torch.bmm(cells, strain)
        else:
            pos_s, cell_s = pos, cells
        types = self._types.to(device)[graph.species]

        # select each request's edges on the (cheap, non-differentiable) graph vectors,
        # then build the strained, differentiable vectors of the selected edges only
        i, j = graph.edge_index
        with torch.no_grad():
            lengths = graph.edge_vectors().norm(dim=1)
        int_shifts = torch.round(graph.shifts).to(torch.int32)
        per_request = []  # (edge ids, edge vectors) per request, for the atom virials
        blocks = [[] for _ in range(n_sys)]
        xyz = Labels("xyz", torch.arange(3, device=device, dtype=torch.int32).reshape(3, 1))
        dist = Labels("distance", torch.zeros((1, 1), device=device, dtype=torch.int32))
        names = ["first_atom", "second_atom", "cell_shift_a", "cell_shift_b", "cell_shift_c"]
        for options, rc in zip(self._options, self._cutoffs, strict=True):
            keep = (lengths < rc) & (lengths > 0.0)
            if not options.full_list:
                keep &= _half(i, j, int_shifts)
            idx = torch.nonzero(keep).squeeze(1)
            if n_sys > 1:
                idx = idx[torch.argsort(graph.system[i[idx]], stable=True)]
            ii, jj = i[idx], j[idx]
            sh = graph.shifts[idx].to(dtype)
            if n_sys == 1:
                offset = sh @ cell_s[0]
            else:
                offset = torch.bmm(sh.unsqueeze(1), cell_s[graph.system[ii]]).squeeze(1)
            vec = pos_s[jj] - pos_s[ii] + offset
            per_request.append((idx, vec))
            if n_sys == 1:
                counts, first, second = [len(idx)], ii, jj
            else:
                sys_of = graph.system[ii]
                counts = torch.bincount(sys_of, minlength=n_sys).tolist()
                first, second = ii - offsets[sys_of], jj - offsets[sys_of]
            samples = torch.cat([torch.stack([first, second], 1).to(torch.int32),
                                 int_shifts[idx]], 1)
            start = 0
            for k, c in enumerate(counts):
                blocks[k].append((options, TensorBlock(
                    values=vec[start:start + c].reshape(-1, 3, 1),
                    samples=Labels(names, samples[start:start + c], assume_unique=True),
                    components=[xyz], properties=dist)))
                start += c
        systems = []
        for k in range(n_sys):
            a, b = int(offsets[k]), int(offsets[k] + sizes[k])
            system = mta.System(types[a:b], pos_s[a:b], cell_s[k], pbc[k])
            for options, block in blocks[k]:
                system.add_neighbor_list(options, block)
            systems.append(system)

        request = mta.ModelOutput(unit="eV", sample_kind="atom" if self.per_atom_energies
                                  else "system", explicit_gradients=[])
        run = mta.ModelEvaluationOptions(length_unit="angstrom",
                                         outputs={self.energy_key: request})
        with torch.jit.optimized_execution(self.jit_optimize), \
                torch.set_grad_enabled(need_grad):
            result = model(systems, run, check_consistency=self.check_consistency)
        block = result[self.energy_key].block()
        values = block.values.reshape(-1)
        samples = block.samples.values.to(device=device, dtype=torch.long)
        e_sys = values.new_zeros(n_sys).index_add(0, samples[:, 0], values)
        if self.per_atom_energies:
            energies = values.new_zeros(n_atoms).index_add(
                0, offsets[samples[:, 0]] + samples[:, 1], values)
        else:
            energies = values.new_full((n_atoms,), float("nan"))
        out = {"energies": energies.detach().to(out_dtype), "energy": e_sys.detach().to(out_dtype)}
        if not need_grad:
            return out
        wrt = ([pos] if forces else []) + ([strain] if stress else [])
        if stress:
            wrt += [vec for _, vec in per_request]
        grads = torch.autograd.grad(e_sys.sum(), wrt, allow_unused=True)
        grads = [torch.zeros_like(x) if g is None else g for x, g in zip(wrt, grads, strict=True)]
        if forces:
            out["forces"] = (-grads.pop(0)).to(out_dtype)
        if stress:
            g = grads.pop(0)
            virial = -0.5 * (g + g.transpose(1, 2))
            out["virial"] = virial.detach().to(out_dtype)
            out["atom_virial"] = self._atom_virials(graph, per_request, grads, virial,
                                                    out_dtype)
        return out

    def _atom_virials(self, graph, per_request, edge_grads, virial, out_dtype):
        """Per-atom virials from the neighbour-list gradients (NaN when the energy also
        depends on the positions directly)."""
        n_atoms = graph.n_atoms
        idx = torch.cat([ids for ids, _ in per_request]) if per_request else \
            graph.edge_index.new_zeros(0)
        vec = torch.cat([v.detach() for _, v in per_request]) if per_request else \
            graph.positions.new_zeros((0, 3), dtype=virial.dtype)
        grad = torch.cat(edge_grads) if edge_grads else vec.new_zeros((0, 3))
        sub = Graph(positions=graph.positions.detach().to(vec.dtype),
                    cells=graph.cells.detach().to(vec.dtype), species=graph.species,
                    system=graph.system, edge_index=graph.edge_index[:, idx],
                    shifts=graph.shifts[idx].to(vec.dtype), n_systems=graph.n_systems,
                    pbc=graph.pbc)
        res = assemble(sub, vec, vec.new_zeros(n_atoms), grad.detach(), forces=False,
                       stress=True)
        scale = virial.detach().abs().amax(dim=(1, 2)).clamp_min(1e-300)
        diff = (res["virial"] - virial.detach()).abs().amax(dim=(1, 2))
        if bool((diff > 1e-8 * scale + 1e-12).any()):
            self.per_atom_virials = False
            return torch.full((n_atoms, 3, 3), float("nan"), dtype=out_dtype,
                              device=vec.device)
        return res["atom_virial"].to(out_dtype)


def _half(i: torch.Tensor, j: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """One of the two directions of every pair: ``i < j``, or ``i == j`` with the first
    non-zero cell shift positive."""
    first = torch.where(shifts[:, 0] != 0, shifts[:, 0],
                        torch.where(shifts[:, 1] != 0, shifts[:, 1], shifts[:, 2]))
    return (i < j) | ((i == j) & (first > 0))


class MetatomicFormat:
    """Entry point (group ``ase_mlp.model_formats``): one metatomic ``.pt`` file."""

    name = "metatomic"

    @staticmethod
    def can_load(paths) -> bool:
        return len(paths) == 1 and is_metatomic_file(paths[0])

    @staticmethod
    def load(paths) -> MetatomicModel:
        return MetatomicModel.from_file(paths[0])


def lennard_jones(elements, sigma, epsilon, cutoff: float, *, full_list: bool = False,
                  length_unit: str = "angstrom", energy_unit: str = "eV",
                  dtype: str = "float64"):
    """A truncated and shifted Lennard-Jones pair potential as a metatomic
    ``AtomisticModel`` (TorchScript-able; save it with ``.save(path)``).

    ``E = sum_{i<j, r<rc} 4 eps_ab [(s/r)^12 - (s/r)^6] - (same at rc)``, half of each
    pair on each atom. ``sigma``, ``epsilon``: (n_el, n_el) symmetric arrays (or
    scalars) in ``length_unit`` / ``energy_unit``; ``cutoff`` in ``length_unit``.
    ``full_list`` requests a full neighbour list (each pair twice, energy halved).
    A reference model for the tests and examples.
    """
    mta, _, _ = _metatomic()
    from ase.data import atomic_numbers

    from ase_mlp.models._metatomic_lj import LennardJones

    numbers = [atomic_numbers[e] for e in elements]
    n = len(numbers)
    sig = np.broadcast_to(np.asarray(sigma, dtype=float), (n, n))
    eps = np.broadcast_to(np.asarray(epsilon, dtype=float), (n, n))
    if not (np.allclose(sig, sig.T) and np.allclose(eps, eps.T)):
        raise ValueError("sigma and epsilon must be symmetric (n_elements, n_elements) arrays")
    module = LennardJones(numbers, sig, eps, float(cutoff), full_list, length_unit,
                          getattr(torch, dtype)).eval()
    caps = mta.ModelCapabilities(
        outputs={"energy": mta.ModelOutput(unit=energy_unit, sample_kind="atom",
                                           explicit_gradients=[])},
        atomic_types=numbers, interaction_range=float(cutoff), length_unit=length_unit,
        supported_devices=["cpu", "cuda"], dtype=dtype)
    meta = mta.ModelMetadata(name="lennard-jones", description="truncated and shifted LJ")
    return mta.AtomisticModel(module, meta, caps)


__all__ = ["MetatomicModel", "MetatomicFormat", "is_metatomic_file", "lennard_jones"]
