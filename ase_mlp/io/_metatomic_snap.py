"""TorchScript twin of linear SNAP for :func:`ase_mlp.io.metatomic_export.export_metatomic`.

The energy path of :class:`ase_mlp.descriptors.Bispectrum` (``_edge_kernel`` without
adjoint, ``_densities``, ``_atom_block``) rewritten functionally in real arithmetic, over
the same index tables, so that ``torch.jit.script`` compiles it and autograd gives the
forces and the stress. A module of its own: it imports metatomic at import time, and has
no ``from __future__ import annotations`` (metatomic checks the real annotations).
"""

from typing import Dict, List, Optional, Tuple

import torch
from metatensor.torch import Labels, TensorBlock, TensorMap
from metatomic.torch import ModelOutput, NeighborListOptions, System


class _Layer(torch.nn.Module):
    """One level ``j`` of the Wigner recursion: coefficients and sizes."""

    def __init__(self, j: int, h: int, ca: torch.Tensor, cb: torch.Tensor,
                 mirror: torch.Tensor, nj: int, mirrored: bool):
        super().__init__()
        self.j = j
        self.h = h
        self.nj = nj
        self.mirrored = mirrored
        self.register_buffer("ca", ca)
        self.register_buffer("cb", cb)
        self.register_buffer("mirror", mirror)


class ScriptLinearSNAP(torch.nn.Module):
    """``E_i = beta_0 + beta . B_i`` over a full neighbour list (see the module doc)."""

    def __init__(self, layers, twojmax: int, H: int, U: int, n_z: int, n_b: int,
                 n_slots: int, chemflag: bool, wselfallflag: bool, bzeroflag: bool,
                 switchflag: bool, switchinnerflag: bool, rfac0: float, rmin0: float,
                 cutoff: float, cutoffs, weights, sinner, dinner, half_diag, full_from_half,
                 full_mirror, full_sign, zp1, zp2, zidx, zcoef, bq, bz, bidx, bw, bzero,
                 triple_of_b, coefficients, numbers: List[int], pi: float):
        super().__init__()
        self.layers = torch.nn.ModuleList([
            _Layer(j, h, ca, cb, mirror, nj, j % 2 == 1 and j < twojmax)
            for j, h, ca, cb, mirror, nj in layers])
        self.H, self.U, self.n_z, self.n_b, self.n_slots = H, U, n_z, n_b, n_slots
        self.chem_self = chemflag and not wselfallflag
        self.bzeroflag = bzeroflag
        self.switchflag = switchflag
        self.switchinnerflag = switchinnerflag
        self.rfac0 = rfac0
        self.rmin0 = rmin0
        self.pi = pi
        self.chemflag = chemflag
        self.options = NeighborListOptions(cutoff=cutoff, full_list=True, strict=True)
        lookup = torch.full((max(numbers) + 1,), -1, dtype=torch.long)
        lookup[torch.tensor(numbers)] = torch.arange(len(numbers))
        reg = self.register_buffer
        reg("species_of", lookup)
        for name, value in (("cutoffs", cutoffs), ("weights", weights), ("sinner", sinner),
                            ("dinner", dinner), ("half_diag", half_diag),
                            ("full_from_half", full_from_half), ("full_mirror", full_mirror),
                            ("full_sign", full_sign), ("zp1", zp1), ("zp2", zp2),
                            ("zidx", zidx), ("zcoef", zcoef), ("bq", bq), ("bz", bz),
                            ("bidx", bidx), ("bw", bw), ("bzero", bzero),
                            ("triple_of_b", triple_of_b), ("coefficients", coefficients)):
            reg(name, value)

    def requested_neighbor_lists(self) -> List[NeighborListOptions]:
        return [self.options]

    def _switch(self, r: torch.Tensor, rcut: torch.Tensor, wj: torch.Tensor,
                si: torch.Tensor, sj: torch.Tensor) -> torch.Tensor:
        sfac = torch.ones_like(r)
        if self.switchflag:
            fac = self.pi / (rcut - self.rmin0)
            sfac = torch.where(r > self.rmin0, 0.5 * (torch.cos((r - self.rmin0) * fac) + 1.0),
                               sfac)
        if self.switchinnerflag:
            rinner = 0.5 * (self.sinner[si] + self.sinner[sj])
            drinner = 0.5 * (self.dinner[si] + self.dinner[sj])
            x = (r - rinner) * (self.pi / drinner)
            mid = (r > rinner) & (r < rinner + drinner)
            inner = torch.where(r >= rinner + drinner, torch.ones_like(r),
                                torch.where(mid, 0.5 * (1.0 - torch.cos(x)),
                                            torch.zeros_like(r)))
            sfac = sfac * inner
        return sfac * wj

    def _wigner(self, rij: torch.Tensor, r: torch.Tensor,
                rcut: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Real and imaginary parts of ``u`` on the half set, ``(H, P)`` each."""
        P = rij.shape[0]
        x, y, z = rij[:, 0], rij[:, 1], rij[:, 2]
        rscale0 = self.rfac0 * self.pi / (rcut - self.rmin0)
        theta0 = (r - self.rmin0) * rscale0
        z0 = r * torch.cos(theta0) / torch.sin(theta0)
        r0inv = 1.0 / torch.sqrt(r * r + z0 * z0)
        car, cai, cbr, cbi = z0 * r0inv, z * r0inv, y * r0inv, x * r0inv
        rows_r: List[torch.Tensor] = [torch.ones((1, P), dtype=rij.dtype, device=rij.device)]
        rows_i: List[torch.Tensor] = [torch.zeros((1, P), dtype=rij.dtype, device=rij.device)]
        pr = torch.ones((1, 1, P), dtype=rij.dtype, device=rij.device)
        pi = torch.zeros((1, 1, P), dtype=rij.dtype, device=rij.device)
        for layer in self.layers:
            h = layer.h
            Ar, Ai = pr[: h + 1], pi[: h + 1]
            zero = torch.zeros((h + 1, 1, P), dtype=rij.dtype, device=rij.device)
            ar = layer.ca * (car * Ar - cai * Ai)
            ai = layer.ca * (car * Ai + cai * Ar)
            br = layer.cb * (cbr * Ar - cbi * Ai)
            bi = layer.cb * (cbr * Ai + cbi * Ar)
            nr = torch.cat([ar, zero], 1) - torch.cat([zero, br], 1)
            ni = torch.cat([ai, zero], 1) - torch.cat([zero, bi], 1)
            rows_r.append(nr.reshape(-1, P)[: layer.nj])
            rows_i.append(ni.reshape(-1, P)[: layer.nj])
            if layer.mirrored:
                nr = torch.cat([nr, (nr[h].flip(0) * layer.mirror).unsqueeze(0)], 0)
                ni = torch.cat([ni, (-ni[h].flip(0) * layer.mirror).unsqueeze(0)], 0)
            pr, pi = nr, ni
        return torch.cat(rows_r, 0), torch.cat(rows_i, 0)

    def _energies(self, system: System) -> torch.Tensor:
        nl = system.get_neighbor_list(self.options)
        pairs = nl.samples.values
        n = len(system)
        dtype = system.positions.dtype
        species = self.species_of[system.types.to(torch.long)]
        rij_all = nl.values.reshape(-1, 3)
        ei_all = pairs[:, 0].to(torch.long)
        ej_all = pairs[:, 1].to(torch.long)
        rsq = (rij_all * rij_all).sum(1)
        rc_all = self.cutoffs.to(dtype)[species[ei_all], species[ej_all]]
        keep = torch.nonzero((rsq < rc_all * rc_all) & (rsq > 1e-20)).squeeze(1)
        rij = rij_all[keep]
        ei, ej = ei_all[keep], ej_all[keep]
        si, sj = species[ei], species[ej]
        r = torch.sqrt(rsq[keep])
        rcut = rc_all[keep]
        S = self.n_slots
        slot = sj if self.chemflag else torch.zeros_like(sj)
        target = ei * S + slot
        sfac = self._switch(r, rcut, self.weights.to(dtype)[sj], si, sj)
        ur, ui = self._wigner(rij, r, rcut)
        H = self.H
        Ur = torch.zeros((H, n * S), dtype=dtype, device=rij.device).index_add(
            1, target, ur * sfac)
        Ui = torch.zeros((H, n * S), dtype=dtype, device=rij.device).index_add(
            1, target, ui * sfac)
        diag = self.half_diag.to(dtype).view(H, 1, 1)
        if self.chem_self:
            one = torch.nn.functional.one_hot(species, S).to(dtype).view(1, n, S)
        else:
            one = torch.ones((1, n, S), dtype=dtype, device=rij.device)
        Ur = Ur.view(H, n, S) + diag * one
        Ui = Ui.view(H, n, S)
        # full matrices (S, U, n) from the half set
        Fr = Ur.permute(2, 0, 1).index_select(1, self.full_from_half)
        Fi = Ui.permute(2, 0, 1).index_select(1, self.full_from_half)
        sign = self.full_sign.to(dtype).view(1, self.U, 1)
        mirror = self.full_mirror.view(1, self.U, 1)
        Fr = torch.where(mirror, Fr * sign, Fr).reshape(S * self.U, n)
        Fi = torch.where(mirror, -Fi * sign, Fi).reshape(S * self.U, n)
        a_r, a_i = Fr.index_select(0, self.zp1), Fi.index_select(0, self.zp1)
        b_r, b_i = Fr.index_select(0, self.zp2), Fi.index_select(0, self.zp2)
        zc = self.zcoef.to(dtype).unsqueeze(1)
        Zr = torch.zeros((self.n_z, n), dtype=dtype, device=rij.device).index_add(
            0, self.zidx, (a_r * b_r - a_i * b_i) * zc)
        Zi = torch.zeros((self.n_z, n), dtype=dtype, device=rij.device).index_add(
            0, self.zidx, (a_r * b_i + a_i * b_r) * zc)
        prod = (Fr.index_select(0, self.bq) * Zr.index_select(0, self.bz)
                + Fi.index_select(0, self.bq) * Zi.index_select(0, self.bz))
        B = torch.zeros((self.n_b, n), dtype=dtype, device=rij.device).index_add(
            0, self.bidx, prod * self.bw.to(dtype).unsqueeze(1))
        if self.bzeroflag:
            bzero = self.bzero.to(dtype).unsqueeze(1)
            if self.chem_self:
                own = (species * S + species) * S + species
                mask = (self.triple_of_b.unsqueeze(1) == own.unsqueeze(0)).to(dtype)
                B = B - bzero * mask
            else:
                B = B - bzero
        c = self.coefficients.to(dtype)[species]
        return c[:, 0] + (B.transpose(0, 1) * c[:, 1:]).sum(1)

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
