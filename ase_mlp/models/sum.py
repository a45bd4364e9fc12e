"""Sum of models (e.g. ZBL + SNAP, the LAMMPS ``hybrid/overlay`` idiom)."""

from __future__ import annotations

from ase_mlp.models.base import CompositeModel, assemble, register_model
from ase_mlp.models.committee import Committee


@register_model
class SumModel(CompositeModel):
    """Energies and forces of several models added up, on one shared graph.

    All members must use the same element list (same order). The graph is
    built once with the largest cutoffs; each member selects its own edges.
    Per-atom energies and virials exist only when every member gives them
    (:attr:`per_atom_energies`, :attr:`per_atom_virials`, combined by
    :class:`~ase_mlp.models.base.CompositeModel`): a metatomic member without them
    makes :class:`~ase_mlp.calculators.MLPCalculator` refuse ``energies`` or
    ``stresses`` for the whole sum.
    """

    min_members = 1
    member_name = "SumModel"

    def _too_few(self, n: int) -> str:
        return "SumModel needs at least one model"

    @property
    def edge_decomposable(self) -> bool:
        return all(m.edge_decomposable for m in self.models)

    def compute(self, graph, vectors, need_gradient):
        if not self.edge_decomposable:
            raise TypeError("this SumModel has members with reciprocal-space terms "
                            "(e.g. Electrostatics): call it (forward), not compute()")
        energies, grad = None, None
        for m in self.models:
            e, g = m.compute(graph, vectors, need_gradient)
            energies = e if energies is None else energies + e
            if g is not None:
                grad = g if grad is None else grad + g
        return energies, grad

    @property
    def has_committee(self) -> bool:
        return any(isinstance(m, Committee) for m in self.models)

    def forward(self, graph, forces: bool = True, stress: bool = True) -> dict:
        """As :meth:`Model.forward`; members with long-range terms add their own results.

        With a Committee member, also its spread: fixed members (ZBL,
        Electrostatics) add the same amount to every committee member, so the
        spread (``energy_std``, ``forces_std``, ``virial_std``) is the
        committee's own (several committees: variances add).
        """
        if not self.has_committee and self.edge_decomposable:
            return super().forward(graph, forces=forces, stress=stress)
        vectors = graph.edge_vectors()
        need = forces or stress
        energies, grad = None, None
        for m in self.models:
            if isinstance(m, Committee) or not m.edge_decomposable:
                continue
            e, g = m.compute(graph, vectors, need)
            energies = e if energies is None else energies + e
            if g is not None:
                grad = g if grad is None else grad + g
        if energies is None:
            out = None
        else:
            out = assemble(graph, vectors, energies, grad, forces=forces, stress=stress)
        var = {}
        for m in self.models:
            if isinstance(m, Committee):
                res = m.forward(graph, forces=forces, stress=stress)
                for k in ("energy_std", "forces_std", "virial_std"):
                    if k in res:
                        var[k] = var.get(k, 0) + res.pop(k) ** 2
            elif not m.edge_decomposable:
                res = m.forward(graph, forces=forces, stress=stress)
            else:
                continue
            out = res if out is None else {k: out[k] + res[k] for k in out}
        out.update({k: v.sqrt() for k, v in var.items()})
        return out
