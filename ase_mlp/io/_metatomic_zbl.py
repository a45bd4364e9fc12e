"""TorchScript twin of :class:`ase_mlp.models.ZBL` for :mod:`ase_mlp.io.metatomic_export`.

The pair energy of LAMMPS ``pair_style zbl`` (screened Coulomb plus the switching
polynomial, see :mod:`ase_mlp.models.zbl`) from the per-species-pair tables that
:func:`ase_mlp.models.zbl.zbl_pair_coefficients` fills (``d``, ``zze``, ``sw1..sw5``).
Over a full list of directed pairs each direction gives half the pair energy to its
centre atom, LAMMPS's per-atom split. No ``from __future__ import annotations``.
"""

import torch


class ScriptZBL(torch.nn.Module):
    """Per-atom ZBL energies ``scale * 1/2 sum_j E(r_ij)`` over pairs with ``r < outer``."""

    def __init__(self, d: torch.Tensor, zze: torch.Tensor, sw: torch.Tensor,
                 c: torch.Tensor, inner: float, outer: float, scale: float):
        super().__init__()
        self.inner = inner
        self.outer = outer
        self.scale = scale
        self.register_buffer("d", d)        # (n_el, n_el, 4) 1/Å
        self.register_buffer("zze", zze)    # (n_el, n_el) eV Å
        self.register_buffer("sw", sw)      # (n_el, n_el, 5)
        self.register_buffer("c", c)        # (4,)

    def forward(self, species: torch.Tensor, rij: torch.Tensor, ei: torch.Tensor,
                ej: torch.Tensor) -> torch.Tensor:
        dtype = rij.dtype
        rsq = (rij * rij).sum(1)
        keep = torch.nonzero((rsq < self.outer * self.outer) & (rsq > 1e-20)).squeeze(1)
        i = ei[keep]
        si, sj = species[i], species[ej[keep]]
        r = torch.sqrt(rsq[keep])
        d = self.d.to(dtype)[si, sj]
        zze = self.zze.to(dtype)[si, sj]
        sw = self.sw.to(dtype)[si, sj]
        ex = torch.exp(-d * r.unsqueeze(1))
        s = ex @ self.c.to(dtype)
        x = (r - self.inner).clamp(min=0.0)
        energy = zze * s / r + sw[:, 4] + x * x * x * (sw[:, 2] + sw[:, 3] * x)
        out = torch.zeros(species.shape[0], dtype=dtype, device=rij.device)
        return out.index_add(0, i, (0.5 * self.scale) * energy)
