"""Smooth particle-mesh Ewald (Essmann et al., J. Chem. Phys. 103, 8577, 1995) in torch.

The reciprocal-space Ewald sum of :func:`ase_mlp.models._coulomb.ewald_kspace`, with the
structure factor interpolated from charges spread on a mesh by cardinal B-splines of order
``p``; forces from the analytic derivative of the splines, the virial from the
reciprocal-space formula with the B-spline moduli (which do not depend on the strain).
Units of ``k_e``; no automatic differentiation (memory stays O(N p^3 + mesh)).
"""

from __future__ import annotations

import math

import torch


_NICE = sorted({2**a * 3**b * 5**c for a in range(14) for b in range(9) for c in range(6)
                if 2**a * 3**b * 5**c <= 8192})


def nice_size(n: int) -> int:
    """Smallest 2^a 3^b 5^c >= n (FFT-friendly)."""
    for m in _NICE:
        if m >= n:
            return m
    return int(n)


def bspline(w: torch.Tensor, order: int):
    """``M_p(w + k)`` and ``M_p'(w + k)`` for ``k = 0 .. p-1``, ``w`` in [0, 1): (N, p) each.

    De Boor's recursion ``M_n(x) = [x M_{n-1}(x) + (n - x) M_{n-1}(x - 1)] / (n - 1)``
    (all terms positive: stable in float32 too) and ``M_n'(x) = M_{n-1}(x) - M_{n-1}(x-1)``.
    """
    n_atoms = w.shape[0]
    v = w.new_zeros((n_atoms, order))
    v[:, 0] = w
    v[:, 1] = 1 - w
    dv = None
    for n in range(3, order + 1):
        if n == order:
            dv = v.clone()
            dv[:, 1:] -= v[:, :-1]
        prev = v.clone()
        k = torch.arange(n, dtype=w.dtype, device=w.device)
        x = w[:, None] + k[None, :]  # (N, n)
        left = torch.zeros_like(x)
        left[:, :n - 1] = prev[:, :n - 1]
        right = torch.zeros_like(x)
        right[:, 1:] = prev[:, :n - 1]
        v[:, :n] = (x * left + (n - x) * right) / (n - 1)
    if dv is None:  # order 2
        dv = w.new_zeros((n_atoms, order))
        dv[:, 0] = 1
        dv[:, 1] = -1
    return v, dv


def _moduli(size: int, order: int, dtype, device) -> torch.Tensor:
    """``|b(m)|^2 = 1 / |sum_{k=0}^{p-2} M_p(k+1) exp(2 pi i m k / K)|^2`` for m = 0 .. K-1."""
    vals, _ = bspline(torch.zeros(1, dtype=torch.float64), order)  # M_p(k), k = 0 .. p-1
    mk = torch.zeros(size, dtype=torch.float64)
    for k in range(order - 1):
        mk[k % size] += vals[0, k + 1]  # M_p(k + 1)
    denom = torch.fft.fft(mk).abs() ** 2
    bad = denom < 1e-10  # odd orders at m = K/2: interpolate from the neighbours
    out = torch.where(bad, torch.zeros_like(denom), 1.0 / denom.clamp_min(1e-300))
    for m in torch.nonzero(bad).flatten().tolist():
        out[m] = 0.5 * (out[(m - 1) % size] + out[(m + 1) % size])
    return out.to(dtype=dtype, device=device)


def pme_kspace(positions, cell, q, alpha: float, *, mesh_spacing: float, order: int = 6,
               virial: bool = True, mesh=None):
    """Reciprocal-space Ewald energy (per atom), forces and per-atom virials by SPME.

    ``mesh`` (3 ints) overrides the mesh chosen from ``mesh_spacing`` (Å along each lattice
    vector, rounded up to FFT-friendly sizes). The forces are the exact gradient of the
    interpolated energy minus its small net force (of the order of the mesh error).
    Per-atom virials are the total divided equally among the atoms (the reciprocal virial
    has no unique per-atom split).
    """
    dtype, device = positions.dtype, positions.device
    n = positions.shape[0]
    if mesh is None:
        lengths = torch.linalg.norm(cell, dim=1)
        mesh = [nice_size(max(order, math.ceil(float(x) / mesh_spacing))) for x in lengths]
    k1, k2, k3 = (int(x) for x in mesh)
    inv = torch.linalg.inv(cell)  # column d = b_d / (2 pi)
    vol = torch.abs(torch.linalg.det(cell))
    u = (positions @ inv) * torch.tensor([k1, k2, k3], dtype=dtype, device=device)
    fl = torch.floor(u)
    w = u - fl
    fl = fl.to(torch.long)
    sizes = (k1, k2, k3)
    ks = torch.arange(order, device=device)
    theta, dtheta, index = [], [], []
    for d in range(3):
        t, dt = bspline(w[:, d], order)
        theta.append(t)
        dtheta.append(dt)
        index.append(torch.remainder(fl[:, d:d + 1] - ks[None, :], sizes[d]))  # (N, p)
    flat = ((index[0][:, :, None, None] * k2 + index[1][:, None, :, None]) * k3
            + index[2][:, None, None, :]).reshape(n, -1)  # (N, p^3)
    weights = (theta[0][:, :, None, None] * theta[1][:, None, :, None]
               * theta[2][:, None, None, :]).reshape(n, -1)
    grid = positions.new_zeros(k1 * k2 * k3)
    grid.index_add_(0, flat.reshape(-1), (q[:, None] * weights).reshape(-1))
    qhat = torch.fft.rfftn(grid.view(k1, k2, k3), norm="backward")
    # reciprocal vectors of the half spectrum
    m1 = torch.fft.fftfreq(k1, 1.0 / k1, dtype=dtype, device=device)
    m2 = torch.fft.fftfreq(k2, 1.0 / k2, dtype=dtype, device=device)
    m3 = torch.fft.rfftfreq(k3, 1.0 / k3, dtype=dtype, device=device)
    b = 2 * math.pi * inv.T  # rows: reciprocal vectors
    kvec = (m1[:, None, None, None] * b[0] + m2[None, :, None, None] * b[1]
            + m3[None, None, :, None] * b[2])  # (k1, k2, k3//2+1, 3)
    k2sum = (kvec * kvec).sum(-1)
    k2sum[0, 0, 0] = 1.0
    g = torch.exp(-k2sum / (4 * alpha * alpha)) / k2sum
    g[0, 0, 0] = 0.0
    bmod = (_moduli(k1, order, dtype, device)[:, None, None]
            * _moduli(k2, order, dtype, device)[None, :, None]
            * _moduli(k3, order, dtype, device)[: k3 // 2 + 1][None, None, :])
    gb = g * bmod
    conv = (4 * math.pi / vol) * gb
    phi_grid = torch.fft.irfftn(conv * qhat, s=(k1, k2, k3), norm="forward").reshape(-1)
    vals = phi_grid[flat].view(n, order, order, order)
    phi = (weights.view(n, order, order, order) * vals).sum((1, 2, 3))
    energies = 0.5 * q * phi
    grad_u = torch.stack([
        torch.einsum("nabc,na,nb,nc->n", vals, dtheta[0], theta[1], theta[2]),
        torch.einsum("nabc,na,nb,nc->n", vals, theta[0], dtheta[1], theta[2]),
        torch.einsum("nabc,na,nb,nc->n", vals, theta[0], theta[1], dtheta[2]),
    ], dim=1)  # dphi/du_d
    du_dr = inv.T * torch.tensor([k1, k2, k3], dtype=dtype, device=device)[:, None]  # row d
    forces = -q[:, None] * (grad_u @ du_dr)
    # analytic differentiation of the interpolated energy leaves a net force of the order
    # of the mesh error; removing it conserves momentum (as a neutral system must)
    forces = forces - forces.mean(0)
    atom_w = None
    if virial:
        half_w = torch.full((k3 // 2 + 1,), 2.0, dtype=dtype, device=device)
        half_w[0] = 1.0
        if k3 % 2 == 0:
            half_w[-1] = 1.0
        s2 = (qhat.real ** 2 + qhat.imag ** 2) * gb * half_w[None, None, :]
        h = 2 * (1 / (4 * alpha * alpha) + 1 / k2sum)
        h[0, 0, 0] = 0.0
        e_tot = s2.sum()
        kk = torch.einsum("abc,abci,abcj->ij", s2 * h, kvec, kvec)
        w_tot = (2 * math.pi / vol) * (e_tot * torch.eye(3, dtype=dtype, device=device) - kk)
        atom_w = (w_tot / n).expand(n, 3, 3).clone()
    return energies, forces, atom_w
