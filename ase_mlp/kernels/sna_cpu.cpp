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
  const int64_t n_ws = kind == 3 ? sna_jacobian_workspace_size(*t) : sna_workspace_size(*t);
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

}  // namespace

extern "C" {

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
// 3 descriptors and their Jacobian (fitting).
int ase_mlp_sna_f64(int kind, const SnaTables* t, const SnaCall<double>* c, int threads) {
  return run<double>(kind, t, c, threads);
}

int ase_mlp_sna_f32(int kind, const SnaTables* t, const SnaCall<float>* c, int threads) {
  return run<float>(kind, t, c, threads);
}

int64_t ase_mlp_sna_abi_version() { return 3; }

#ifndef ASE_MLP_SNA_SOURCE_DIGEST
#define ASE_MLP_SNA_SOURCE_DIGEST "unknown"
#endif
// digest of the sources this library was built from (checked by the loader)
const char* ase_mlp_sna_source_digest() { return ASE_MLP_SNA_SOURCE_DIGEST; }

}
