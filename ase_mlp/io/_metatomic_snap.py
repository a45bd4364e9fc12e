"""TorchScript twins of the SNAP family for :mod:`ase_mlp.io.metatomic_export`.

:class:`ScriptBispectrum` is the energy path of :class:`ase_mlp.descriptors.Bispectrum`
(``_edge_kernel`` without adjoint, ``_densities``, ``_atom_block``) rewritten functionally
in real arithmetic over the same index tables, so that ``torch.jit.script`` compiles it
and autograd (in the metatomic engine) gives forces and stress. The per-atom energy of
each SNAP flavour is a small head on the bispectrum, as in :mod:`ase_mlp.models.snap`
(LAMMPS ``pair_style snap`` / ``mliap``):

* :class:`LinearHead`:    ``E_i = beta_0 + beta . B_i``;
* :class:`QuadraticHead`: ``... + 1/2 B_i^T A B_i`` (``A`` symmetric, per element);
* :class:`NetworkHead`:   ``E_i = NN_e((B_i - mean_e) / std_e)``, one MLP per element.

:class:`ScriptSNAP` joins one bispectrum and one head into a term of
:class:`ase_mlp.io._metatomic_model.ScriptEnergyModel`. A module of its own: it has no
``from __future__ import annotations`` (TorchScript needs the real annotations).
"""

from typing import List, Tuple

import torch


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


class ScriptBispectrum(torch.nn.Module):
    """Bispectrum components ``B`` (n_atoms, n_b) from a full list of directed pairs."""

    def __init__(self, layers, twojmax: int, H: int, U: int, n_z: int, n_b: int,
                 n_slots: int, chemflag: bool, wselfallflag: bool, bzeroflag: bool,
                 switchflag: bool, switchinnerflag: bool, rfac0: float, rmin0: float,
                 cutoffs, weights, sinner, dinner, half_diag, full_from_half,
                 full_mirror, full_sign, zp1, zp2, zidx, zcoef, bq, bz, bidx, bw, bzero,
                 triple_of_b, pi: float):
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
        for name, value in (("cutoffs", cutoffs), ("weights", weights), ("sinner", sinner),
                            ("dinner", dinner), ("half_diag", half_diag),
                            ("full_from_half", full_from_half), ("full_mirror", full_mirror),
                            ("full_sign", full_sign), ("zp1", zp1), ("zp2", zp2),
                            ("zidx", zidx), ("zcoef", zcoef), ("bq", bq), ("bz", bz),
                            ("bidx", bidx), ("bw", bw), ("bzero", bzero),
                            ("triple_of_b", triple_of_b)):
            self.register_buffer(name, value)

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
            m = nr.shape[0] * nr.shape[1]      # explicit: P may be 0 (no neighbours)
            rows_r.append(nr.reshape(m, P)[: layer.nj])
            rows_i.append(ni.reshape(m, P)[: layer.nj])
            if layer.mirrored:
                nr = torch.cat([nr, (nr[h].flip(0) * layer.mirror).unsqueeze(0)], 0)
                ni = torch.cat([ni, (-ni[h].flip(0) * layer.mirror).unsqueeze(0)], 0)
            pr, pi = nr, ni
        return torch.cat(rows_r, 0), torch.cat(rows_i, 0)

    def forward(self, species: torch.Tensor, rij_all: torch.Tensor, ei_all: torch.Tensor,
                ej_all: torch.Tensor) -> torch.Tensor:
        n = species.shape[0]
        dtype = rij_all.dtype
        device = rij_all.device
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
        Ur = torch.zeros((H, n * S), dtype=dtype, device=device).index_add(
            1, target, ur * sfac)
        Ui = torch.zeros((H, n * S), dtype=dtype, device=device).index_add(
            1, target, ui * sfac)
        diag = self.half_diag.to(dtype).view(H, 1, 1)
        if self.chem_self:
            one = torch.nn.functional.one_hot(species, S).to(dtype).view(1, n, S)
        else:
            one = torch.ones((1, n, S), dtype=dtype, device=device)
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
        Zr = torch.zeros((self.n_z, n), dtype=dtype, device=device).index_add(
            0, self.zidx, (a_r * b_r - a_i * b_i) * zc)
        Zi = torch.zeros((self.n_z, n), dtype=dtype, device=device).index_add(
            0, self.zidx, (a_r * b_i + a_i * b_r) * zc)
        prod = (Fr.index_select(0, self.bq) * Zr.index_select(0, self.bz)
                + Fi.index_select(0, self.bq) * Zi.index_select(0, self.bz))
        B = torch.zeros((self.n_b, n), dtype=dtype, device=device).index_add(
            0, self.bidx, prod * self.bw.to(dtype).unsqueeze(1))
        if self.bzeroflag:
            bzero = self.bzero.to(dtype).unsqueeze(1)
            if self.chem_self:
                own = (species * S + species) * S + species
                mask = (self.triple_of_b.unsqueeze(1) == own.unsqueeze(0)).to(dtype)
                B = B - bzero * mask
            else:
                B = B - bzero
        return B.transpose(0, 1)


class LinearHead(torch.nn.Module):
    """``E_i = beta_0 + beta . B_i``; ``coefficients`` (n_elements, 1 + K)."""

    def __init__(self, coefficients: torch.Tensor):
        super().__init__()
        self.register_buffer("coefficients", coefficients)

    def forward(self, B: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        c = self.coefficients.to(B.dtype)[species]
        return c[:, 0] + (B * c[:, 1:]).sum(1)


class QuadraticHead(torch.nn.Module):
    """Linear head plus ``1/2 B_i^T A_e B_i``; ``A`` (n_elements, K, K) symmetric."""

    def __init__(self, coefficients: torch.Tensor, quadratic: torch.Tensor):
        super().__init__()
        self.register_buffer("coefficients", coefficients)
        self.register_buffer("quadratic", quadratic)

    def forward(self, B: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        c = self.coefficients.to(B.dtype)[species]
        A = self.quadratic.to(B.dtype)
        AB = torch.zeros_like(B)
        for el in range(A.shape[0]):        # A[species] would be an (n, K, K) copy
            idx = torch.nonzero(species == el).squeeze(1)
            AB = AB.index_add(0, idx, B.index_select(0, idx) @ A[el])
        return c[:, 0] + (B * c[:, 1:]).sum(1) + 0.5 * (B * AB).sum(1)


#: activation codes of :class:`_Dense` (names as in ase_mlp.models.snap)
ACTIVATIONS = {"linear": 0, "tanh": 1, "sigmoid": 2, "relu": 3}


class _Dense(torch.nn.Module):
    """One layer of every element's network: ``weight`` (n_el, out, in), ``bias``."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, activation: int):
        super().__init__()
        self.activation = activation
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor, el: int) -> torch.Tensor:
        x = torch.nn.functional.linear(x, self.weight[el].to(x.dtype),
                                       self.bias[el].to(x.dtype))
        if self.activation == 1:
            x = torch.tanh(x)
        elif self.activation == 2:
            x = torch.sigmoid(x)
        elif self.activation == 3:
            x = torch.relu(x)
        return x


class NetworkHead(torch.nn.Module):
    """NN-SNAP: ``E_i = NN_e((B_i - mean_e) / std_e)``."""

    def __init__(self, layers: List[Tuple[torch.Tensor, torch.Tensor, int]],
                 mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.dense = torch.nn.ModuleList([_Dense(w, b, a) for w, b, a in layers])
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, B: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        mean = self.mean.to(B.dtype)
        std = self.std.to(B.dtype)
        e = torch.zeros(B.shape[0], dtype=B.dtype, device=B.device)
        for el in range(mean.shape[0]):
            idx = torch.nonzero(species == el).squeeze(1)
            x = (B.index_select(0, idx) - mean[el]) / std[el]
            for layer in self.dense:
                x = layer(x, el)
            e = e.index_add(0, idx, x.squeeze(-1))
        return e


class ScriptSNAP(torch.nn.Module):
    """One SNAP term: per-atom energies ``scale * head(B)``."""

    def __init__(self, bispectrum: ScriptBispectrum, head: torch.nn.Module, scale: float):
        super().__init__()
        self.bispectrum = bispectrum
        self.head = head
        self.scale = scale

    def forward(self, species: torch.Tensor, rij: torch.Tensor, ei: torch.Tensor,
                ej: torch.Tensor) -> torch.Tensor:
        return self.scale * self.head(self.bispectrum(species, rij, ei, ej), species)
