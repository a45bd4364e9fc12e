"""TorchScript-able Lennard-Jones module behind :func:`ase_mlp.models.metatomic.lennard_jones`
(a module of its own: it imports metatomic at import time, which the entry point must not;
no ``from __future__ import annotations``: metatomic checks the real annotations)."""

from typing import Dict, List, Optional

import numpy as np
import torch
from metatensor.torch import Labels, TensorBlock, TensorMap
from metatomic.torch import ModelOutput, NeighborListOptions, System


class LennardJones(torch.nn.Module):
    """Truncated and shifted LJ over one neighbour list (see ``lennard_jones``)."""

    def __init__(self, numbers: List[int], sigma, epsilon, cutoff: float, full_list: bool,
                 length_unit: str, dtype: torch.dtype):
        super().__init__()
        self.options = NeighborListOptions(cutoff=cutoff, full_list=full_list, strict=True)
        self.cutoff = cutoff
        self.full_list = full_list
        lookup = torch.full((max(numbers) + 1,), -1, dtype=torch.long)
        lookup[torch.tensor(numbers)] = torch.arange(len(numbers))
        self.register_buffer("type_index", lookup)
        self.register_buffer("sigma", torch.tensor(np.array(sigma), dtype=dtype))
        self.register_buffer("epsilon", torch.tensor(np.array(epsilon), dtype=dtype))

    def requested_neighbor_lists(self) -> List[NeighborListOptions]:
        return [self.options]

    def forward(self, systems: List[System], outputs: Dict[str, ModelOutput],
                selected_atoms: Optional[Labels] = None) -> Dict[str, TensorMap]:
        if "energy" not in outputs:
            return {}
        per_atom = outputs["energy"].sample_kind == "atom"
        values: List[torch.Tensor] = []
        samples: List[torch.Tensor] = []
        for k, system in enumerate(systems):
            nl = system.get_neighbor_list(self.options)
            pairs = nl.samples.values
            first = pairs[:, 0].to(torch.long)
            second = pairs[:, 1].to(torch.long)
            r = torch.linalg.vector_norm(nl.values.reshape(-1, 3), dim=1)
            kind = self.type_index[system.types.to(torch.long)]
            a = kind[first]
            b = kind[second]
            s = self.sigma[a, b]
            e = self.epsilon[a, b]
            sr6 = (s / r) ** 6
            src6 = (s / self.cutoff) ** 6
            pair = 4.0 * e * (sr6 * sr6 - sr6 - (src6 * src6 - src6))
            pair = torch.where(r < self.cutoff, pair, torch.zeros_like(pair))
            if self.full_list:
                pair = 0.5 * pair
            n = len(system)
            atom = torch.zeros(n, dtype=system.positions.dtype, device=pair.device)
            atom = atom.index_add(0, first, 0.5 * pair).index_add(0, second, 0.5 * pair)
            ids = torch.arange(n, dtype=torch.int32, device=atom.device)
            if per_atom:
                values.append(atom)
                samples.append(torch.stack([torch.full_like(ids, k), ids], 1))
            else:
                values.append(atom.sum().reshape(1))
                samples.append(torch.tensor([[k]], dtype=torch.int32, device=atom.device))
        names = ["system", "atom"] if per_atom else ["system"]
        device = systems[0].positions.device
        block = TensorBlock(
            values=torch.cat(values).reshape(-1, 1),
            samples=Labels(names, torch.cat(samples)),
            components=torch.jit.annotate(List[Labels], []),
            properties=Labels(["energy"], torch.tensor([[0]], device=device)),
        )
        return {"energy": TensorMap(Labels(["_"], torch.tensor([[0]], device=device)), [block])}
