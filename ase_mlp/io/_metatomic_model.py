"""The TorchScript metatomic model that :mod:`ase_mlp.io.metatomic_export` writes.

:class:`ScriptEnergyModel` asks for one full neighbour list at the largest cutoff of its
terms, maps atomic numbers to the species index of the exported model's element list,
and adds the per-atom energies of its terms (:class:`~ase_mlp.io._metatomic_snap.ScriptSNAP`,
:class:`~ase_mlp.io._metatomic_zbl.ScriptZBL`; each selects its own pairs and carries
its weight, e.g. ``1/N`` for a committee member). The result is a metatomic ``energy``
output (per atom or per system, honouring ``selected_atoms``); forces and stress come
from autograd in the engine. It imports metatomic at import time and has no
``from __future__ import annotations`` (metatomic checks the real annotations).
"""

from typing import Dict, List, Optional

import torch
from metatensor.torch import Labels, TensorBlock, TensorMap
from metatomic.torch import ModelOutput, NeighborListOptions, System


class ScriptEnergyModel(torch.nn.Module):
    """``E_i = sum_t E_i^(t)`` over ``terms`` (see the module doc)."""

    def __init__(self, terms: List[torch.nn.Module], numbers: List[int], cutoff: float):
        super().__init__()
        self.terms = torch.nn.ModuleList(terms)
        self.options = NeighborListOptions(cutoff=cutoff, full_list=True, strict=True)
        lookup = torch.full((max(numbers) + 1,), -1, dtype=torch.long)
        lookup[torch.tensor(numbers)] = torch.arange(len(numbers))
        self.register_buffer("species_of", lookup)

    def requested_neighbor_lists(self) -> List[NeighborListOptions]:
        return [self.options]

    def _energies(self, system: System) -> torch.Tensor:
        nl = system.get_neighbor_list(self.options)
        pairs = nl.samples.values
        species = self.species_of[system.types.to(torch.long)]
        rij = nl.values.reshape(-1, 3)
        ei = pairs[:, 0].to(torch.long)
        ej = pairs[:, 1].to(torch.long)
        e = torch.zeros(len(system), dtype=system.positions.dtype,
                        device=system.positions.device)
        for term in self.terms:
            e = e + term(species, rij, ei, ej)
        return e

    def forward(self, systems: List[System], outputs: Dict[str, ModelOutput],
                selected_atoms: Optional[Labels] = None) -> Dict[str, TensorMap]:
        if "energy" not in outputs:
            return {}
        per_atom = outputs["energy"].sample_kind == "atom"
        device = systems[0].positions.device
        values: List[torch.Tensor] = []
        samples: List[torch.Tensor] = []
        for k, system in enumerate(systems):
            e = self._energies(system)
            ids = torch.arange(len(system), dtype=torch.int32, device=device)
            if selected_atoms is not None:
                sel = selected_atoms.values
                mine = sel[sel[:, 0] == k][:, 1]
                e = e[mine.to(torch.long)]
                ids = mine.to(torch.int32)
            if per_atom:
                values.append(e)
                samples.append(torch.stack([torch.full_like(ids, k), ids], 1))
            else:
                values.append(e.sum().reshape(1))
                samples.append(torch.tensor([[k]], dtype=torch.int32, device=device))
        block = TensorBlock(
            values=torch.cat(values).reshape(-1, 1),
            samples=Labels(["system", "atom"] if per_atom else ["system"],
                           torch.cat(samples)),
            components=torch.jit.annotate(List[Labels], []),
            properties=Labels(["energy"], torch.tensor([[0]], device=device)),
        )
        return {"energy": TensorMap(Labels(["_"], torch.tensor([[0]], device=device)),
                                    [block])}
