"""Sum of models (e.g. ZBL + SNAP, the LAMMPS ``hybrid/overlay`` idiom)."""

from __future__ import annotations

import numpy as np
import torch

from ase_mlp.models.base import Model, register_model


@register_model
class SumModel(Model):
    """Energies and forces of several models added up, on one shared graph.

    All members must use the same element list (same order). The graph is
    built once with the largest cutoffs; each member selects its own edges.
    """

    def __init__(self, *models: Model):
        super().__init__()
        if len(models) == 1 and isinstance(models[0], (list, tuple)):
            models = tuple(models[0])
        if not models:
            raise ValueError("SumModel needs at least one model")
        elements = list(models[0].elements)
        for m in models[1:]:
            if list(m.elements) != elements:
                raise ValueError(
                    f"SumModel members must share one element list; got {elements} and "
                    f"{list(m.elements)}"
                )
        self.elements = elements
        self.models = torch.nn.ModuleList(models)

    def pair_cutoffs(self) -> np.ndarray:
        return np.maximum.reduce([m.pair_cutoffs() for m in self.models])

    def config(self) -> dict:
        return {}

    def compute(self, graph, vectors, need_gradient):
        energies, grad = None, None
        for m in self.models:
            e, g = m.compute(graph, vectors, need_gradient)
            energies = e if energies is None else energies + e
            if g is not None:
                grad = g if grad is None else grad + g
        return energies, grad
