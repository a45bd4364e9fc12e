"""The contract every ase_mlp model fulfils, and the shared force/stress assembly.

A model is a :class:`torch.nn.Module` over a batched :class:`~ase_mlp.neighbors.Graph`.
It returns per-atom energies and, when asked, the gradient of the total energy
with respect to every edge vector ``r_ij`` (``dE/dr_ij``, shape ``(n_edges, 3)``).
Forces, the virial and per-atom virials all follow from those edge gradients
(:func:`assemble`), so analytic models (SNAP's adjoint route, ZBL) and
autograd-based models share one code path.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from ase.data import atomic_numbers

from ase_mlp._util import check_elements
from ase_mlp.neighbors.graph import Graph, edges_within


MODEL_REGISTRY: dict[str, type["Model"]] = {}


def register_model(cls):
    """Class decorator: make a model class loadable by name from saved files."""
    MODEL_REGISTRY[cls.__name__] = cls
    return cls


class Model(torch.nn.Module):
    """Base class of ase_mlp models.

    Subclasses set ``self.elements`` (chemical symbols; their order defines the
    species index used in graphs), implement :meth:`pair_cutoffs`,
    :meth:`compute` and :meth:`config`, and register with
    :func:`register_model` so ``ase_mlp.models.load`` can rebuild them.
    """

    elements: list[str]
    #: energy/length units of the model (ASE's)
    units: ClassVar[dict] = {"energy": "eV", "length": "Angstrom"}
    #: True when the energy is a sum over edges within the cutoffs (:meth:`compute`).
    #: Models with reciprocal-space terms (Electrostatics) set False and implement
    #: :meth:`forward` only; :class:`SumModel` adds their results.
    edge_decomposable: ClassVar[bool] = True
    #: Whether :meth:`forward` gives per-atom energies (``energies``) and per-atom
    #: virials (``atom_virial``) that add up to the totals. Every model built on
    #: :meth:`compute` does (:func:`assemble`). A wrapped foreign model may not (a
    #: metatomic model without per-atom energy output, or one whose energy depends on
    #: the positions outside its neighbour lists), and may find out only during a call:
    #: it then sets the attribute False on the instance and returns NaN placeholders.
    #: :class:`~ase_mlp.calculators.MLPCalculator` reads both after every call and
    #: refuses ``energies`` / ``stresses`` (``PropertyNotImplementedError``) instead of
    #: returning NaN. :class:`CompositeModel` combines its members (all must support it).
    per_atom_energies: bool = True
    per_atom_virials: bool = True

    # -- description -----------------------------------------------------
    def pair_cutoffs(self) -> np.ndarray:
        """(n_elements, n_elements) array of interaction cutoffs in Å (0 = none)."""
        raise NotImplementedError

    @property
    def cutoff(self) -> float:
        """Largest interaction cutoff, Å."""
        return float(np.max(self.pair_cutoffs()))

    @property
    def atomic_numbers(self) -> list[int]:
        return [atomic_numbers[e] for e in self.elements]

    def config(self) -> dict:
        """JSON-able keyword arguments that rebuild the (untrained) module."""
        raise NotImplementedError

    # -- evaluation ------------------------------------------------------
    def compute(
        self, graph: Graph, vectors: torch.Tensor, need_gradient: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Return per-atom energies (n_atoms,) and dE/dr_ij (n_edges, 3) or None.

        ``vectors`` are the edge vectors of ``graph`` (which may hold edges
        longer than this model's cutoffs: select with :func:`edges_within`).
        """
        raise NotImplementedError

    def forward(self, graph: Graph, forces: bool = True, stress: bool = True) -> dict:
        vectors = graph.edge_vectors()
        energies, grad = self.compute(graph, vectors, need_gradient=forces or stress)
        return assemble(graph, vectors, energies, grad, forces=forces, stress=stress)

    # -- persistence -----------------------------------------------------
    def save(self, path) -> None:
        """Save in ase_mlp's own versioned format (see :mod:`ase_mlp.models.serialization`)."""
        from ase_mlp.models.serialization import save

        save(self, path)

    def extra_repr(self) -> str:
        return f"elements={self.elements}, cutoff={self.cutoff:.4f}"


class CompositeModel(Model):
    """A model made of member models of one element list (sums, committees).

    Subclasses set ``min_members`` and the ``member_name`` used in messages and
    implement :meth:`compute`; saving stores the members (no config of its own).
    """

    min_members: ClassVar[int] = 1
    member_name: ClassVar[str] = "composite"

    def __init__(self, *models: Model):
        super().__init__()
        if len(models) == 1 and isinstance(models[0], (list, tuple)):
            models = tuple(models[0])
        if len(models) < self.min_members:
            raise ValueError(self._too_few(len(models)))
        elements = list(models[0].elements)
        for m in models[1:]:
            if list(m.elements) != elements:
                raise ValueError(
                    f"{self.member_name} members must share one element list; got {elements} "
                    f"and {list(m.elements)}")
        self.elements = elements
        self.models = torch.nn.ModuleList(models)

    def _too_few(self, n: int) -> str:
        return f"{type(self).__name__} needs at least {self.min_members} member(s), got {n}"

    def pair_cutoffs(self) -> np.ndarray:
        return np.maximum.reduce([m.pair_cutoffs() for m in self.models])

    @property
    def per_atom_energies(self) -> bool:
        """True when every member gives per-atom energies (a sum or mean of NaN
        placeholders is NaN): read after a call, as members may find out during one."""
        return all(m.per_atom_energies for m in self.models)

    @property
    def per_atom_virials(self) -> bool:
        """True when every member gives per-atom virials (see :attr:`Model.per_atom_virials`)."""
        return all(m.per_atom_virials for m in self.models)

    def config(self) -> dict:
        return {}


def assemble(
    graph: Graph,
    vectors: torch.Tensor,
    energies: torch.Tensor,
    edge_grad: torch.Tensor | None,
    *,
    forces: bool = True,
    stress: bool = True,
) -> dict:
    """Turn per-atom energies and edge gradients into ASE-like results.

    Returns a dict of tensors: ``energies`` (n_atoms,), ``energy`` (n_systems,),
    and when requested ``forces`` (n_atoms, 3), ``virial`` (n_systems, 3, 3) and
    ``atom_virial`` (n_atoms, 3, 3). The virial is the usual
    ``W = sum_edges r_ij (x) F_ij = -sum_edges r_ij (x) dE/dr_ij`` (LAMMPS's sign:
    positive under compression), so ASE's stress is ``-W / volume``. Per-atom
    virials split each edge half to each end (as LAMMPS does) and are
    symmetrised (LAMMPS keeps the upper triangle, see the comment below).
    """
    n_atoms, n_sys = graph.n_atoms, graph.n_systems
    out = {"energies": energies}
    e_sys = energies.new_zeros(n_sys).index_add_(0, graph.system, energies)
    out["energy"] = e_sys
    if not (forces or stress):
        return out
    i, j = graph.edge_index
    if edge_grad is None:
        edge_grad = vectors.new_zeros(vectors.shape)
    if _compiled_assembly(vectors, edge_grad):
        from ase_mlp.kernels import sna

        f, atom_w = sna.assemble(graph, vectors, edge_grad, forces, stress)
        if forces:
            out["forces"] = f
        if stress:
            out["atom_virial"] = atom_w
            out["virial"] = vectors.new_zeros((n_sys, 3, 3)).index_add_(0, graph.system, atom_w)
        return out
    if forces:
        f = vectors.new_zeros((n_atoms, 3))
        f.index_add_(0, i, edge_grad)
        f.index_add_(0, j, -edge_grad)
        out["forces"] = f
    if stress:
        # w_ab = -(r_a g_b + r_b g_a) / 2 per edge, half to each end. Symmetrised per
        # edge, so per-atom virials rotate as tensors. LAMMPS's stress/atom keeps the
        # upper triangle of r (x) F instead (xy = dx*fy ...), which depends on the frame
        # for many-body potentials; in LAMMPS's own frame the diagonals and the totals
        # are identical to ours. Built one component at a time: an (E, 3, 3) tensor
        # per edge would be the largest allocation of big systems.
        atom_w = vectors.new_zeros((n_atoms, 3, 3))
        flat = atom_w.view(n_atoms, 9)
        for a in range(3):
            for b in range(a, 3):
                w = -0.25 * (vectors[:, a] * edge_grad[:, b] + vectors[:, b] * edge_grad[:, a])
                col = vectors.new_zeros(n_atoms).index_add_(0, i, w).index_add_(0, j, w)
                flat[:, 3 * a + b] = col
                if a != b:
                    flat[:, 3 * b + a] = col
        out["atom_virial"] = atom_w
        out["virial"] = vectors.new_zeros((n_sys, 3, 3)).index_add_(0, graph.system, atom_w)
    return out


def _compiled_assembly(vectors: torch.Tensor, edge_grad: torch.Tensor) -> bool:
    """Whether :func:`assemble` may use the compiled loop (CPU, no autograd, kernels
    available and not switched off by ``kernel_settings(backend="torch")``)."""
    from ase_mlp.kernels import cpu_loop_usable

    return cpu_loop_usable([vectors, edge_grad])


def check_finite_parameters(model: torch.nn.Module, where: str | None = None) -> None:
    """Raise ``ValueError`` naming the first parameter or buffer of ``model`` that holds
    a NaN or an infinity (a model with one gives NaN energies for every structure).

    ``where`` (e.g. the file the model came from) prefixes the message.
    """
    items = [("parameter", n, t) for n, t in model.named_parameters()]
    items += [("buffer", n, t) for n, t in model.named_buffers()]
    with torch.no_grad():
        bad_item = next(((kind, n, t) for kind, n, t in items
                         if (t.is_floating_point() or t.is_complex()) and t.numel()
                         and not bool(torch.isfinite(t).all())), None)
    if bad_item is None:
        return
    kind, name, t = bad_item
    bad = ~torch.isfinite(t.detach()).cpu()
    idx = tuple(int(k) for k in torch.nonzero(bad)[0])
    value = t.detach().cpu()[idx].item() if idx else t.detach().cpu().item()
    prefix = f"{where}: " if where else ""
    raise ValueError(
        f"{prefix}{type(model).__name__} {kind} {name!r} (shape {tuple(t.shape)}) holds "
        f"{int(bad.sum())} non-finite value(s), first {value} at index {list(idx)}; a model with "
        "NaN or infinite weights gives NaN energies and forces")


def symbols_to_species(symbols, elements: list[str]) -> np.ndarray:
    """Map chemical symbols to species indices; clear error on unknown elements."""
    index = {e: k for k, e in enumerate(elements)}
    out = np.empty(len(symbols), dtype=np.int64)
    for n, s in enumerate(symbols):
        try:
            out[n] = index[s]
        except KeyError:
            raise ValueError(
                f"element {s!r} (atom {n}) is not known to this model, which covers "
                f"{elements}"
            ) from None
    return out


__all__ = ["Model", "CompositeModel", "MODEL_REGISTRY", "register_model", "edges_within",
           "assemble", "symbols_to_species", "check_elements", "check_finite_parameters"]
