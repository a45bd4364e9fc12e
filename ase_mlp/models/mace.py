"""Run MACE models (``mace-torch``, MIT) as ase_mlp models.

MACE (Batatia et al., NeurIPS 2022, arXiv:2206.07697) writes a trained model as a
pickled torch module (``torch.save(model)``, usually ``*.model``; ``mace_run_train``
writes ``<name>.model`` and ``<name>_compiled.model``). :class:`MaceModel` wraps such a
module in the :class:`~ase_mlp.models.base.Model` contract, so
:class:`~ase_mlp.calculators.MLPCalculator` (single structures and ``calculate_batch``),
:class:`~ase_mlp.dynamics.ResidentMD`, the thermostats, :class:`SumModel` and
``ase-mlp ipi-driver`` run it like any other model::

    calc = MLPCalculator.from_file("mace.model")       # the ``mace`` entry point
    calc = MLPCalculator(MaceModel.from_file("mp.model", head="pbe"))

**Evaluation.** A MACE energy depends on the positions only through the edge vectors
``r_ij = x_j - x_i + S_ij @ cell`` of the atoms closer than ``r_max`` (the radial
envelope vanishes smoothly at ``r_max``; the ``E0`` reference energies are constants).
:meth:`MaceModel.compute` therefore gives the model our edge vectors directly: MACE's
batch dictionary (the keys of ``mace/data/atomic_data.py``: ``positions``,
``edge_index`` as ``(sender, receiver)``, ``shifts``, ``unit_shifts``, ``cell``,
``node_attrs``, ``batch``, ``ptr``, ``head``) gets zero positions and the edge vectors
as its Cartesian ``shifts``, so MACE's own ``vectors = x[receiver] - x[sender] +
shifts`` are ours bit for bit (ase_mlp's edge ``(i, j)`` is MACE's sender ``i``,
receiver ``j``, the convention of MACE's matscipy neighbour list). One backward pass
gives ``dE/dr_ij``; forces, the virial and per-atom virials then follow from the shared
:func:`~ase_mlp.models.base.assemble`, which is exact here (MACE's own
``compute_atomic_stresses`` splits each edge the same way). ``node_attrs`` is the
one-hot of the model's ``atomic_numbers`` (MACE's ``z_table``), whose order is
:attr:`MaceModel.elements`.

**Heads.** Multi-head models (fine-tuned foundation models) evaluate one head, chosen
by ``head=`` (default as in ``MACECalculator``: the only head, else the one named
``default`` in any case); an unknown head is refused (``MACECalculator`` falls back to
the last head with a warning).

**Refused:** classes other than ``mace.modules.MACE`` and ``ScaleShiftMACE`` (dipole,
polarisability, MACELES and PolarMACE models with long-range terms), models with a
joint embedding of extra inputs (total charge, spin, fields: ase_mlp provides none),
checkpoints or state dicts instead of a pickled module.

**Units.** A MACE file carries no unit metadata; like ``MACECalculator`` (whose
``energy_units_to_eV`` and ``length_units_to_A`` default to 1) the model is taken to be
in eV and Å, which is what MACE's training scripts assume.

**Security.** Loading unpickles the file (``torch.load(..., weights_only=False)``, as
MACE's calculators do): it can run arbitrary code. Open only files you trust.

**e3nn.** mace-torch 0.3.16 pins e3nn 0.4.4; its maintainers say that evaluation works
with e3nn >= 0.5 (training is not supported there). A model pickled under one e3nn may
fail to unpickle under another: the error then names the installed e3nn and mace-torch.

:func:`small_mace` builds a small ``ScaleShiftMACE`` with seeded random weights by MACE's
own constructor: the reference model of the tests, benchmarks and examples.

Requires ``pip install 'ase_mlp[mace]'`` (``mace-torch``).
"""

from __future__ import annotations

import hashlib
import pathlib
import zipfile
from typing import ClassVar

import numpy as np
import torch
from ase.data import chemical_symbols

from ase_mlp.models.base import Model, check_finite_parameters, edges_within
from ase_mlp.neighbors.graph import Graph


_INSTALL = "pip install 'ase_mlp[mace]' (mace-torch)"


class MaceFormatError(ValueError):
    """A file cannot be used as a MACE energy model; the message names the file."""


def _mace():
    try:
        import mace
        from mace.modules.models import MACE, ScaleShiftMACE
    except ImportError as err:
        raise ImportError(f"MACE models need mace-torch: {_INSTALL} ({err})") from err
    return mace, MACE, ScaleShiftMACE


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for dist in ("e3nn", "mace-torch"):
        try:
            out.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            out.append(f"{dist} not installed")
    return ", ".join(out)


def is_mace_file(path) -> bool:
    """Whether ``path`` is a ``torch.save`` zip whose pickle refers to ``mace.modules``
    (a pickled MACE module). Reads the zip directory and the pickle record only."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
            if len(names) != 1:
                return False
            with zf.open(names[0]) as fh:
                return b"mace.modules" in fh.read()
    except (OSError, zipfile.BadZipFile, ValueError, RuntimeError):
        return False


def _is_torchscript(path) -> bool:
    """A ``torch.jit.save`` archive: a zip with a ``<name>/code/`` folder."""
    try:
        with zipfile.ZipFile(path) as zf:
            return any("/code/" in n for n in zf.namelist())
    except (OSError, zipfile.BadZipFile, ValueError):
        return False


def _file_digest(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _pick_head(heads: list[str], head: str | None, where: str) -> int:
    if head is not None:
        if head not in heads:
            raise ValueError(f"{where}: the model has no head {head!r}; its heads are {heads}")
        return heads.index(head)
    if len(heads) == 1:
        return 0
    default = [k for k, h in enumerate(heads) if h.lower() == "default"]
    if not default:
        raise ValueError(f"{where}: the model has several heads {heads} and none is called "
                         "'default': choose one with head=")
    return default[0]


class MaceModel(Model):
    """A MACE energy model (``mace.modules.MACE`` or ``ScaleShiftMACE``) as an ase_mlp
    model.

    Parameters
    ----------
    model : torch.nn.Module
        The MACE module (``torch.load(path, weights_only=False)`` of a ``.model`` file,
        or one built in this process). It becomes a submodule: the calculator's
        ``dtype`` and ``device`` apply to it (as ``MACECalculator(default_dtype=...)``).
        It is put in eval mode and its parameters frozen (``requires_grad=False``), as
        MACE's calculators do.
    head : str, optional
        Head of a multi-head model; default the only head, else the one called
        ``default``.
    source : str, optional
        The file it came from (for messages and the calculator's parameters).

    The element list is the model's ``atomic_numbers`` (its z_table, in that order); the
    cutoff is ``r_max`` for every pair of elements.
    """

    #: the energy is a function of the edge vectors within r_max (plus constants)
    edge_decomposable: ClassVar[bool] = True
    #: per-atom energies: MACE's ``node_energy`` (E0 included)
    per_atom_energies: ClassVar[bool] = True
    #: per-atom virials from dE/dr_ij: exact, the energy depends on edge vectors only
    per_atom_virials: ClassVar[bool] = True
    #: MLPCalculator's default chunk of ``calculate_batch`` on the CPU: MACE's per-atom cost
    #: grows with the size of a call there (16 x 64 atoms: 5.0 s in 128-atom calls, 8.0 s
    #: in 512, ~10.5 s in 2048; benchmarks/bench_mace.py)
    cpu_batch_atoms: ClassVar[int] = 128

    def __init__(self, model, *, head: str | None = None, source: str | None = None):
        super().__init__()
        _, MACE, ScaleShiftMACE = _mace()
        where = source or "MACE model"
        if not isinstance(model, torch.nn.Module):
            hint = (" (a checkpoint or state dict: evaluate the .model file that "
                    "mace_run_train writes, a pickled module)" if isinstance(model, dict) else "")
            raise MaceFormatError(f"{where}: expected a pickled MACE module, got "
                                  f"{type(model).__name__}{hint}")
        if type(model) not in (MACE, ScaleShiftMACE):
            raise MaceFormatError(
                f"{where}: {type(model).__module__}.{type(model).__name__} is not supported; "
                "ase_mlp evaluates mace.modules.MACE and ScaleShiftMACE energy models "
                "(not dipole/polarisability models, nor MACELES/PolarMACE with long-range "
                "terms)")
        if hasattr(model, "joint_embedding"):
            specs = sorted(getattr(model, "embedding_specs", {}) or {})
            raise MaceFormatError(
                f"{where}: the model embeds extra inputs {specs} (total charge, spin, "
                "fields), which ase_mlp does not provide")
        try:
            zs = [int(z) for z in model.atomic_numbers]
            r_max = float(model.r_max)
        except (AttributeError, TypeError, ValueError) as err:
            raise MaceFormatError(f"{where}: no atomic_numbers / r_max buffers ({err})") from err
        elements = []
        for z in zs:
            if not 0 < z < len(chemical_symbols):
                raise MaceFormatError(f"{where}: atomic number {z} in the model's z_table is "
                                      "not a chemical element")
            elements.append(chemical_symbols[z])
        if not elements:
            raise MaceFormatError(f"{where}: the model's z_table (atomic_numbers) is empty")
        if not (np.isfinite(r_max) and r_max > 0.0):
            raise MaceFormatError(f"{where}: r_max = {r_max} is not a positive cutoff")
        try:
            check_finite_parameters(model, where=where)
        except ValueError as err:
            raise MaceFormatError(str(err)) from None
        heads = list(getattr(model, "heads", None) or ["Default"])
        self.head_index = _pick_head(heads, head, where)
        self.head = heads[self.head_index]
        self.heads = heads
        self.elements = elements
        self._rc = r_max
        self.mace_model = model.eval()
        for p in self.mace_model.parameters():
            p.requires_grad_(False)
        self.source_file = source

    # -- construction ------------------------------------------------------
    @classmethod
    def from_file(cls, path, *, head: str | None = None) -> "MaceModel":
        """Load a pickled MACE module (``torch.save(model)``; ``*.model``).

        This unpickles the file (``weights_only=False``), which can run arbitrary code:
        only for files you trust.
        """
        _mace()
        path = pathlib.Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"MACE model file not found: {path}")
        if _is_torchscript(path):
            raise MaceFormatError(
                f"{path}: a TorchScript archive (mace_run_train's *_compiled.model, or "
                "another torch.jit.save file), not a pickled MACE module: use the uncompiled "
                ".model file written beside it")
        try:
            model = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as err:  # noqa: BLE001 - unpickling raises anything
            text = f"{type(err).__name__}: {err}"
            if "e3nn" in text:
                raise MaceFormatError(
                    f"{path}: cannot unpickle the MACE model with the installed "
                    f"{_versions()} ({text}); mace-torch pins e3nn 0.4.4 and models pickled "
                    "under one e3nn may not load under another: load it where it was saved "
                    "and re-save it, or install the e3nn it was saved with") from err
            raise MaceFormatError(f"{path}: cannot load it as a MACE model ({text}; "
                                  f"{_versions()})") from err
        out = cls(model, head=head, source=str(path.resolve()))
        out._file_digest = _file_digest(path)
        return out

    # -- Model contract ----------------------------------------------------
    def pair_cutoffs(self) -> np.ndarray:
        n = len(self.elements)
        return np.full((n, n), self._rc)

    def config(self) -> dict:
        """What identifies the model (not a rebuildable config: keep the .model file)."""
        return {"file": self.source_file, "head": self.head,
                "file_sha256": getattr(self, "_file_digest", None)}

    def save(self, path) -> None:
        raise TypeError(
            "a MaceModel is not saved in ase_mlp's format: keep the MACE .model file "
            f"({self.source_file}) or torch.save(model.mace_model, path)")

    def extra_repr(self) -> str:
        return f"elements={self.elements}, r_max={self._rc:.4f}, head={self.head!r}"

    def compute(self, graph: Graph, vectors: torch.Tensor, need_gradient: bool
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        # callers run models under no_grad: dE/dr_ij comes from autograd here
        with torch.enable_grad():
            return self._compute(graph, vectors, bool(need_gradient))

    def _compute(self, graph: Graph, vectors: torch.Tensor, need_gradient: bool):
        model = self.mace_model
        dtype = next(model.parameters()).dtype
        device = vectors.device
        out_dtype = vectors.dtype
        n_atoms, n_sys = graph.n_atoms, graph.n_systems
        rc = torch.full((len(self.elements),) * 2, self._rc, dtype=vectors.dtype,
                        device=device)
        idx, _ = edges_within(graph, vectors.detach(), rc)
        grad_through = vectors.requires_grad   # a caller differentiating our result
        vec = vectors[idx].to(dtype)
        if not grad_through:
            vec = vec.detach().requires_grad_(need_gradient)
        sizes = torch.bincount(graph.system, minlength=n_sys)
        ptr = torch.cat([sizes.new_zeros(1), torch.cumsum(sizes, 0)])
        node_attrs = torch.nn.functional.one_hot(graph.species, len(self.elements)).to(dtype)
        data = {
            # zero positions: MACE's vectors x[receiver] - x[sender] + shifts are ours
            "positions": torch.zeros((n_atoms, 3), dtype=dtype, device=device),
            "edge_index": graph.edge_index[:, idx],
            "shifts": vec,
            "unit_shifts": graph.shifts[idx].to(dtype),
            "cell": graph.cells.detach().to(dtype).reshape(3 * n_sys, 3),
            "node_attrs": node_attrs,
            "batch": graph.system,
            "ptr": ptr,
            "head": torch.full((n_sys,), self.head_index, dtype=torch.long, device=device),
        }
        res = model(data, training=False, compute_force=False, compute_virials=False,
                    compute_stress=False)
        energies = res["node_energy"]
        if not need_gradient:
            return energies.detach().to(out_dtype), None
        (g,) = torch.autograd.grad(res["energy"].sum(), [vec], allow_unused=True,
                                   create_graph=grad_through)
        grad = torch.zeros_like(vectors)
        if g is not None:
            grad = grad.index_copy(0, idx, g.to(out_dtype))
        if not grad_through:
            energies, grad = energies.detach(), grad.detach()
        return energies.to(out_dtype), grad


class MaceFormat:
    """Entry point (group ``ase_mlp.model_formats``): one pickled MACE module."""

    name = "mace"

    @staticmethod
    def can_load(paths) -> bool:
        return len(paths) == 1 and is_mace_file(paths[0])

    @staticmethod
    def load(paths) -> MaceModel:
        return MaceModel.from_file(paths[0])


def small_mace(elements=("Al", "Cu"), *, r_max: float = 4.5, channels: int = 8,
               max_L: int = 1, max_ell: int = 1, correlation: int = 2,
               num_interactions: int = 2, num_bessel: int = 6, radial_mlp=(16, 16),
               avg_num_neighbors: float = 12.0, e0=None, scale: float = 0.5,
               pair_repulsion: bool = True, seed: int = 0,
               dtype: torch.dtype = torch.float64):
    """A small ``mace.modules.ScaleShiftMACE`` with random weights (seeded), built by
    MACE's own constructor: a reference model for the tests and examples.

    Save it with ``torch.save(model, "small.model")``. ``pair_repulsion`` adds MACE's
    ZBL core (a physical repulsion at short range, so molecular dynamics on the random
    potential stays well behaved). ``channels`` x (0e + 1o) hidden features for
    ``max_L=1`` (``channels`` x 0e for 0); ``max_ell``: spherical harmonics of the edges;
    ``e0`` are the per-element reference energies (eV;
    default ``-1, -2, ...``). The weights are drawn inside ``torch.random.fork_rng``,
    so the global generator is left as it was.
    """
    _mace()
    from ase.data import atomic_numbers
    from e3nn import o3
    from mace.modules import interaction_classes

    _, _, ScaleShiftMACE = _mace()
    zs = [atomic_numbers[e] for e in elements]
    e0 = -np.arange(1.0, len(zs) + 1) if e0 is None else np.asarray(e0, dtype=float)
    block = interaction_classes["RealAgnosticResidualInteractionBlock"]
    if max_L not in (0, 1):
        raise ValueError(f"max_L must be 0 or 1, got {max_L}")
    hidden = f"{channels}x0e" + (f" + {channels}x1o" if max_L == 1 else "")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ScaleShiftMACE(
            r_max=float(r_max), num_bessel=num_bessel, num_polynomial_cutoff=5,
            max_ell=max_ell, interaction_cls=block, interaction_cls_first=block,
            num_interactions=num_interactions, num_elements=len(zs),
            hidden_irreps=o3.Irreps(hidden),
            MLP_irreps=o3.Irreps(f"{min(channels, 16)}x0e"), gate=torch.nn.functional.silu,
            atomic_energies=e0, avg_num_neighbors=float(avg_num_neighbors),
            atomic_numbers=zs, correlation=correlation, radial_MLP=list(radial_mlp),
            pair_repulsion=pair_repulsion,
            atomic_inter_scale=float(scale), atomic_inter_shift=0.0)
    return model.to(dtype).eval()


__all__ = ["MaceModel", "MaceFormat", "MaceFormatError", "is_mace_file", "small_mace"]
