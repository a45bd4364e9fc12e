// CPU driver of the SNAP kernels (sna_core.h): a plain C ABI over raw pointers,
// loaded with ctypes; no Python or torch headers at build time.
//
// Threads: `threads` workers (std::thread, created per call and joined before the
// call returns) take chunks of atoms from an atomic counter. Nothing persists between
// calls: no pool that a fork() could inherit half-locked, no spinning threads that
// would steal cycles from other processes on shared cores, and no process-global
// setting is touched. threads <= 1 runs inline on the caller's thread.
// Original code of ase_mlp (MIT).
#include "sna_core.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <thread>
#include <vector>

namespace {

template <typename F>
void parallel_atoms(int64_t n, int threads, int64_t chunk, int64_t ws_size, F body) {
  if (n <= 0) return;
  const int64_t max_workers = (n + chunk - 1) / chunk;
  const int workers = (int)std::max<int64_t>(1, std::min<int64_t>(threads, max_workers));
  std::atomic<int64_t> next(0);
  auto work = [&]() {
    std::vector<double> buffer((size_t)ws_size + 8);  // aligned for T = float or double
    for (;;) {
      const int64_t a = next.fetch_add(chunk);
      if (a >= n) break;
      const int64_t b = std::min(n, a + chunk);
      for (int64_t i = a; i < b; ++i) body(i, buffer.data());
    }
  };
  if (workers == 1) {
    work();
    return;
  }
  std::vector<std::thread> pool;
  pool.reserve(workers - 1);
  for (int k = 1; k < workers; ++k) pool.emplace_back(work);
  work();
  for (auto& th : pool) th.join();
}

template <typename T>
int run(int kind, const SnaTables* t, const SnaCall<T>* c, int threads) {
  const int64_t n_ws = sna_kind_workspace_size(kind, *t, c->nn_width);
  const int64_t ws = (n_ws * (int64_t)sizeof(T) + 7) / 8;
  const int64_t chunk = 4;
  switch (kind) {
    case 0:
      parallel_atoms(c->n_atoms, threads, chunk, ws, [&](int64_t i, double* w) {
        sna_fused_linear_atom<T>(*t, *c, i, (T*)w);
      });
      return 0;
    case 1:
      parallel_atoms(c->n_atoms, threads, chunk, ws, [&](int64_t i, double* w) {
        sna_descriptors_atom<T>(*t, *c, i, (T*)w);
      });
      return 0;
    case 2:
      parallel_atoms(c->n_atoms, threads, chunk, ws, [&](int64_t i, double* w) {
        sna_gradient_atom<T>(*t, *c, i, (T*)w);
      });
      return 0;
    case 3:
      parallel_atoms(c->n_atoms, threads, 1, ws, [&](int64_t i, double* w) {
        sna_jacobian_atom<T>(*t, *c, i, (T*)w);
      });
      return 0;
    case 4:
      parallel_atoms(c->n_atoms, threads, chunk, ws, [&](int64_t i, double* w) {
        sna_fused_nn_atom<T>(*t, *c, i, (T*)w);
      });
      return 0;
  }
  return 1;
}

// Forces and per-atom virials from edge gradients g = dE/dr_ij (r_ij = x_j - x_i):
// F_i += g, F_j -= g; W_ab = -(r_a g_b + r_b g_a) / 4 to each end (symmetrised, as
// ase_mlp.models.base.assemble). Serial, so the sums have one fixed order; it is
// O(E) with a few flops per edge, far below the cost of the model.
template <typename T>
void assemble(const T* vectors, const T* grad, const int64_t* centre, const int64_t* neighbor,
              int64_t n_edges, T* forces, T* atom_virial) {
  for (int64_t e = 0; e < n_edges; ++e) {
    const T* g = grad + 3 * e;
    if (g[0] == (T)0 && g[1] == (T)0 && g[2] == (T)0) continue;
    const int64_t i = centre[e], j = neighbor[e];
    if (forces) {
      for (int d = 0; d < 3; ++d) {
        forces[3 * i + d] += g[d];
        forces[3 * j + d] -= g[d];
      }
    }
    if (atom_virial) {
      const T* v = vectors + 3 * e;
      T* wi = atom_virial + 9 * i;
      T* wj = atom_virial + 9 * j;
      for (int a = 0; a < 3; ++a) {
        for (int b = a; b < 3; ++b) {
          const T w = (T)-0.25 * (v[a] * g[b] + v[b] * g[a]);
          wi[3 * a + b] += w;
          wj[3 * a + b] += w;
        }
      }
    }
  }
}

// All pairs of a small structure closer than the (pair) cutoff, by brute force over
// atom pairs and the lattice images that can reach: for every ordered pair (i, j) the
// shifts along periodic axis k satisfy |f_k + s_k| h_k < rc (f the fractional
// separation in the completed cell m, h_k the distance between the lattice planes).
// Output in (i, j, S) lexicographic order, as ase_mlp.neighbors.neighbor_list sorts.
// Returns the number of pairs; with capacity < count only counts.
int64_t small_pairs(int64_t n, const double* x, const double* cell, const double* minv,
                    const double* faces, const int8_t* pbc, double cutoff,
                    const int64_t* species, const double* pcm, int64_t n_species,
                    int64_t capacity, int64_t* oi, int64_t* oj, int64_t* os) {
  int64_t count = 0;
  const bool write = capacity >= 0;
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double rc = cutoff;
      if (pcm) rc = pcm[species[i] * n_species + species[j]];
      if (!(rc > 0.0)) continue;
      const double dx[3] = {x[3 * j] - x[3 * i], x[3 * j + 1] - x[3 * i + 1],
                            x[3 * j + 2] - x[3 * i + 2]};
      int64_t lo[3], hi[3];
      for (int k = 0; k < 3; ++k) {
        if (!pbc[k]) {
          lo[k] = hi[k] = 0;
          continue;
        }
        const double f = dx[0] * minv[k] + dx[1] * minv[3 + k] + dx[2] * minv[6 + k];
        const double reach = rc / faces[k] * (1.0 + 1e-9) + 1e-9;
        lo[k] = (int64_t)std::ceil(-f - reach);
        hi[k] = (int64_t)std::floor(-f + reach);
      }
      for (int64_t a = lo[0]; a <= hi[0]; ++a) {
        for (int64_t b = lo[1]; b <= hi[1]; ++b) {
          for (int64_t c = lo[2]; c <= hi[2]; ++c) {
            if (i == j && a == 0 && b == 0 && c == 0) continue;
            double r2 = 0.0;
            for (int k = 0; k < 3; ++k) {
              const double off = (double)a * cell[k] + (double)b * cell[3 + k] +
                                 (double)c * cell[6 + k];
              const double r = dx[k] + off;
              r2 += r * r;
            }
            if (!(std::sqrt(r2) < rc)) continue;
            if (write && count < capacity) {
              oi[count] = i;
              oj[count] = j;
              os[3 * count] = a;
              os[3 * count + 1] = b;
              os[3 * count + 2] = c;
            }
            ++count;
          }
        }
      }
    }
  }
  return count;
}

// r_ij = x_j - x_i + S_ij @ cell[system[i]] for every edge (serial: a few flops each).
template <typename T>
void edge_vectors(int64_t n_edges, const T* x, const T* cells, const T* shifts,
                  const int64_t* centre, const int64_t* neighbor, const int64_t* system,
                  T* out) {
  for (int64_t e = 0; e < n_edges; ++e) {
    const int64_t i = centre[e], j = neighbor[e];
    const T* c = cells + 9 * (system ? system[i] : 0);
    const T* s = shifts + 3 * e;
    for (int d = 0; d < 3; ++d)
      out[3 * e + d] = (x[3 * j + d] - x[3 * i + d]) +
                       (s[0] * c[d] + s[1] * c[3 + d] + s[2] * c[6 + d]);
  }
}

// ZBL (LAMMPS pair_style zbl) over a full edge list: half the pair energy to the
// centre atom, dE/dr_ij = E'(r)/2 r_ij / r. table: per species pair d[4], zze,
// sw1..sw5 (10 values); c: the 4 universal coefficients. Serial over edges.
template <typename T>
void zbl(int64_t n_edges, const T* vectors, const int64_t* centre, const int64_t* neighbor,
         const int64_t* species, int64_t n_elements, const double* table, const double* c,
         double inner, double outer, T* energies, T* grad) {
  const T out2 = (T)outer * (T)outer;
  for (int64_t e = 0; e < n_edges; ++e) {
    const T* v = vectors + 3 * e;
    const T rsq = v[0] * v[0] + v[1] * v[1] + v[2] * v[2];
    if (grad) grad[3 * e] = grad[3 * e + 1] = grad[3 * e + 2] = (T)0;
    if (!(rsq < out2 && rsq > (T)1e-20)) continue;
    const int64_t i = centre[e];
    const double* p = table + 10 * (species[i] * n_elements + species[neighbor[e]]);
    const T r = std::sqrt(rsq);
    const T rinv = (T)1 / r;
    T sm = (T)0, sp = (T)0;
    for (int k = 0; k < 4; ++k) {
      const T ex = std::exp(-(T)p[k] * r);
      sm += (T)c[k] * ex;
      sp -= (T)c[k] * (T)p[k] * ex;
    }
    T x = r - (T)inner;
    if (x < (T)0) x = (T)0;
    const T x2 = x * x;
    const T zze = (T)p[4];
    const T energy = zze * sm * rinv + (T)p[9] + x2 * x * ((T)p[7] + (T)p[8] * x);
    const T dedr = zze * (sp - sm * rinv) * rinv + x2 * ((T)p[5] + (T)p[6] * x);
    energies[i] += (T)0.5 * energy;
    if (grad) {
      const T k = (T)0.5 * dedr * rinv;
      grad[3 * e] = k * v[0];
      grad[3 * e + 1] = k * v[1];
      grad[3 * e + 2] = k * v[2];
    }
  }
}

// The exact filter of the Verlet list in one pass: keep[e] = 1 when |x_j - x_i + S @ cell|
// is below the (pair) cutoff and the edge is not an atom with itself at S = 0.
template <typename I, typename S>
int64_t edge_keep(int64_t n, const double* x, const double* cell, const I* i, const I* j,
                  const S* s, const int64_t* species, const double* pcm, int64_t n_species,
                  double cutoff, uint8_t* keep) {
  int64_t count = 0;
  for (int64_t e = 0; e < n; ++e) {
    const int64_t a = (int64_t)i[e], b = (int64_t)j[e];
    const double* xi = x + 3 * a;
    const double* xj = x + 3 * b;
    const double s0 = (double)s[3 * e], s1 = (double)s[3 * e + 1], s2 = (double)s[3 * e + 2];
    double r2 = 0.0;
    for (int d = 0; d < 3; ++d) {
      const double r = (xj[d] - xi[d]) + (s0 * cell[d] + s1 * cell[3 + d] + s2 * cell[6 + d]);
      r2 += r * r;
    }
    const double rc = pcm ? pcm[species[a] * n_species + species[b]] : cutoff;
    const bool k = std::sqrt(r2) < rc && !(a == b && s0 == 0.0 && s1 == 0.0 && s2 == 0.0);
    keep[e] = k ? 1 : 0;
    count += k;
  }
  return count;
}

}  // namespace

extern "C" {

// keep mask of the Verlet filter; returns the number kept (-1: unsupported widths).
// index_bytes: width of i and j (4 or 8); shift_bytes: width of s (1, 4 or 8).
int64_t ase_mlp_edge_keep(int64_t n, const double* x, const double* cell, const void* i,
                          const void* j, const void* s, int64_t index_bytes,
                          int64_t shift_bytes, const int64_t* species, const double* pcm,
                          int64_t n_species, double cutoff, uint8_t* keep) {
#define ASE_MLP_KEEP(I, S)                                                              \
  return edge_keep<I, S>(n, x, cell, (const I*)i, (const I*)j, (const S*)s, species, pcm, \
                         n_species, cutoff, keep)
  if (index_bytes == 4 && shift_bytes == 1) ASE_MLP_KEEP(int32_t, int8_t);
  if (index_bytes == 4 && shift_bytes == 4) ASE_MLP_KEEP(int32_t, int32_t);
  if (index_bytes == 4 && shift_bytes == 8) ASE_MLP_KEEP(int32_t, int64_t);
  if (index_bytes == 8 && shift_bytes == 1) ASE_MLP_KEEP(int64_t, int8_t);
  if (index_bytes == 8 && shift_bytes == 4) ASE_MLP_KEEP(int64_t, int32_t);
  if (index_bytes == 8 && shift_bytes == 8) ASE_MLP_KEEP(int64_t, int64_t);
#undef ASE_MLP_KEEP
  return -1;
}

// per-atom workspace (elements of the working type) of kernel `kind`
int64_t ase_mlp_sna_workspace(int kind, const SnaTables* t, int64_t nn_width) {
  return sna_kind_workspace_size(kind, *t, nn_width);
}

// energies (n_atoms) must be zero-initialised; grad (E, 3) may be null
int ase_mlp_zbl_f64(int64_t n_edges, const double* vectors, const int64_t* centre,
                    const int64_t* neighbor, const int64_t* species, int64_t n_elements,
                    const double* table, const double* c, double inner, double outer,
                    double* energies, double* grad) {
  zbl<double>(n_edges, vectors, centre, neighbor, species, n_elements, table, c, inner, outer,
              energies, grad);
  return 0;
}

int ase_mlp_zbl_f32(int64_t n_edges, const float* vectors, const int64_t* centre,
                    const int64_t* neighbor, const int64_t* species, int64_t n_elements,
                    const double* table, const double* c, double inner, double outer,
                    float* energies, float* grad) {
  zbl<float>(n_edges, vectors, centre, neighbor, species, n_elements, table, c, inner, outer,
             energies, grad);
  return 0;
}

// system may be null (one structure)
int ase_mlp_edge_vectors_f64(int64_t n_edges, const double* x, const double* cells,
                             const double* shifts, const int64_t* centre,
                             const int64_t* neighbor, const int64_t* system, double* out) {
  edge_vectors<double>(n_edges, x, cells, shifts, centre, neighbor, system, out);
  return 0;
}

int ase_mlp_edge_vectors_f32(int64_t n_edges, const float* x, const float* cells,
                             const float* shifts, const int64_t* centre,
                             const int64_t* neighbor, const int64_t* system, float* out) {
  edge_vectors<float>(n_edges, x, cells, shifts, centre, neighbor, system, out);
  return 0;
}

// Neighbour pairs of a small structure (see small_pairs): call with capacity -1 to
// count, then with arrays of that capacity to fill.
int64_t ase_mlp_small_neighbors(int64_t n, const double* x, const double* cell,
                                const double* minv, const double* faces, const int8_t* pbc,
                                double cutoff, const int64_t* species, const double* pcm,
                                int64_t n_species, int64_t capacity, int64_t* oi, int64_t* oj,
                                int64_t* os) {
  return small_pairs(n, x, cell, minv, faces, pbc, cutoff, species, pcm, n_species, capacity,
                     oi, oj, os);
}

// forces (n, 3) and atom_virial (n, 9) must be zero-initialised (either may be null);
// only the upper triangle of each atom virial is written (the caller mirrors it).
int ase_mlp_assemble_f64(const double* vectors, const double* grad, const int64_t* centre,
                         const int64_t* neighbor, int64_t n_edges, double* forces,
                         double* atom_virial) {
  assemble<double>(vectors, grad, centre, neighbor, n_edges, forces, atom_virial);
  return 0;
}

int ase_mlp_assemble_f32(const float* vectors, const float* grad, const int64_t* centre,
                         const int64_t* neighbor, int64_t n_edges, float* forces,
                         float* atom_virial) {
  assemble<float>(vectors, grad, centre, neighbor, n_edges, forces, atom_virial);
  return 0;
}

// kind: 0 fused linear, 1 descriptors (pass 1), 2 edge gradients (pass 2),
// 3 descriptors and their Jacobian (fitting), 4 fused NN-SNAP.
int ase_mlp_sna_f64(int kind, const SnaTables* t, const SnaCall<double>* c, int threads) {
  return run<double>(kind, t, c, threads);
}

int ase_mlp_sna_f32(int kind, const SnaTables* t, const SnaCall<float>* c, int threads) {
  return run<float>(kind, t, c, threads);
}

int64_t ase_mlp_sna_abi_version() { return 13; }

#ifndef ASE_MLP_SNA_SOURCE_DIGEST
#define ASE_MLP_SNA_SOURCE_DIGEST "unknown"
#endif
// digest of the sources this library was built from (checked by the loader)
const char* ase_mlp_sna_source_digest() { return ASE_MLP_SNA_SOURCE_DIGEST; }

}
