"""Index tables and Clebsch-Gordan coefficients of the SNAP bispectrum.

Everything here is pure numpy, computed once per ``(twojmax, n_elements,
bnormflag)`` and cached. Conventions follow LAMMPS ``compute sna/atom``
(Thompson et al., J. Comput. Phys. 285, 316 (2015)): angular labels are
doubled integers ``j = 2J``; the Wigner matrix ``u_j`` of an edge is stored
row-major by ``mb`` then ``ma`` at ``idxu_block[j] + (j+1)*mb + ma``; the
bispectrum list runs over ``j1 = 0..twojmax, j2 = 0..j1, j = j1-j2..min(twojmax,
j1+j2) step 2`` keeping ``j >= j1`` (the "compact" set).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from math import factorial, sqrt

import numpy as np


def _fact(n: int) -> float:
    return float(factorial(n))


def clebsch_gordan(j1: int, j2: int, j: int) -> np.ndarray:
    """CG coefficients ``C[m1, m2]`` coupling (j1 m1)(j2 m2) to j (doubled labels).

    ``m1 = 0..j1`` and ``m2 = 0..j2`` are array offsets (``2*alpha = 2*m1 - j1``),
    and the coupled ``m = (2*m1 - j1 + 2*m2 - j2 + j) / 2``. Racah's formula
    (Varshalovich et al., Quantum Theory of Angular Momentum, 8.2.1(3)).
    """
    out = np.zeros((j1 + 1, j2 + 1))
    delta = sqrt(
        _fact((j1 + j2 - j) // 2)
        * _fact((j1 - j2 + j) // 2)
        * _fact((-j1 + j2 + j) // 2)
        / _fact((j1 + j2 + j) // 2 + 1)
    )
    for m1 in range(j1 + 1):
        aa2 = 2 * m1 - j1
        for m2 in range(j2 + 1):
            bb2 = 2 * m2 - j2
            m = (aa2 + bb2 + j) // 2
            if m < 0 or m > j:
                continue
            total = 0.0
            zlo = max(0, max(-(j - j2 + aa2) // 2, -(j - j1 - bb2) // 2))
            zhi = min((j1 + j2 - j) // 2, min((j1 - aa2) // 2, (j2 + bb2) // 2))
            for z in range(zlo, zhi + 1):
                sign = -1.0 if z % 2 else 1.0
                total += sign / (
                    _fact(z)
                    * _fact((j1 + j2 - j) // 2 - z)
                    * _fact((j1 - aa2) // 2 - z)
                    * _fact((j2 + bb2) // 2 - z)
                    * _fact((j - j2 + aa2) // 2 + z)
                    * _fact((j - j1 - bb2) // 2 + z)
                )
            cc2 = 2 * m - j
            norm = sqrt(
                _fact((j1 + aa2) // 2)
                * _fact((j1 - aa2) // 2)
                * _fact((j2 + bb2) // 2)
                * _fact((j2 - bb2) // 2)
                * _fact((j + cc2) // 2)
                * _fact((j - cc2) // 2)
                * (j + 1)
            )
            out[m1, m2] = total * delta * norm
    return out


def bispectrum_triples(twojmax: int) -> list[tuple[int, int, int]]:
    """The (j1, j2, j) triples of the compact bispectrum, in LAMMPS order."""
    out = []
    for j1 in range(twojmax + 1):
        for j2 in range(j1 + 1):
            for j in range(j1 - j2, min(twojmax, j1 + j2) + 1, 2):
                if j >= j1:
                    out.append((j1, j2, j))
    return out


def n_bispectrum(twojmax: int) -> int:
    return len(bispectrum_triples(twojmax))


@dataclass(frozen=True)
class SnaTables:
    """Flat index tables driving the vectorised bispectrum (see module docs).

    Notation: ``u`` is an atom's density vector over ``(element, j, mb, ma)``
    flattened to ``n_elem * idxu_max`` complex entries; ``Z`` entries are the
    coupled products needed by ``B``; terms ``t`` are the CG-weighted products.

    ``Z[z] = sum_t zcoef[t] * u[zp1[t]] * u[zp2[t]]`` over terms with ``zidx[t] == z``.
    ``B[b] = sum_s bw[s] * Re(conj(u[bq[s]]) * Z[bz[s]])`` over entries with ``bidx[s] == b``
    (the weights already hold LAMMPS's factor 2 and the half-matrix weights).
    """

    twojmax: int
    n_elem: int
    idxu_max: int
    idxu_block: np.ndarray
    rootpq: np.ndarray
    n_z: int
    zidx: np.ndarray
    zp1: np.ndarray
    zp2: np.ndarray
    zcoef: np.ndarray
    n_b: int
    bidx: np.ndarray
    bz: np.ndarray
    bq: np.ndarray
    bw: np.ndarray
    bzero_j: np.ndarray  # j of every B component (length n_b), for the bzero shift
    triple_of_b: np.ndarray  # element triple index (e1*n+e2)*n+e3 of every B component
    half_index: np.ndarray  # u entries (per element block) on the "left half" used for forces
    half_partner: np.ndarray  # the symmetric partner entry (j-mb, j-ma) of each, or -1
    half_sign: np.ndarray  # (-1)^(ma-mb) for the partner relation
    half_diag: np.ndarray  # positions in the half set of the diagonal entries it holds
    full_from_half: np.ndarray  # for every full entry, the half-set position it derives from
    full_mirror: np.ndarray  # True where the full entry is (-1)^(ma-mb) conj(half partner)
    full_sign: np.ndarray  # that sign
    layer_sizes: np.ndarray  # number of half-set entries of every layer j


@lru_cache(maxsize=32)
def sna_tables(twojmax: int, n_elem: int = 1, bnormflag: bool = False) -> SnaTables:
    """Build (and cache) the tables for ``twojmax`` and ``n_elem`` chemistry slots."""
    if twojmax < 0:
        raise ValueError(f"twojmax must be >= 0, got {twojmax}")
    idxu_block = np.zeros(twojmax + 1, dtype=np.int64)
    count = 0
    for j in range(twojmax + 1):
        idxu_block[j] = count
        count += (j + 1) ** 2
    idxu_max = count

    rootpq = np.zeros((twojmax + 2, twojmax + 2))
    for p in range(1, twojmax + 1):
        for q in range(1, twojmax + 1):
            rootpq[p, q] = sqrt(p / q)

    def uidx(j, mb, ma):
        return idxu_block[j] + (j + 1) * mb + ma

    triples = bispectrum_triples(twojmax)
    # --- Z blocks for every (j1, j2, j) of the compact set: rows mb <= j/2 ---------
    z_entries = []  # (j1, j2, j, mb, ma)
    z_block = {}
    zidx, zp1, zp2, zcoef = [], [], [], []
    for j1, j2, j in triples:
        cg = clebsch_gordan(j1, j2, j)
        z_block[(j1, j2, j)] = len(z_entries)
        for mb in range(j // 2 + 1):
            for ma in range(j + 1):
                z = len(z_entries)
                z_entries.append((j1, j2, j, mb, ma))
                ma1min = max(0, (2 * ma - j - j2 + j1) // 2)
                ma2max = (2 * ma - j - (2 * ma1min - j1) + j2) // 2
                na = min(j1, (2 * ma - j + j2 + j1) // 2) - ma1min + 1
                mb1min = max(0, (2 * mb - j - j2 + j1) // 2)
                mb2max = (2 * mb - j - (2 * mb1min - j1) + j2) // 2
                nb = min(j1, (2 * mb - j + j2 + j1) // 2) - mb1min + 1
                for ib in range(nb):
                    mb1, mb2 = mb1min + ib, mb2max - ib
                    cgb = cg[mb1, mb2]
                    for ia in range(na):
                        ma1, ma2 = ma1min + ia, ma2max - ia
                        c = cgb * cg[ma1, ma2]
                        if bnormflag:
                            c /= j + 1
                        if c == 0.0:
                            continue
                        zidx.append(z)
                        zp1.append(uidx(j1, mb1, ma1))
                        zp2.append(uidx(j2, mb2, ma2))
                        zcoef.append(c)
    nz1 = len(z_entries)
    zidx = np.asarray(zidx, dtype=np.int64)
    zp1 = np.asarray(zp1, dtype=np.int64)
    zp2 = np.asarray(zp2, dtype=np.int64)
    zcoef = np.asarray(zcoef, dtype=np.float64)

    # --- B from Z and u: half-matrix sums with LAMMPS's weights ------------------
    bidx1, bz1, bq1, bw1 = [], [], [], []
    for b, (j1, j2, j) in enumerate(triples):
        z0 = z_block[(j1, j2, j)]
        k = 0
        for mb in range(j // 2 + 1):
            for ma in range(j + 1):
                if 2 * mb < j:
                    w = 2.0
                elif 2 * ma < j:  # middle row (j even), left part
                    w = 2.0
                elif 2 * ma == j:
                    w = 1.0
                else:
                    w = 0.0
                if w:
                    bidx1.append(b)
                    bz1.append(z0 + k)
                    bq1.append(uidx(j, mb, ma))
                    bw1.append(w)
                k += 1
    nb1 = len(triples)

    # --- chemistry: replicate over element pairs/triples -------------------------
    n = n_elem
    Zi, P1, P2, C = [], [], [], []
    for e1 in range(n):
        for e2 in range(n):
            d = e1 * n + e2
            Zi.append(zidx + d * nz1)
            P1.append(zp1 + e1 * idxu_max)
            P2.append(zp2 + e2 * idxu_max)
            C.append(zcoef)
    Bi, Bz, Bq, Bw, triple_of_b, bzero_j = [], [], [], [], [], []
    bj = np.array([t[2] for t in triples], dtype=np.int64)
    for e1 in range(n):
        for e2 in range(n):
            for e3 in range(n):
                t = (e1 * n + e2) * n + e3
                d = e1 * n + e2
                Bi.append(np.asarray(bidx1, dtype=np.int64) + t * nb1)
                Bz.append(np.asarray(bz1, dtype=np.int64) + d * nz1)
                Bq.append(np.asarray(bq1, dtype=np.int64) + e3 * idxu_max)
                Bw.append(np.asarray(bw1, dtype=np.float64))
                triple_of_b.append(np.full(nb1, t, dtype=np.int64))
                bzero_j.append(bj)

    # --- half-matrix bookkeeping for the force contraction -----------------------
    h_idx, h_par, h_sgn = [], [], []
    for j in range(twojmax + 1):
        for mb in range(j // 2 + 1):
            for ma in range(j + 1):
                if 2 * mb == j and 2 * ma > j:
                    continue
                h_idx.append(uidx(j, mb, ma))
                centre = 2 * mb == j and 2 * ma == j
                h_par.append(-1 if centre else uidx(j, j - mb, j - ma))
                h_sgn.append(1.0 if (ma - mb) % 2 == 0 else -1.0)
    pos = {int(e): k for k, e in enumerate(h_idx)}
    half_diag = [pos[int(uidx(j, m, m))] for j in range(twojmax + 1) for m in range(j // 2 + 1)]
    f_from, f_mir, f_sgn = [], [], []
    layer_sizes = []
    for j in range(twojmax + 1):
        layer_sizes.append(sum(1 for mb in range(j // 2 + 1) for ma in range(j + 1)
                               if not (2 * mb == j and 2 * ma > j)))
        for mb in range(j + 1):
            for ma in range(j + 1):
                e = int(uidx(j, mb, ma))
                if e in pos:
                    f_from.append(pos[e])
                    f_mir.append(False)
                    f_sgn.append(1.0)
                else:
                    f_from.append(pos[int(uidx(j, j - mb, j - ma))])
                    f_mir.append(True)
                    f_sgn.append(1.0 if (ma - mb) % 2 == 0 else -1.0)

    return SnaTables(
        twojmax=twojmax,
        n_elem=n,
        idxu_max=idxu_max,
        idxu_block=idxu_block,
        rootpq=rootpq,
        n_z=nz1 * n * n,
        zidx=np.concatenate(Zi),
        zp1=np.concatenate(P1),
        zp2=np.concatenate(P2),
        zcoef=np.concatenate(C),
        n_b=nb1 * n**3,
        bidx=np.concatenate(Bi),
        bz=np.concatenate(Bz),
        bq=np.concatenate(Bq),
        bw=np.concatenate(Bw),
        bzero_j=np.concatenate(bzero_j),
        triple_of_b=np.concatenate(triple_of_b),
        half_index=np.asarray(h_idx, dtype=np.int64),
        half_partner=np.asarray(h_par, dtype=np.int64),
        half_sign=np.asarray(h_sgn, dtype=np.float64),
        half_diag=np.asarray(half_diag, dtype=np.int64),
        full_from_half=np.asarray(f_from, dtype=np.int64),
        full_mirror=np.asarray(f_mir, dtype=bool),
        full_sign=np.asarray(f_sgn, dtype=np.float64),
        layer_sizes=np.asarray(layer_sizes, dtype=np.int64),
    )
