"""Committees of models: mean prediction and the spread between members."""

from __future__ import annotations

import torch

from ase_mlp.models.base import CompositeModel, assemble, register_model


@register_model
class Committee(CompositeModel):
    """N models of the same elements evaluated together.

    As a plain :class:`Model` it predicts the committee mean. :meth:`forward`
    also returns the spread: ``energy_std`` (per structure), ``forces_std``
    (per atom: ``sqrt(mean_m |F_m - <F>|^2)``, the usual "force deviation")
    and ``virial_std`` (per structure, 3x3, component-wise). Standard
    deviations use ``1/N`` (population), like DP-GEN's model deviation.
    Per-atom energies and virials (the means) exist only when every member gives
    them (:attr:`per_atom_energies`, :attr:`per_atom_virials`).
    """

    min_members = 2
    member_name = "committee"

    def _too_few(self, n: int) -> str:
        return f"a committee needs at least two members, got {n}"

    def __len__(self):
        return len(self.models)

    def compute(self, graph, vectors, need_gradient):
        energies, grad = None, None
        n = len(self.models)
        for m in self.models:
            e, g = m.compute(graph, vectors, need_gradient)
            energies = e / n if energies is None else energies + e / n
            if g is not None:
                grad = g / n if grad is None else grad + g / n
        return energies, grad

    def forward(self, graph, forces: bool = True, stress: bool = True) -> dict:
        vectors = graph.edge_vectors()
        outs = []
        for m in self.models:
            e, g = m.compute(graph, vectors, need_gradient=forces or stress)
            outs.append(assemble(graph, vectors, e, g, forces=forces, stress=stress))
        res = {}
        for key in outs[0]:
            stack = torch.stack([o[key] for o in outs])
            res[key] = stack.mean(0)
            if key == "energy":
                res["energy_std"] = stack.std(0, unbiased=False)
            elif key == "forces":
                dev = ((stack - res[key]) ** 2).sum(-1).mean(0)
                res["forces_std"] = dev.sqrt()
            elif key == "virial":
                res["virial_std"] = stack.std(0, unbiased=False)
        return res
