// SNAP bispectrum kernels: one source for the CPU (g++) and the GPU (nvcc/NVRTC).
//
// Everything here is a __host__ __device__ function of one index (an atom); the
// drivers (sna_cpu.cpp: threads over atoms; sna_cuda.cu: one GPU thread per atom)
// only loop over indices. There are no atomics, no shared memory and no reductions
// across indices: every output is written by the index that owns it (per-atom
// energies, descriptors and adjoints; per-edge gradients, which belong to the edge's
// centre atom). The result therefore does not depend on the execution order, and
// the CPU build is an oracle for the GPU build.
//
// The maths is the one of ase_mlp/descriptors/bispectrum.py (LAMMPS compute sna/atom,
// Thompson et al. J. Comput. Phys. 285, 316 (2015)), with the same index tables
// (ase_mlp/descriptors/_sna_tables.py):
//   1. per edge, the Wigner matrices u_j on the "half set" (rows mb <= j/2) by the
//      Cayley-Klein recursion, weighted by the switching function;
//   2. per atom, the density U_i (one block per chemistry slot), its full matrices,
//      Z = sum CG CG U U and B = sum bw Re(conj(U) Z) - bzero;
//   3. per atom, from dE/dB the adjoint Y = dE/dU folded onto the half set;
//   4. per edge, dE/dr_ij = sfac dL/dr + L dsfac/dr r_hat with L = sum Re(conj(Y) u),
//      by forward-mode derivatives of the recursion.
// Original code of ase_mlp (MIT).
#pragma once
#ifdef __CUDACC_RTC__
// NVRTC ships no C library headers
typedef int int32_t;
typedef long long int64_t;
#else
#include <stdint.h>
#endif

// SNA_SIMD_SUM(...): let the host compiler vectorise a sum reduction over the loop that
// follows (reassociates the additions: results stay deterministic for a given build,
// within ~1e-16 relative of the sequential sum). Needs -fopenmp-simd (no OpenMP runtime).
#if defined(SNA_OMP_SIMD) && !defined(__CUDACC__)
#define SNA_PRAGMA(x) _Pragma(#x)
#define SNA_SIMD_SUM(...) SNA_PRAGMA(omp simd reduction(+ : __VA_ARGS__))
#else
#define SNA_SIMD_SUM(...)
#endif

#ifdef __CUDACC__
#define SNA_HD __host__ __device__ inline
#else
#define SNA_HD inline
#include <math.h>
#endif

// Tables and flags of one Bispectrum (shared by every call), laid out for ctypes:
// pointers first, then 64-bit integers, then doubles (no padding anywhere).
struct SnaTables {
  const int32_t* zoff;           // (n_z + 1) CSR of the Z terms by Z entry
  const int32_t* zp1;            // (n_terms) full-U index of the first factor
  const int32_t* zp2;            // (n_terms) second factor
  const double* zcoef;           // (n_terms) CG * CG (/ (j+1) with bnormflag)
  const int32_t* bidx;           // (n_bs) B component of every B term
  const int32_t* bz;             // (n_bs) Z entry
  const int32_t* bq;             // (n_bs) full-U index
  const double* bw;              // (n_bs) weight (LAMMPS's 2 / 1 half-matrix weights)
  const int32_t* boff;           // (K + 1) CSR of the B terms by component
  const double* bzero;           // (K) bzero shift (zeros without bzeroflag)
  const int32_t* triple_of_b;    // (K) element triple of every component
  const int32_t* full_from_half; // (U) half-set position every full entry derives from
  const double* full_sign;       // (U) 0: copy; +-1: sign * conj(half partner)
  const int32_t* half_index;     // (H) full-U index of every half-set entry
  const int32_t* half_partner;   // (H) its mirror partner (itself for a centre entry)
  const double* half_sign;       // (H) (-1)^(ma-mb); 0 marks a real centre entry
  const int32_t* half_diag;      // (n_diag) half-set positions of the diagonal entries
  const double* rootpq;          // (twojmax+2)^2 sqrt(p/q)
  const int32_t* klayers;        // (K, 3) the (j1, j2, j) of every component
  const int32_t* layer_off;      // (twojmax + 2) half-set offset of every layer j
  int64_t twojmax, n_slots, H, U, n_z, K, n_bs, n_diag;
  int64_t switchflag, switchinnerflag, bzeroflag, chemflag, wselfallflag;
  double rfac0, rmin0;
};

// Per-call data: the edges of the batched graph (any length; those beyond the pair
// cutoff are skipped and get a zero gradient), grouped by centre atom (offsets is
// the CSR over edges), and the per-element parameters of the descriptor.
template <typename T>
struct SnaCall {
  const T* vectors;        // (E, 3) edge vectors r_j - r_i
  const int64_t* neighbor; // (E) atom j of every edge
  const int64_t* offsets;  // (n_atoms + 1)
  const int64_t* species;  // (n_atoms)
  const T* pair_rcut;      // (n_elements, n_elements) cutoffs rcutfac (R_i + R_j)
  const T* elem_weight;    // (n_elements) neighbour weights
  const T* elem_sinner;    // (n_elements) or null (switchinnerflag)
  const T* elem_dinner;    // (n_elements) or null
  const T* coeff;          // (n_elements, 1 + K) linear coefficients (fused mode) or null
  const T* quad;           // (n_elements, K, K) symmetric quadratic matrices, or null
  const T* dedb;           // (n_atoms, K) dE/dB (two-pass mode) or null
  T* uhalf;                // (n_atoms, S, H, 2) densities kept between passes, or null
  T* energies;             // (n_atoms) or null
  T* descriptors;          // (n_atoms, K) or null
  T* edge_grad;            // (E, 3) dE/dr_ij or null
  T* jacobian;             // (E, K, 3) dB_ik/dr_ij (descriptor Jacobian) or null
  const T* nn_params;      // NN-SNAP per element: mean (K), std (K), then W (out x in)
                           // and b (out) of every layer; nn_stride values per element
  const int64_t* nn_sizes; // (nn_layers + 1) widths, K first, 1 last
  const int64_t* nn_acts;  // (nn_layers) 0 linear, 1 tanh, 2 sigmoid, 3 relu
  int64_t n_atoms, n_edges, n_elements;
  int64_t nn_layers, nn_stride, nn_width;  // nn_width: sum of the widths
};

// Complex entries stored for one edge's recursion: every layer j keeps rows
// 0..j/2 (plus the mirror row h+1 of odd j < twojmax), each of width j+1.
SNA_HD int64_t sna_layer_store_size(int64_t twojmax) {
  int64_t n = 0;
  for (int64_t j = 0; j <= twojmax; ++j) n += (j / 2 + 2) * (j + 1);
  return n;
}

// Workspace of one atom (per thread), in units of T.
SNA_HD int64_t sna_workspace_size(const SnaTables& t) {
  const int64_t S = t.n_slots;
  const int64_t L = (t.twojmax + 2) * (t.twojmax + 2);
  return 2 * (S * t.H)          // half densities
         + 2 * (S * t.U)        // full densities
         + 2 * (S * S * t.n_z)  // Z
         + 2 * (S * S * t.n_z)  // dE/dZ
         + 2 * (S * t.U)        // dE/dU (full)
         + 2 * (S * t.H)        // Y (half)
         + t.K                  // B or dE/dB
         + 2 * sna_layer_store_size(t.twojmax)  // one edge's layers
         + 2 * 2 * L;           // adjoints of two layers
}

template <typename T>
struct SnaEdge {
  T x, y, z, r, car, cai, cbr, cbi, sfac, dsfac;
  T dcar[3], dcai[3], dcbr[3], dcbi[3];
  int64_t slot;
};

// Edge e of centre atom i: false when it lies beyond the pair cutoff (or on the
// centre, r^2 <= 1e-20, as in LAMMPS). Otherwise the Cayley-Klein parameters conj(a),
// conj(b), the switching function (times the neighbour weight), the chemistry slot
// and, with need_d, the derivatives with respect to r_ij.
template <typename T>
SNA_HD bool sna_edge_setup(const SnaTables& t, const SnaCall<T>& c, int64_t i, int64_t e,
                           bool need_d, SnaEdge<T>& g) {
  const T pi = (T)3.14159265358979323846;
  g.x = c.vectors[3 * e];
  g.y = c.vectors[3 * e + 1];
  g.z = c.vectors[3 * e + 2];
  const T rsq = g.x * g.x + g.y * g.y + g.z * g.z;
  const int64_t si = c.species[i], sj = c.species[c.neighbor[e]];
  const T rcut = c.pair_rcut[si * c.n_elements + sj];
  if (!(rsq < rcut * rcut && rsq > (T)1e-20)) return false;
  g.slot = t.chemflag ? sj : 0;
  const T r = sqrt(rsq);
  g.r = r;
  const T rmin0 = (T)t.rmin0;
  const T rscale0 = (T)t.rfac0 * pi / (rcut - rmin0);
  const T theta0 = (r - rmin0) * rscale0;
  const T z0 = r * cos(theta0) / sin(theta0);
  const T r0inv = (T)1 / sqrt(rsq + z0 * z0);
  g.car = z0 * r0inv;
  g.cai = g.z * r0inv;
  g.cbr = g.y * r0inv;
  g.cbi = g.x * r0inv;
  // switching function times the neighbour weight
  T sfac, dsfac;
  if (t.switchflag && r > rmin0) {
    const T fac = pi / (rcut - rmin0);
    const T xx = (r - rmin0) * fac;
    sfac = (T)0.5 * (cos(xx) + (T)1);
    dsfac = (T)-0.5 * sin(xx) * fac;
  } else {
    sfac = (T)1;
    dsfac = (T)0;
  }
  if (t.switchinnerflag) {
    const T ri = (T)0.5 * (c.elem_sinner[si] + c.elem_sinner[sj]);
    const T dri = (T)0.5 * (c.elem_dinner[si] + c.elem_dinner[sj]);
    const T fac = pi / dri;
    const T xx = (r - ri) * fac;
    T sw, dsw = (T)0;
    if (r >= ri + dri) {
      sw = (T)1;
    } else if (r > ri) {
      sw = (T)0.5 * ((T)1 - cos(xx));
      dsw = (T)0.5 * sin(xx) * fac;
    } else {
      sw = (T)0;
    }
    dsfac = dsfac * sw + sfac * dsw;
    sfac = sfac * sw;
  }
  const T w = c.elem_weight[sj];
  g.sfac = sfac * w;
  g.dsfac = dsfac * w;
  if (!need_d) return true;
  const T dz0dr = z0 / r - (r * rscale0) * (rsq + z0 * z0) / rsq;
  const T u[3] = {g.x / r, g.y / r, g.z / r};
  const T k = -(r0inv * r0inv * r0inv) * (r + z0 * dz0dr);
  for (int d = 0; d < 3; ++d) {
    const T dr0 = k * u[d];
    g.dcar[d] = dz0dr * u[d] * r0inv + z0 * dr0;
    g.dcai[d] = g.z * dr0;
    g.dcbr[d] = g.y * dr0;
    g.dcbi[d] = g.x * dr0;
  }
  g.dcai[2] += r0inv;
  g.dcbr[1] += r0inv;
  g.dcbi[0] += r0inv;
  return true;
}

// Forward Wigner recursion of one edge over the half set (VMK 4.8.2), every layer
// kept in `lay` (interleaved re, im) for the reverse sweep.
// MODE 0: add sfac * u to the half density `acc`.
// MODE 1: return L = sum_h Re(conj(Y_h) u_h).
template <typename T, int MODE>
SNA_HD T sna_edge_forward(const SnaTables& t, const SnaEdge<T>& g, T* lay, T* acc,
                          const T* Y) {
  const int twojmax = (int)t.twojmax;
  const int64_t rps = t.twojmax + 2;
  const T car = g.car, cai = g.cai, cbr = g.cbr, cbi = g.cbi;
  const T sf = g.sfac;
  T L = (T)0;
  lay[0] = (T)1;
  lay[1] = (T)0;
  if (MODE == 0) acc[0] += sf;
  else L = Y[0];
  const T* prev = lay;
  T* next = lay + 2 * 2;  // layer 0 occupies (0/2 + 2) * 1 entries
  int64_t pos = 1;
  for (int j = 1; j <= twojmax; ++j) {
    const int h = j / 2;
    const int pw = j, nw = j + 1;
    for (int mb = 0; mb <= h; ++mb) {
      const T* prow = prev + 2 * (int64_t)mb * pw;
      T* nrow = next + 2 * (int64_t)mb * nw;
      const double* rpa = t.rootpq + (int64_t)(j - mb);  // rootpq[p][j-mb] = rpa[p * rps]
      const int nkeep = (2 * mb == j) ? h + 1 : nw;
      T Br = (T)0, Bi = (T)0;  // b-term of entry ma, from prev[ma - 1]
      for (int ma = 0; ma <= j; ++ma) {
        T nr = -Br, ni = -Bi;
        if (ma < j) {
          const T Ar = prow[2 * ma], Ai = prow[2 * ma + 1];
          const T coa = (T)rpa[(int64_t)(j - ma) * rps];
          nr += coa * (car * Ar - cai * Ai);
          ni += coa * (car * Ai + cai * Ar);
          const T cob = (T)rpa[(int64_t)(ma + 1) * rps];
          Br = cob * (cbr * Ar - cbi * Ai);
          Bi = cob * (cbr * Ai + cbi * Ar);
        }
        nrow[2 * ma] = nr;
        nrow[2 * ma + 1] = ni;
        if (ma < nkeep) {
          if (MODE == 0) {
            acc[2 * pos] += sf * nr;
            acc[2 * pos + 1] += sf * ni;
          } else {
            L += Y[2 * pos] * nr + Y[2 * pos + 1] * ni;
          }
          ++pos;
        }
      }
    }
    if ((j & 1) && j < twojmax) {
      // mirror row h+1: u[h+1][ma] = (-1)^(h+1-ma) conj(u[h][j-ma])
      const T* src = next + 2 * (int64_t)h * nw;
      T* dst = next + 2 * (int64_t)(h + 1) * nw;
      for (int ma = 0; ma <= j; ++ma) {
        const T sg = ((h + 1 - ma) & 1) ? (T)-1 : (T)1;
        dst[2 * ma] = sg * src[2 * (j - ma)];
        dst[2 * ma + 1] = -sg * src[2 * (j - ma) + 1];
      }
    }
    prev = next;
    next += 2 * (int64_t)(h + 2) * nw;
  }
  return L;
}

// Reverse sweep after sna_edge_forward<T, 1>: dL/d(car, cai, cbr, cbi) into g4.
// G0/G1 hold the adjoints of the current and the next layer (rows x width).
template <typename T>
SNA_HD void sna_edge_reverse(const SnaTables& t, const SnaEdge<T>& g, const T* lay,
                             const T* Y, T* G0, T* G1, T g4[4]) {
  const int twojmax = (int)t.twojmax;
  const int64_t rps = t.twojmax + 2;
  const T car = g.car, cai = g.cai, cbr = g.cbr, cbi = g.cbi;
  T gar = (T)0, gai = (T)0, gbr = (T)0, gbi = (T)0;
  // offsets of the stored layers and of their half-set entries
  int64_t lay_end = 0, pos_end = 0;
  for (int j = 0; j <= twojmax; ++j) {
    lay_end += 2 * (int64_t)(j / 2 + 2) * (j + 1);
    pos_end += (j % 2 == 1) ? (int64_t)(j / 2 + 1) * (j + 1)
                            : (int64_t)(j / 2) * (j + 1) + j / 2 + 1;
  }
  T* G = G0;      // adjoint of layer j (rows x (j+1))
  T* Gp = G1;     // adjoint of layer j-1 being built
  int next_rows = 0;  // rows of the adjoint handed down from layer j+1
  for (int j = twojmax; j >= 1; --j) {
    const int h = j / 2;
    const int nw = j + 1, pw = j;
    const bool mirror = (j & 1) && j < twojmax;
    const int rows = mirror ? h + 2 : h + 1;
    lay_end -= 2 * (int64_t)(h + 2) * nw;  // start of layer j
    const int64_t layer_half = (j % 2 == 1) ? (int64_t)(h + 1) * nw : (int64_t)h * nw + h + 1;
    pos_end -= layer_half;                  // first half-set position of layer j
    // G = Y (half entries) + what layer j+1 handed down (already in G for rows < next_rows)
    int64_t pos = pos_end;
    for (int mb = 0; mb < rows; ++mb) {
      const int nkeep = (mb > h) ? 0 : ((2 * mb == j) ? h + 1 : nw);
      T* grow = G + 2 * (int64_t)mb * nw;
      for (int ma = 0; ma < nw; ++ma) {
        T r = (T)0, i = (T)0;
        if (mb < next_rows) {
          r = grow[2 * ma];
          i = grow[2 * ma + 1];
        }
        if (ma < nkeep) {
          r += Y[2 * pos];
          i += Y[2 * pos + 1];
          ++pos;
        }
        grow[2 * ma] = r;
        grow[2 * ma + 1] = i;
      }
    }
    if (mirror) {  // u[h+1][ma] = s conj(u[h][j-ma])
      const T* gm = G + 2 * (int64_t)(h + 1) * nw;
      T* gh = G + 2 * (int64_t)h * nw;
      for (int ma = 0; ma <= j; ++ma) {
        const T sg = ((h + 1 - ma) & 1) ? (T)-1 : (T)1;
        gh[2 * (j - ma)] += sg * gm[2 * ma];
        gh[2 * (j - ma) + 1] -= sg * gm[2 * ma + 1];
      }
    }
    // through n[mb][ma] = coa ca A[mb][ma] - cob cb A[mb][ma-1] to ca, cb and A (layer j-1)
    const T* A = lay + (lay_end - 2 * (int64_t)((j - 1) / 2 + 2) * pw);
    for (int mb = 0; mb <= h; ++mb) {
      const double* rpa = t.rootpq + (int64_t)(j - mb);
      const T* grow = G + 2 * (int64_t)mb * nw;
      const T* arow = A + 2 * (int64_t)mb * pw;
      T* prow = Gp + 2 * (int64_t)mb * pw;
      SNA_SIMD_SUM(gar, gai, gbr, gbi)
      for (int m = 0; m < pw; ++m) {
        const T coa = (T)rpa[(int64_t)(j - m) * rps];
        const T cob = (T)rpa[(int64_t)(m + 1) * rps];
        const T Gar = coa * grow[2 * m], Gai = coa * grow[2 * m + 1];
        const T Gbr = cob * grow[2 * (m + 1)], Gbi = cob * grow[2 * (m + 1) + 1];
        const T Ar = arow[2 * m], Ai = arow[2 * m + 1];
        gar += Ar * Gar + Ai * Gai;
        gai += Ar * Gai - Ai * Gar;
        gbr -= Ar * Gbr + Ai * Gbi;
        gbi -= Ar * Gbi - Ai * Gbr;
        prow[2 * m] = car * Gar + cai * Gai - (cbr * Gbr + cbi * Gbi);
        prow[2 * m + 1] = car * Gai - cai * Gar - (cbr * Gbi - cbi * Gbr);
      }
    }
    next_rows = h + 1;
    T* tmp = G;
    G = Gp;
    Gp = tmp;
  }
  g4[0] = gar;
  g4[1] = gai;
  g4[2] = gbr;
  g4[3] = gbi;
}

// Pointers into one atom's workspace.
template <typename T>
struct SnaWork {
  T *uhalf, *ufull, *Z, *gZ, *gU, *Y, *vecK, *lay, *G0, *G1;
};

template <typename T>
SNA_HD SnaWork<T> sna_work(const SnaTables& t, T* base) {
  const int64_t S = t.n_slots;
  const int64_t L = (t.twojmax + 2) * (t.twojmax + 2);
  SnaWork<T> w;
  T* p = base;
  w.uhalf = p; p += 2 * S * t.H;
  w.ufull = p; p += 2 * S * t.U;
  w.Z = p; p += 2 * S * S * t.n_z;
  w.gZ = p; p += 2 * S * S * t.n_z;
  w.gU = p; p += 2 * S * t.U;
  w.Y = p; p += 2 * S * t.H;
  w.vecK = p; p += t.K;
  w.lay = p; p += 2 * sna_layer_store_size(t.twojmax);
  w.G0 = p; p += 2 * L;
  w.G1 = p;
  return w;
}

// Pass 1 of atom i: half densities (self term included) into `uhalf`.
template <typename T>
SNA_HD void sna_atom_densities(const SnaTables& t, const SnaCall<T>& c, int64_t i,
                               const SnaWork<T>& w, T* uhalf) {
  const int64_t S = t.n_slots, H = t.H;
  for (int64_t k = 0; k < 2 * S * H; ++k) uhalf[k] = (T)0;
  SnaEdge<T> g;
  for (int64_t e = c.offsets[i]; e < c.offsets[i + 1]; ++e) {
    if (!sna_edge_setup(t, c, i, e, false, g)) continue;
    sna_edge_forward<T, 0>(t, g, w.lay, uhalf + 2 * H * g.slot, (const T*)0);
  }
  const bool own_only = t.chemflag && !t.wselfallflag;
  for (int64_t s = 0; s < S; ++s) {
    if (own_only && s != c.species[i]) continue;
    for (int64_t k = 0; k < t.n_diag; ++k) uhalf[2 * (s * H + t.half_diag[k])] += (T)1;
  }
}

// Full matrices of an atom's densities (into w.ufull) from the half set.
template <typename T>
SNA_HD void sna_atom_full(const SnaTables& t, const SnaWork<T>& w, const T* uhalf) {
  const int64_t S = t.n_slots, H = t.H, U = t.U;
  for (int64_t s = 0; s < S; ++s) {
    const T* hs = uhalf + 2 * s * H;
    T* fs = w.ufull + 2 * s * U;
    for (int64_t f = 0; f < U; ++f) {
      const int64_t src = t.full_from_half[f];
      const double sg = t.full_sign[f];
      if (sg == 0.0) {
        fs[2 * f] = hs[2 * src];
        fs[2 * f + 1] = hs[2 * src + 1];
      } else {
        fs[2 * f] = (T)sg * hs[2 * src];
        fs[2 * f + 1] = -(T)sg * hs[2 * src + 1];
      }
    }
  }
}

// B (length K) from w.ufull and w.Z, bzero shift included.
template <typename T>
SNA_HD void sna_atom_b_from_z(const SnaTables& t, const SnaWork<T>& w, int64_t species, T* B) {
  const T* u = w.ufull;
  for (int64_t k = 0; k < t.K; ++k) B[k] = (T)0;
  for (int64_t s = 0; s < t.n_bs; ++s) {
    const T* a = u + 2 * t.bq[s];
    const T* z = w.Z + 2 * t.bz[s];
    B[t.bidx[s]] += (T)t.bw[s] * (a[0] * z[0] + a[1] * z[1]);
  }
  if (t.bzeroflag) {
    const bool own_only = t.chemflag && !t.wselfallflag;
    const int64_t n = t.n_slots;
    const int64_t own = (species * n + species) * n + species;
    for (int64_t k = 0; k < t.K; ++k)
      if (!own_only || t.triple_of_b[k] == own) B[k] -= (T)t.bzero[k];
  }
}

// Fold dE/dU of the full matrices (S x U) onto the half set (S x H): the right half of
// every u_j is (-1)^(ma-mb) conj of the left, so its gradient folds in as
// sign * conj(partner); a centre entry of an even j is real and keeps its real part.
template <typename T>
SNA_HD void sna_fold_half(const SnaTables& t, const T* gU, T* Yout) {
  const int64_t H = t.H, U = t.U;
  for (int64_t s = 0; s < t.n_slots; ++s) {
    const T* G = gU + 2 * s * U;
    T* Y = Yout + 2 * s * H;
    for (int64_t h = 0; h < H; ++h) {
      const T* l = G + 2 * t.half_index[h];
      const double sg = t.half_sign[h];
      if (sg == 0.0) {
        Y[2 * h] = l[0];
        Y[2 * h + 1] = (T)0;
      } else {
        const T* p = G + 2 * t.half_partner[h];
        Y[2 * h] = l[0] + (T)sg * p[0];
        Y[2 * h + 1] = l[1] - (T)sg * p[1];
      }
    }
  }
}

// Z and B (into `B`, length K) of an atom from its half densities.
template <typename T>
SNA_HD void sna_atom_bispectrum(const SnaTables& t, const SnaWork<T>& w, const T* uhalf,
                                int64_t species, T* B) {
  sna_atom_full(t, w, uhalf);
  const int64_t NZ = t.n_slots * t.n_slots * t.n_z;
  const T* u = w.ufull;
  for (int64_t z = 0; z < NZ; ++z) {
    T zr = (T)0, zi = (T)0;
    for (int32_t q = t.zoff[z]; q < t.zoff[z + 1]; ++q) {
      const T* a = u + 2 * t.zp1[q];
      const T* b = u + 2 * t.zp2[q];
      const T cf = (T)t.zcoef[q];
      zr += cf * (a[0] * b[0] - a[1] * b[1]);
      zi += cf * (a[0] * b[1] + a[1] * b[0]);
    }
    w.Z[2 * z] = zr;
    w.Z[2 * z + 1] = zi;
  }
  sna_atom_b_from_z(t, w, species, B);
}

// From the half densities and dE/dB: Z, B (into `B` when not null) and the adjoint
// Y = dE/dU on the half set (into w.Y), in one sweep over the Z terms.
//
// B = sum_s bw Re(conj(u_q) Z_z) gives dE/dZ_z = sum_s gB u_q (independent of Z, so
// known before Z) and dE/du_q += gB Z_z; Z_z = sum c u_p1 u_p2 then passes dE/dZ on
// to u_p1 and u_p2. The same "gradient" convention as the torch route.
template <typename T>
SNA_HD void sna_atom_z_adjoint(const SnaTables& t, const SnaWork<T>& w, const T* uhalf,
                               int64_t species, const T* dedb, T* B) {
  const int64_t S = t.n_slots, U = t.U;
  const int64_t NZ = S * S * t.n_z;
  sna_atom_full(t, w, uhalf);
  const T* u = w.ufull;
  for (int64_t k = 0; k < 2 * NZ; ++k) w.gZ[k] = (T)0;
  for (int64_t k = 0; k < 2 * S * U; ++k) w.gU[k] = (T)0;
  for (int64_t s = 0; s < t.n_bs; ++s) {
    const T gb = dedb[t.bidx[s]] * (T)t.bw[s];
    const T* a = u + 2 * t.bq[s];
    T* gz = w.gZ + 2 * t.bz[s];
    gz[0] += a[0] * gb;
    gz[1] += a[1] * gb;
  }
  T* gU = w.gU;
  for (int64_t z = 0; z < NZ; ++z) {
    const T gr = w.gZ[2 * z], gi = w.gZ[2 * z + 1];
    T zr = (T)0, zi = (T)0;
    for (int32_t q = t.zoff[z]; q < t.zoff[z + 1]; ++q) {
      const int32_t i1 = t.zp1[q], i2 = t.zp2[q];
      const T cf = (T)t.zcoef[q];
      const T ar = u[2 * i1], ai = u[2 * i1 + 1];
      const T br = u[2 * i2], bi = u[2 * i2 + 1];
      zr += cf * (ar * br - ai * bi);
      zi += cf * (ar * bi + ai * br);
      const T pr = gr * cf, pi = gi * cf;
      // gU[p1] += gP conj(u[p2]); gU[p2] += gP conj(u[p1])
      gU[2 * i1] += pr * br + pi * bi;
      gU[2 * i1 + 1] += pi * br - pr * bi;
      gU[2 * i2] += pr * ar + pi * ai;
      gU[2 * i2 + 1] += pi * ar - pr * ai;
    }
    w.Z[2 * z] = zr;
    w.Z[2 * z + 1] = zi;
  }
  for (int64_t s = 0; s < t.n_bs; ++s) {
    const T gb = dedb[t.bidx[s]] * (T)t.bw[s];
    const T* z = w.Z + 2 * t.bz[s];
    T* gu = gU + 2 * t.bq[s];
    gu[0] += z[0] * gb;
    gu[1] += z[1] * gb;
  }
  if (B) sna_atom_b_from_z(t, w, species, B);
  sna_fold_half(t, gU, w.Y);
}

// dE/dr_ij of every edge of atom i from its adjoint (w.Y).
template <typename T>
SNA_HD void sna_atom_edge_grads(const SnaTables& t, const SnaCall<T>& c, int64_t i,
                                const SnaWork<T>& w) {
  SnaEdge<T> g;
  for (int64_t e = c.offsets[i]; e < c.offsets[i + 1]; ++e) {
    if (!sna_edge_setup(t, c, i, e, true, g)) {
      c.edge_grad[3 * e] = c.edge_grad[3 * e + 1] = c.edge_grad[3 * e + 2] = (T)0;
      continue;
    }
    const T* Y = w.Y + 2 * t.H * g.slot;
    const T L = sna_edge_forward<T, 1>(t, g, w.lay, (T*)0, Y);
    T g4[4];
    sna_edge_reverse(t, g, w.lay, Y, w.G0, w.G1, g4);
    T dL[3];
    for (int d = 0; d < 3; ++d)
      dL[d] = g4[0] * g.dcar[d] + g4[1] * g.dcai[d] + g4[2] * g.dcbr[d] + g4[3] * g.dcbi[d];
    const T rinv = (T)1 / g.r;
    const T k = L * g.dsfac * rinv;
    c.edge_grad[3 * e] = g.sfac * dL[0] + k * g.x;
    c.edge_grad[3 * e + 1] = g.sfac * dL[1] + k * g.y;
    c.edge_grad[3 * e + 2] = g.sfac * dL[2] + k * g.z;
  }
}

// ---- the per-index entry points the drivers loop over -------------------------

// Linear (or, with c.quad, quadratic) SNAP in one pass: energies and (with edge_grad)
// edge gradients. The workspace needs K extra values for the quadratic model.
template <typename T>
SNA_HD void sna_fused_linear_atom(const SnaTables& t, const SnaCall<T>& c, int64_t i, T* ws) {
  SnaWork<T> w = sna_work(t, ws);
  sna_atom_densities(t, c, i, w, w.uhalf);
  const int64_t sp = c.species[i];
  T* B = w.vecK;
  const int64_t K = t.K;
  const T* beta = c.coeff + sp * (1 + K);
  if (c.quad) {
    // quadratic SNAP: E = beta_0 + beta.B + B.A.B / 2, dE/dB = beta + A.B (needs B first)
    T* g = ws + sna_workspace_size(t);
    sna_atom_bispectrum(t, w, w.uhalf, sp, B);
    const T* A = c.quad + sp * K * K;
    T e = beta[0];
    for (int64_t k = 0; k < K; ++k) {
      T ab = (T)0;
      for (int64_t l = 0; l < K; ++l) ab += A[k * K + l] * B[l];
      e += B[k] * (beta[1 + k] + (T)0.5 * ab);
      g[k] = beta[1 + k] + ab;
    }
    if (c.energies) c.energies[i] = e;
    if (c.descriptors)
      for (int64_t k = 0; k < K; ++k) c.descriptors[i * K + k] = B[k];
    if (!c.edge_grad) return;
    sna_atom_z_adjoint(t, w, w.uhalf, sp, g, (T*)0);
    sna_atom_edge_grads(t, c, i, w);
    return;
  }
  if (c.edge_grad) {
    sna_atom_z_adjoint(t, w, w.uhalf, sp, beta + 1, B);
  } else {
    sna_atom_bispectrum(t, w, w.uhalf, sp, B);
  }
  if (c.descriptors)
    for (int64_t k = 0; k < K; ++k) c.descriptors[i * K + k] = B[k];
  if (c.energies) {
    T e = beta[0];
    for (int64_t k = 0; k < K; ++k) e += beta[1 + k] * B[k];
    c.energies[i] = e;
  }
  if (c.edge_grad) sna_atom_edge_grads(t, c, i, w);
}

// Two-pass models, pass 1: descriptors (and the densities for pass 2).
template <typename T>
SNA_HD void sna_descriptors_atom(const SnaTables& t, const SnaCall<T>& c, int64_t i, T* ws) {
  SnaWork<T> w = sna_work(t, ws);
  T* uh = c.uhalf ? c.uhalf + 2 * t.n_slots * t.H * i : w.uhalf;
  sna_atom_densities(t, c, i, w, uh);
  sna_atom_bispectrum(t, w, uh, c.species[i], c.descriptors + i * t.K);
}

// Two-pass models, pass 2: edge gradients from dE/dB and the kept densities.
template <typename T>
SNA_HD void sna_gradient_atom(const SnaTables& t, const SnaCall<T>& c, int64_t i, T* ws) {
  SnaWork<T> w = sna_work(t, ws);
  const T* uh = c.uhalf + 2 * t.n_slots * t.H * i;
  sna_atom_z_adjoint(t, w, uh, c.species[i], c.dedb + i * t.K, (T*)0);
  sna_atom_edge_grads(t, c, i, w);
}

// ---- descriptor Jacobian (fitting): dB_ik / dr_ij for every edge and component ----

// Workspace of one atom for the Jacobian (in T): the evaluation workspace plus the
// adjoints of all K components, one edge's u, du and the layer derivatives.
SNA_HD int64_t sna_jacobian_workspace_size(const SnaTables& t) {
  return sna_workspace_size(t) + 2 * t.K * t.n_slots * t.H + 2 * t.H + 2 * 3 * t.H +
         2 * 3 * sna_layer_store_size(t.twojmax);
}

// Forward-mode recursion of one edge: u (half set, into uo) and du/dr (3 x half set,
// into duo), without the switching function. dlay holds the layer derivatives.
template <typename T>
SNA_HD void sna_edge_tangent(const SnaTables& t, const SnaEdge<T>& g, T* lay, T* dlay, T* uo,
                             T* duo) {
  const int twojmax = (int)t.twojmax;
  const int64_t rps = t.twojmax + 2;
  const int64_t LS = 2 * sna_layer_store_size(t.twojmax);  // stride of one derivative
  const int64_t H2 = 2 * t.H;
  const T car = g.car, cai = g.cai, cbr = g.cbr, cbi = g.cbi;
  lay[0] = (T)1;
  lay[1] = (T)0;
  uo[0] = (T)1;
  uo[1] = (T)0;
  for (int d = 0; d < 3; ++d) {
    dlay[d * LS] = dlay[d * LS + 1] = (T)0;
    duo[d * H2] = duo[d * H2 + 1] = (T)0;
  }
  int64_t prev = 0, next = 2 * 2;
  int64_t pos = 1;
  for (int j = 1; j <= twojmax; ++j) {
    const int h = j / 2;
    const int pw = j, nw = j + 1;
    for (int mb = 0; mb <= h; ++mb) {
      const double* rpa = t.rootpq + (int64_t)(j - mb);
      const int nkeep = (2 * mb == j) ? h + 1 : nw;
      for (int ma = 0; ma <= j; ++ma) {
        T nr = (T)0, ni = (T)0, dnr[3] = {(T)0, (T)0, (T)0}, dni[3] = {(T)0, (T)0, (T)0};
        if (ma < j) {
          const int64_t q = prev + 2 * ((int64_t)mb * pw + ma);
          const T coa = (T)rpa[(int64_t)(j - ma) * rps];
          const T Ar = lay[q], Ai = lay[q + 1];
          nr = coa * (car * Ar - cai * Ai);
          ni = coa * (car * Ai + cai * Ar);
          for (int d = 0; d < 3; ++d) {
            const T dAr = dlay[d * LS + q], dAi = dlay[d * LS + q + 1];
            dnr[d] = coa * (g.dcar[d] * Ar + car * dAr - g.dcai[d] * Ai - cai * dAi);
            dni[d] = coa * (g.dcar[d] * Ai + car * dAi + g.dcai[d] * Ar + cai * dAr);
          }
        }
        if (ma >= 1) {
          const int64_t q = prev + 2 * ((int64_t)mb * pw + ma - 1);
          const T cob = (T)rpa[(int64_t)ma * rps];
          const T Ar = lay[q], Ai = lay[q + 1];
          nr -= cob * (cbr * Ar - cbi * Ai);
          ni -= cob * (cbr * Ai + cbi * Ar);
          for (int d = 0; d < 3; ++d) {
            const T dAr = dlay[d * LS + q], dAi = dlay[d * LS + q + 1];
            dnr[d] -= cob * (g.dcbr[d] * Ar + cbr * dAr - g.dcbi[d] * Ai - cbi * dAi);
            dni[d] -= cob * (g.dcbr[d] * Ai + cbr * dAi + g.dcbi[d] * Ar + cbi * dAr);
          }
        }
        const int64_t o = next + 2 * ((int64_t)mb * nw + ma);
        lay[o] = nr;
        lay[o + 1] = ni;
        for (int d = 0; d < 3; ++d) {
          dlay[d * LS + o] = dnr[d];
          dlay[d * LS + o + 1] = dni[d];
        }
        if (ma < nkeep) {
          uo[2 * pos] = nr;
          uo[2 * pos + 1] = ni;
          for (int d = 0; d < 3; ++d) {
            duo[d * H2 + 2 * pos] = dnr[d];
            duo[d * H2 + 2 * pos + 1] = dni[d];
          }
          ++pos;
        }
      }
    }
    if ((j & 1) && j < twojmax) {
      for (int ma = 0; ma <= j; ++ma) {
        const T sg = ((h + 1 - ma) & 1) ? (T)-1 : (T)1;
        const int64_t src = next + 2 * ((int64_t)h * nw + (j - ma));
        const int64_t dst = next + 2 * ((int64_t)(h + 1) * nw + ma);
        lay[dst] = sg * lay[src];
        lay[dst + 1] = -sg * lay[src + 1];
        for (int d = 0; d < 3; ++d) {
          dlay[d * LS + dst] = sg * dlay[d * LS + src];
          dlay[d * LS + dst + 1] = -sg * dlay[d * LS + src + 1];
        }
      }
    }
    prev = next;
    next += 2 * (int64_t)(h + 2) * nw;
  }
}

// dB_k/dU of one component on the half set (into Yk, S x H), after sna_atom_bispectrum
// (w.ufull and w.Z hold the atom's matrices). Only the Z entries of component k's
// own (j1, j2, j) block are visited.
template <typename T>
SNA_HD void sna_component_adjoint(const SnaTables& t, const SnaWork<T>& w, int64_t k, T* Yk) {
  const int64_t S = t.n_slots, U = t.U;
  const T* u = w.ufull;
  T* gU = w.gU;
  for (int64_t q = 0; q < 2 * S * U; ++q) gU[q] = (T)0;
  for (int32_t s = t.boff[k]; s < t.boff[k + 1]; ++s) {
    const T gb = (T)t.bw[s];
    const int32_t z = t.bz[s];
    const T* a = u + 2 * t.bq[s];
    const T gr = a[0] * gb, gi = a[1] * gb;
    for (int32_t q = t.zoff[z]; q < t.zoff[z + 1]; ++q) {
      const int32_t i1 = t.zp1[q], i2 = t.zp2[q];
      const T cf = (T)t.zcoef[q];
      const T pr = gr * cf, pi = gi * cf;
      const T ar = u[2 * i1], ai = u[2 * i1 + 1];
      const T br = u[2 * i2], bi = u[2 * i2 + 1];
      gU[2 * i1] += pr * br + pi * bi;
      gU[2 * i1 + 1] += pi * br - pr * bi;
      gU[2 * i2] += pr * ar + pi * ai;
      gU[2 * i2 + 1] += pi * ar - pr * ai;
    }
    const T* zz = w.Z + 2 * z;
    gU[2 * t.bq[s]] += zz[0] * gb;
    gU[2 * t.bq[s] + 1] += zz[1] * gb;
  }
  sna_fold_half(t, gU, Yk);
}

// Descriptors of atom i and the Jacobian rows of its edges.
template <typename T>
SNA_HD void sna_jacobian_atom(const SnaTables& t, const SnaCall<T>& c, int64_t i, T* ws) {
  SnaWork<T> w = sna_work(t, ws);
  const int64_t S = t.n_slots, H = t.H, K = t.K;
  T* Yall = ws + sna_workspace_size(t);
  T* uo = Yall + 2 * K * S * H;
  T* duo = uo + 2 * H;
  T* dlay = duo + 2 * 3 * H;
  sna_atom_densities(t, c, i, w, w.uhalf);
  sna_atom_bispectrum(t, w, w.uhalf, c.species[i], c.descriptors + i * K);
  for (int64_t k = 0; k < K; ++k) sna_component_adjoint(t, w, k, Yall + 2 * k * S * H);
  SnaEdge<T> g;
  for (int64_t e = c.offsets[i]; e < c.offsets[i + 1]; ++e) {
    T* out = c.jacobian + e * K * 3;
    if (!sna_edge_setup(t, c, i, e, true, g)) {
      for (int64_t k = 0; k < 3 * K; ++k) out[k] = (T)0;
      continue;
    }
    sna_edge_tangent(t, g, w.lay, dlay, uo, duo);
    const T rinv = (T)1 / g.r;
    const T unit[3] = {g.x * rinv, g.y * rinv, g.z * rinv};
    const int64_t slot = g.slot;
    for (int64_t k = 0; k < K; ++k) {
      const T* Y = Yall + 2 * (k * S + slot) * H;
      T L = (T)0, d0 = (T)0, d1 = (T)0, d2 = (T)0;
      // dB_k/dU lives on the layers j1, j2, j of component k's triple only
      const int32_t* jl = t.klayers + 3 * k;
      for (int m = 0; m < 3; ++m) {
        if ((m >= 1 && jl[m] == jl[0]) || (m == 2 && jl[2] == jl[1])) continue;
        const int64_t q0 = 2 * (int64_t)t.layer_off[jl[m]];
        const int64_t q1 = 2 * (int64_t)t.layer_off[jl[m] + 1];
        SNA_SIMD_SUM(L, d0, d1, d2)
        for (int64_t q = q0; q < q1; ++q) {
          const T y = Y[q];
          L += y * uo[q];
          d0 += y * duo[q];
          d1 += y * duo[2 * H + q];
          d2 += y * duo[4 * H + q];
        }
      }
      const T k2 = L * g.dsfac;
      out[3 * k] = g.sfac * d0 + k2 * unit[0];
      out[3 * k + 1] = g.sfac * d1 + k2 * unit[1];
      out[3 * k + 2] = g.sfac * d2 + k2 * unit[2];
    }
  }
}

// ---- NN-SNAP fused: the per-element network evaluated inside the kernel --------

SNA_HD int64_t sna_nn_workspace_size(const SnaTables& t, int64_t nn_width) {
  return sna_workspace_size(t) + 2 * nn_width + t.K;
}

// E_i = NN((B - mean) / std) and dE/dB (into dedb, length K) for one atom.
template <typename T>
SNA_HD T sna_nn_atom(const SnaCall<T>& c, int64_t species, int64_t K, const T* B, T* act,
                     T* grad, T* dedb) {
  const T* p = c.nn_params + species * c.nn_stride;
  const T* mean = p;
  const T* stdv = p + K;
  p += 2 * K;
  // forward: act holds the outputs of every layer, back to back (input first)
  T* h = act;
  for (int64_t k = 0; k < K; ++k) h[k] = (B[k] - mean[k]) / stdv[k];
  const T* W = p;
  for (int64_t l = 0; l < c.nn_layers; ++l) {
    const int64_t nin = c.nn_sizes[l], nout = c.nn_sizes[l + 1];
    const T* b = W + nin * nout;
    T* out = h + nin;
    for (int64_t o = 0; o < nout; ++o) {
      T z = b[o];
      const T* w = W + o * nin;
      for (int64_t q = 0; q < nin; ++q) z += w[q] * h[q];
      switch (c.nn_acts[l]) {
        case 1: z = tanh(z); break;
        case 2: z = (T)1 / ((T)1 + exp(-z)); break;
        case 3: z = z > (T)0 ? z : (T)0; break;
        default: break;
      }
      out[o] = z;
    }
    h = out;
    W = b + nout;
  }
  const T energy = h[0];
  // backward: grad (same layout as act) holds dE/d(layer output)
  int64_t off = 0;
  for (int64_t l = 0; l < c.nn_layers; ++l) off += c.nn_sizes[l];
  for (int64_t l = c.nn_layers - 1; l >= 0; --l) {
    const int64_t nin = c.nn_sizes[l], nout = c.nn_sizes[l + 1];
    // W of layer l
    const T* Wl = p;
    for (int64_t m = 0; m < l; ++m) Wl += c.nn_sizes[m + 1] * (c.nn_sizes[m] + 1);
    const T* y = act + off;          // outputs of layer l
    T* gy = grad + off;
    if (l == c.nn_layers - 1) gy[0] = (T)1;
    const int64_t in_off = off - nin;
    T* gx = grad + in_off;
    for (int64_t q = 0; q < nin; ++q) gx[q] = (T)0;
    for (int64_t o = 0; o < nout; ++o) {
      T gz = gy[o];
      switch (c.nn_acts[l]) {
        case 1: gz *= (T)1 - y[o] * y[o]; break;
        case 2: gz *= y[o] * ((T)1 - y[o]); break;
        case 3: gz = y[o] > (T)0 ? gz : (T)0; break;
        default: break;
      }
      const T* w = Wl + o * nin;
      for (int64_t q = 0; q < nin; ++q) gx[q] += gz * w[q];
    }
    off = in_off;
  }
  for (int64_t k = 0; k < K; ++k) dedb[k] = grad[k] / stdv[k];
  return energy;
}

// Workspace (in T) of one atom for kernel `kind` (0 fused linear/quadratic, 1
// descriptors, 2 gradients, 3 Jacobian, 4 fused NN-SNAP): the one definition the CPU
// driver and the GPU launcher size their buffers with.
SNA_HD int64_t sna_kind_workspace_size(int kind, const SnaTables& t, int64_t nn_width) {
  if (kind == 3) return sna_jacobian_workspace_size(t);
  if (kind == 4) return sna_nn_workspace_size(t, nn_width);
  return sna_workspace_size(t) + t.K;  // + K: dE/dB of the quadratic model
}

// NN-SNAP in one pass: energies and edge gradients.
template <typename T>
SNA_HD void sna_fused_nn_atom(const SnaTables& t, const SnaCall<T>& c, int64_t i, T* ws) {
  SnaWork<T> w = sna_work(t, ws);
  T* act = ws + sna_workspace_size(t);
  T* grad = act + c.nn_width;
  T* dedb = grad + c.nn_width;
  const int64_t sp = c.species[i];
  sna_atom_densities(t, c, i, w, w.uhalf);
  T* B = w.vecK;
  sna_atom_bispectrum(t, w, w.uhalf, sp, B);
  const T e = sna_nn_atom(c, sp, t.K, B, act, grad, dedb);
  if (c.energies) c.energies[i] = e;
  if (c.descriptors)
    for (int64_t k = 0; k < t.K; ++k) c.descriptors[i * t.K + k] = B[k];
  if (!c.edge_grad) return;
  sna_atom_z_adjoint(t, w, w.uhalf, sp, dedb, (T*)0);
  sna_atom_edge_grads(t, c, i, w);
}
