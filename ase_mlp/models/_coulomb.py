"""Coulomb kernels behind :class:`~ase_mlp.models.Electrostatics` (torch, any device).

Conventions (``docs/methods.md`` section 4): charges in e, lengths in Å,
``k_e = e^2 / 4 pi eps0`` in eV Å. Every function returns *per-atom* energies,
forces and per-atom virials (``W = -dE/d(strain)``, LAMMPS's sign: positive
under compression) so that they add to the edge-based terms of
:func:`~ase_mlp.models.base.assemble`.

Smeared charges are handled as point charges plus a short-ranged pair
correction ``c_ij(r) = phi_ij(r) - 1/r`` (``phi_ij`` the interaction of the two
charge clouds), which vanishes exponentially and is summed in real space with
the Ewald real-space term. The clouds' self-interaction is a constant per
composition (:func:`self_energy`).
"""

from __future__ import annotations

import math

import numpy as np
import torch


#: LAMMPS ``metal`` units' ``qqr2e`` (eV Å / e^2); ASE's ``Hartree * Bohr`` is 14.3996454784
COULOMB_CONSTANT = 14.399645
DENSITIES = ("point", "gaussian", "slater")


# ---------------------------------------------------------------- pair kernels
def _slater_pair_correction(r: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``phi(r) - 1/r`` for Slater 1s clouds ``rho ~ exp(-lambda r)``, exponents a, b (1/Å).

    Equal exponents use the closed form of docs/methods.md section 4.3; unequal ones
    the partial-fraction form of the Fourier integral
    ``(2/pi) int sin(kr)/(kr) F_a F_b dk`` with ``F = l^4 / (l^2 + k^2)^2``.
    """
    equal = a == b
    out = torch.empty_like(r)
    if bool(equal.any()):
        x = a[equal] * r[equal]
        poly = 1 + 11 * x / 16 + 3 * x * x / 16 + x * x * x / 48
        out[equal] = -poly * torch.exp(-x) / r[equal]
    ne = ~equal
    if bool(ne.any()):
        aa, bb, rr = a[ne], b[ne], r[ne]
        d = bb * bb - aa * aa
        al1, al2 = -2 / d**3, 1 / d**2
        be1, be2 = 2 / d**3, 1 / d**2
        ea, eb = torch.exp(-aa * rr), torch.exp(-bb * rr)
        ta = ea * (al1 / aa**2 + al2 / aa**4 + al2 * rr / (2 * aa**3))
        tb = eb * (be1 / bb**2 + be2 / bb**4 + be2 * rr / (2 * bb**3))
        out[ne] = -(aa**4 * bb**4) * (ta + tb) / rr
    return out


def pair_correction(r: torch.Tensor, density: str, wi: torch.Tensor, wj: torch.Tensor):
    """``phi_ij(r) - 1/r`` for two clouds of widths ``wi``, ``wj`` (Å), per pair.

    ``gaussian``: ``rho ~ exp(-r^2 / 2 w^2)`` (``w`` = sigma), ``phi = erf(r / sqrt2 g) / r``
    with ``g = sqrt(wi^2 + wj^2)``. ``slater``: ``rho ~ exp(-r / w)`` (``w = 1/lambda``).
    """
    if density == "point":
        return torch.zeros_like(r)
    if density == "gaussian":
        g = torch.sqrt(wi * wi + wj * wj)
        return -torch.erfc(r / (math.sqrt(2.0) * g)) / r
    if density == "slater":
        return _slater_pair_correction(r, 1.0 / wi, 1.0 / wj)
    raise ValueError(f"unknown charge density {density!r}; choose one of {DENSITIES}")


def _erfc_over_r(r, beta):
    """``erfc(beta r) / r`` and its radial derivative."""
    e = torch.erfc(beta * r) / r
    return e, -e / r - (2 * beta / math.sqrt(math.pi)) * torch.exp(-(beta * r) ** 2) / r


def pair_kernel(r, alpha, density, wi, wj, *, periodic: bool):
    """Real-space kernel and its radial derivative: ``erfc(alpha r)/r + c(r)`` (periodic,
    Ewald) or ``1/r + c(r)`` (open), with ``c`` the smearing correction (analytic for
    point and Gaussian charges, automatic differentiation for Slater clouds)."""
    if periodic:
        phi, dphi = _erfc_over_r(r, alpha)
    else:
        phi, dphi = 1.0 / r, -1.0 / (r * r)
    if density == "gaussian":
        c, dc = _erfc_over_r(r, 1.0 / (math.sqrt(2.0) * torch.sqrt(wi * wi + wj * wj)))
        phi, dphi = phi - c, dphi - dc
    elif density != "point" and r.numel():
        with torch.enable_grad():
            x = r.detach().requires_grad_(True)
            c = pair_correction(x, density, wi, wj)
            (dc,) = torch.autograd.grad(c.sum(), x)
        phi, dphi = phi + c.detach(), dphi + dc
    return phi, dphi


def self_energy(q: torch.Tensor, density: str, w: torch.Tensor) -> torch.Tensor:
    """Self-interaction of each charge cloud, in units of ``k_e`` (per atom).

    Gaussian: ``q^2 / (2 sqrt(pi) sigma)``; Slater: ``5 q^2 / (32 w)`` (``= 5 lambda q^2 / 32``).
    Point charges: 0 (their self-energy is infinite and always left out).
    """
    if density == "point":
        return torch.zeros_like(q)
    if density == "gaussian":
        return q * q / (2 * math.sqrt(math.pi) * w)
    return 5 * q * q / (32 * w)


def correction_range(density: str, wmax: float, wmin: float, accuracy: float) -> float:
    """Distance (Å) beyond which ``|r c(r)| < accuracy`` for every pair of widths."""
    if density == "point":
        return 0.0
    r = torch.linspace(1e-3, 200.0 * wmax, 200_001, dtype=torch.float64)
    worst = torch.zeros_like(r)
    for wa in {wmax, wmin}:
        for wb in {wmax, wmin}:
            c = pair_correction(r, density, torch.full_like(r, wa), torch.full_like(r, wb))
            worst = torch.maximum(worst, (r * c).abs())
    above = torch.nonzero(worst >= accuracy).flatten()
    return float(r[above[-1] + 1]) if len(above) else float(r[0])


# ---------------------------------------------------------------- Ewald (k-space)
def ewald_parameters(accuracy: float, cutoff: float) -> tuple[float, float]:
    """``(alpha, k_cut)`` for a real-space ``cutoff``: ``erfc(alpha rc)`` below ``accuracy``
    (relative) and the reciprocal truncation of the virial, ``2x exp(-x)`` with
    ``x = k_cut^2 / 4 alpha^2`` (the energy's ``exp(-x)`` times its stress weight), too."""
    s = math.sqrt(-math.log(accuracy))
    alpha = s / cutoff
    x = s * s
    for _ in range(20):  # x = -ln(acc) + ln(2x), a contraction
        x = -math.log(accuracy) + math.log(2 * x)
    return alpha, 2.0 * alpha * math.sqrt(x)


def kvectors(cell: torch.Tensor, kcut: float) -> torch.Tensor:
    """Half-space reciprocal vectors ``0 < |k| <= kcut`` (k and -k: only one kept)."""
    recip = 2 * math.pi * torch.linalg.inv(cell).T  # rows b_d, a_d . b_e = 2 pi delta
    lengths = torch.linalg.norm(cell, dim=1)
    nmax = [int(math.floor(kcut * float(lengths[d]) / (2 * math.pi))) for d in range(3)]
    rng = [torch.arange(-n, n + 1, device=cell.device, dtype=cell.dtype) for n in nmax]
    m = torch.cartesian_prod(*rng).reshape(-1, 3)
    half = (m[:, 0] > 0) | ((m[:, 0] == 0) & (m[:, 1] > 0)) | (
        (m[:, 0] == 0) & (m[:, 1] == 0) & (m[:, 2] > 0))
    k = m[half] @ recip
    return k[(k * k).sum(1) <= kcut * kcut]


def ewald_kspace(positions, cell, q, alpha: float, kcut: float, *, virial: bool = True,
                 chunk_elements: int = 4_000_000):
    """Reciprocal-space Ewald sum of one periodic cell, chunked over k-vectors.

    ``E = (2 pi / V) sum_{k != 0} exp(-k^2/4 alpha^2)/k^2 |S(k)|^2`` (units of ``k_e``),
    ``S(k) = sum_j q_j exp(i k.r_j)``; returned per atom with forces and per-atom
    virials (``W_i = q_i``-share of ``E_k (delta - 2 k k (1/4alpha^2 + 1/k^2))``).
    """
    n = positions.shape[0]
    vol = torch.abs(torch.linalg.det(cell))
    k = kvectors(cell, kcut)
    energies = positions.new_zeros(n)
    forces = positions.new_zeros((n, 3))
    atom_w = positions.new_zeros((n, 3, 3)) if virial else None
    if len(k) == 0:
        return energies, forces, atom_w
    step = max(1, chunk_elements // max(n, 1))
    pref = 4 * math.pi / vol  # half space: every k stands for k and -k
    for s in range(0, len(k), step):
        kc = k[s:s + step]
        k2 = (kc * kc).sum(1)
        g = torch.exp(-k2 / (4 * alpha * alpha)) / k2
        phase = positions @ kc.T  # (n, K)
        cos, sin = torch.cos(phase), torch.sin(phase)
        c, si = q @ cos, q @ sin  # (K,)
        share = cos * c + sin * si  # q_i share of |S|^2, summed over i with weights q_i
        energies += pref * q * (share @ g)
        forces += 2 * pref * q[:, None] * ((sin * c - cos * si) @ (g[:, None] * kc))
        if virial:
            h = 2 * (1 / (4 * alpha * alpha) + 1 / k2)
            kk = kc[:, :, None] * kc[:, None, :]  # (K,3,3)
            tensor = torch.eye(3, dtype=kc.dtype, device=kc.device) - h[:, None, None] * kk
            atom_w += pref * q[:, None, None] * (
                (share @ (g[:, None] * tensor.reshape(-1, 9))).reshape(n, 3, 3))
    return energies, forces, atom_w


def ewald_background(q, cell, alpha: float):
    """Energy of a uniform neutralising background for a charged cell, per atom
    (split in proportion to the charges), and its per-atom virial (units of ``k_e``)."""
    vol = torch.abs(torch.linalg.det(cell))
    total = q.sum()
    e = -math.pi * total * q / (2 * vol * alpha * alpha)
    w = e[:, None, None] * torch.eye(3, dtype=q.dtype, device=q.device)
    return e, w


# ---------------------------------------------------------------- open systems
def direct_sum(positions, q, density, widths, *, chunk_elements: int = 4_000_000):
    """All-pairs Coulomb sum of an open (non-periodic) structure, in units of ``k_e``.

    Returns per-atom energies (each pair split half-half), forces and per-atom
    virials ``-1/2 sum_j r_ij (x) dE/dr_ij`` (symmetric).
    """
    n = positions.shape[0]
    energies = positions.new_zeros(n)
    forces = positions.new_zeros((n, 3))
    atom_w = positions.new_zeros((n, 3, 3))
    step = max(1, chunk_elements // max(n, 1))
    idx = torch.arange(n, device=positions.device)
    for s in range(0, n, step):
        rows = idx[s:s + step]
        d = positions[None, :, :] - positions[rows, None, :]  # r_ij = x_j - x_i
        r = torch.linalg.norm(d, dim=2)
        mask = rows[:, None] != idx[None, :]
        ii, jj = torch.nonzero(mask, as_tuple=True)
        rr = r[ii, jj]
        gi, gj = rows[ii], jj
        phi, dphi = pair_kernel(rr, 0.0, density, widths[gi], widths[gj], periodic=False)
        qq = q[gi] * q[gj]
        energies.index_add_(0, gi, 0.5 * qq * phi)
        vec = d[ii, jj]
        g = (0.5 * qq * dphi / rr)[:, None] * vec  # dE/dr_ij of the directed half-pair
        forces.index_add_(0, gi, 2 * g)  # both halves: E depends on r_ij through i and j
        w = -vec[:, :, None] * g[:, None, :]
        atom_w.index_add_(0, gi, w)
    return energies, forces, atom_w


def estimate_kvectors(cell: np.ndarray, kcut: float) -> int:
    """Number of half-space k-vectors an Ewald sum with ``kcut`` uses in ``cell``."""
    vol = abs(np.linalg.det(cell))
    return int(vol * kcut**3 / (12 * math.pi**2))
