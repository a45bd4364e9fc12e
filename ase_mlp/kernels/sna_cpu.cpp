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

}  // namespace

extern "C" {

// kind: 0 fused linear, 1 descriptors (pass 1), 2 edge gradients (pass 2),
// 3 descriptors and their Jacobian (fitting).
int ase_mlp_sna_f64(int kind, const SnaTables* t, const SnaCall<double>* c, int threads) {
  return run<double>(kind, t, c, threads);
}

int ase_mlp_sna_f32(int kind, const SnaTables* t, const SnaCall<float>* c, int threads) {
  return run<float>(kind, t, c, threads);
}

int64_t ase_mlp_sna_abi_version() { return 2; }

#ifndef ASE_MLP_SNA_SOURCE_DIGEST
#define ASE_MLP_SNA_SOURCE_DIGEST "unknown"
#endif
// digest of the sources this library was built from (checked by the loader)
const char* ase_mlp_sna_source_digest() { return ASE_MLP_SNA_SOURCE_DIGEST; }

}
