"""Ziegler-Biersack-Littmark (ZBL) screened nuclear repulsion, as LAMMPS ``pair_style zbl``.

The pair energy is

.. math::

    E(r) = \\frac{Z_i Z_j e^2}{4\\pi\\epsilon_0 r} \\phi(r/a) + S(r),
    \\qquad a = \\frac{0.46850}{Z_i^{0.23} + Z_j^{0.23}},
    \\qquad \\phi(x) = \\sum_{k=1}^4 c_k e^{-d_k x}

with the ZBL universal constants ``c = (0.02817, 0.28022, 0.50986, 0.18175)``,
``d = (0.20162, 0.40290, 0.94229, 3.19980)``. The switching term ``S`` is
LAMMPS's: ``S(r) = C`` for ``r <= inner`` and
``S(r) = A/3 t^3 + B/4 t^4 + C`` with ``t = r - inner`` for
``inner < r < outer``, with ``A, B, C`` chosen so that ``E``, ``dE/dr`` and
``d2E/dr2`` all vanish at ``r = outer``. Note that the constant shift ``C``
applies at every ``r < outer``, as in LAMMPS.

Constants follow LAMMPS's ``metal`` units exactly (``src/pair_zbl.cpp``,
``src/pair_zbl_const.h``, ``force->qqr2e = 14.399645`` eV Å per e^2,
``force->qelectron = 1``, ``force->angstrom = 1``), so results agree with LAMMPS
to rounding error.
"""

from __future__ import annotations

import numpy as np
import torch
from ase.data import atomic_numbers

from ase_mlp.models.base import Model, check_elements, edges_within, register_model


# ZBL universal screening function (LAMMPS src/pair_zbl_const.h)
PZBL = 0.23
A0 = 0.46850
C = (0.02817, 0.28022, 0.50986, 0.18175)
D = (0.20162, 0.40290, 0.94229, 3.19980)
#: LAMMPS metal units: q^2/r -> energy (eV*Å/e^2), electron charge, Å
QQR2E_METAL = 14.399645
QELECTRON_METAL = 1.0
ANGSTROM_METAL = 1.0


def _e_zbl(r, d, zze):
    s = sum(c * np.exp(-dk * r) for c, dk in zip(C, d, strict=True))
    return zze * s * (1.0 / r)


def _dzbldr(r, d, zze):
    rinv = 1.0 / r
    e = [np.exp(-dk * r) for dk in d]
    s = sum(c * ek for c, ek in zip(C, e, strict=True))
    sp = -sum(c * dk * ek for c, dk, ek in zip(C, d, e, strict=True))
    return zze * (sp - s * rinv) * rinv


def _d2zbldr2(r, d, zze):
    rinv = 1.0 / r
    e = [np.exp(-dk * r) for dk in d]
    s = sum(c * ek for c, ek in zip(C, e, strict=True))
    sp = sum(c * ek * dk for c, dk, ek in zip(C, d, e, strict=True))
    spp = sum(c * ek * dk * dk for c, dk, ek in zip(C, d, e, strict=True))
    return zze * (spp + 2.0 * sp * rinv + 2.0 * s * rinv * rinv) * rinv


def zbl_pair_coefficients(zi: float, zj: float, inner: float, outer: float) -> dict:
    """LAMMPS ``PairZBL::set_coeff`` for one pair of nuclear charges (float64).

    Returns
    -------
    dict
        ``d`` (4 screening exponents, 1/Å: ``d_k / a``), ``zze`` (eV Å,
        ``Z_i Z_j qqr2e``) and the switching coefficients ``sw1 .. sw5``
        (``dE/dr += t^2 (sw1 + sw2 t)``, ``E += t^3 (sw3 + sw4 t) + sw5``).
    """
    ainv = (zi**PZBL + zj**PZBL) / (A0 * ANGSTROM_METAL)
    d = [dk * ainv for dk in D]
    zze = zi * zj * QQR2E_METAL * QELECTRON_METAL * QELECTRON_METAL
    tc = outer - inner
    fc = _e_zbl(outer, d, zze)
    fcp = _dzbldr(outer, d, zze)
    fcpp = _d2zbldr2(outer, d, zze)
    if tc > 0.0:
        swa = (-3.0 * fcp + tc * fcpp) / (tc * tc)
        swb = (2.0 * fcp - tc * fcpp) / (tc * tc * tc)
        swc = -fc + (tc / 2.0) * fcp - (tc * tc / 12.0) * fcpp
    else:  # inner == outer: LAMMPS never applies the polynomial; only the shift -E(outer)
        swa = swb = 0.0
        swc = -fc
    return {
        "d": d,
        "zze": zze,
        "sw1": swa,
        "sw2": swb,
        "sw3": swa / 3.0,
        "sw4": swb / 4.0,
        "sw5": swc,
    }


@register_model
class ZBL(Model):
    """LAMMPS ``pair_style zbl inner outer`` as an ase_mlp model.

    Parameters
    ----------
    elements : list of str
        Chemical symbols; their order defines the species index.
    inner : float
        Distance (Å) where the switching function starts, ``0 < inner <= outer``.
    outer : float
        Cutoff (Å): energy and its first two derivatives vanish there.
    z : dict, list or None
        Nuclear charge (units of e) per element: a ``{symbol: Z}`` mapping
        (missing symbols default to their atomic number), a list in the order
        of ``elements``, or None for the atomic numbers. Pair charges are
        ``(Z_i, Z_j)``, as LAMMPS's default for unset ``pair_coeff i j``.

    Notes
    -----
    Energies in eV, lengths in Å. The model expects a *full* edge list (every
    pair as ``(i, j)`` and ``(j, i)``): each directed edge gives half the pair
    energy to its centre atom ``i`` (LAMMPS's per-atom energy split) and the
    edge gradient ``dE/dr_ij = 1/2 E'(r) r_ij / r``, so both directions together
    carry the full pair force.
    """

    def __init__(self, elements, inner: float, outer: float, z=None):
        super().__init__()
        self.elements = check_elements(list(elements))
        inner = float(inner)
        outer = float(outer)
        if not (np.isfinite(inner) and np.isfinite(outer) and 0.0 < inner <= outer):
            raise ValueError(f"ZBL needs 0 < inner <= outer, got inner={inner}, outer={outer}")
        self.inner = inner
        self.outer = outer
        self.z = self._charges(z)

        n = len(self.elements)
        d = np.zeros((n, n, 4))
        zze = np.zeros((n, n))
        sw = np.zeros((n, n, 5))
        for a in range(n):
            for b in range(a, n):
                co = zbl_pair_coefficients(self.z[a], self.z[b], inner, outer)
                for x, y in ((a, b), (b, a)):
                    d[x, y] = co["d"]
                    zze[x, y] = co["zze"]
                    sw[x, y] = [co[f"sw{k}"] for k in range(1, 6)]
        self._tables_np = {"d": d, "zze": zze, "sw": sw, "c": np.array(C, dtype=np.float64)}
        self._tables_cache: dict = {}

    def _charges(self, z) -> list[float]:
        if z is None:
            out = [float(atomic_numbers[e]) for e in self.elements]
        elif isinstance(z, dict):
            unknown = set(z) - set(self.elements)
            if unknown:
                raise ValueError(f"z given for elements {sorted(unknown)} not in {self.elements}")
            out = [float(z.get(e, atomic_numbers[e])) for e in self.elements]
        else:
            out = [float(v) for v in z]
            if len(out) != len(self.elements):
                raise ValueError(
                    f"z must have one entry per element ({len(self.elements)}), got {len(out)}"
                )
        for v in out:
            if not (np.isfinite(v) and v > 0.0):
                raise ValueError(f"nuclear charges must be positive, got {out}")
        return out

    # -- description ---------------------------------------------------------
    def pair_cutoffs(self) -> np.ndarray:
        n = len(self.elements)
        return np.full((n, n), self.outer)

    def config(self) -> dict:
        return {
            "elements": list(self.elements),
            "inner": self.inner,
            "outer": self.outer,
            "z": list(self.z),
        }

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, inner={self.inner}, z={self.z}"

    # -- evaluation ----------------------------------------------------------
    def _tables(self, dtype, device) -> dict:
        key = (dtype, str(device))
        t = self._tables_cache.get(key)
        if t is None:
            t = {
                k: torch.as_tensor(v, dtype=dtype, device=device)
                for k, v in self._tables_np.items()
            }
            self._tables_cache[key] = t
        return t

    def pair_energy(self, r: torch.Tensor, si: torch.Tensor, sj: torch.Tensor):
        """Pair energy ``E(r)`` (eV) and ``dE/dr`` (eV/Å) for species pairs ``(si, sj)``.

        Valid for ``0 < r < outer`` (no cutoff mask is applied here).
        """
        t = self._tables(r.dtype, r.device)
        d = t["d"][si, sj]  # (E, 4) 1/Å
        zze = t["zze"][si, sj]
        sw = t["sw"][si, sj]  # (E, 5)
        c = t["c"]
        rinv = 1.0 / r
        ex = torch.exp(-d * r.unsqueeze(1))  # (E, 4)
        s = ex @ c
        sp = -((ex * d) @ c)
        x = (r - self.inner).clamp(min=0.0)  # switching only beyond inner (zero there, C2)
        x2 = x * x
        energy = zze * s * rinv + sw[:, 4] + x2 * x * (sw[:, 2] + sw[:, 3] * x)
        dedr = zze * (sp - s * rinv) * rinv + x2 * (sw[:, 0] + sw[:, 1] * x)
        return energy, dedr

    def compute(self, graph, vectors, need_gradient):
        if _compiled(vectors, graph):
            from ase_mlp.kernels import sna

            return sna.zbl(self, graph, vectors, need_gradient)
        cutoffs = torch.as_tensor(self.pair_cutoffs(), dtype=vectors.dtype, device=vectors.device)
        index, r = edges_within(graph, vectors, cutoffs)
        i, j = graph.edge_index
        ii = i[index]
        energy, dedr = self.pair_energy(r, graph.species[ii], graph.species[j[index]])
        energies = vectors.new_zeros(graph.n_atoms).index_add_(0, ii, 0.5 * energy)
        grad = None
        if need_gradient:
            grad = vectors.new_zeros(vectors.shape)
            grad = grad.index_copy(0, index, (0.5 * dedr / r).unsqueeze(1) * vectors[index])
        return energies, grad


def _compiled(vectors, graph) -> bool:
    """The compiled loop runs on the CPU, without autograd through the edge vectors."""
    from ase_mlp.kernels import cpu_loop_usable

    return cpu_loop_usable([vectors], [graph.edge_index, graph.species])


__all__ = ["ZBL", "zbl_pair_coefficients"]
