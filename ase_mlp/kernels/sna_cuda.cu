// GPU driver of the SNAP kernels: the per-atom functions of sna_core.h, one GPU
// thread per atom (grid-stride), each with its own slice of a scratch buffer.
// Compiled by NVRTC through cupy.RawModule (ase_mlp/kernels/gpu.py) or by nvcc
// (-cubin) for the build check. The tables and the call descriptor are passed as
// device pointers to the same structs the CPU build uses.
// Original code of ase_mlp (MIT).
#include "sna_core.h"

#define ASE_MLP_SNA_KERNEL(NAME, T, FN)                                              \
  extern "C" __global__ void NAME(const SnaTables* t, const SnaCall<T>* c, T* scratch, \
                                  long long ws) {                                    \
    const long long stride = (long long)gridDim.x * blockDim.x;                      \
    const long long tid = (long long)blockIdx.x * blockDim.x + threadIdx.x;          \
    T* w = scratch + tid * ws;                                                       \
    for (long long i = tid; i < c->n_atoms; i += stride) FN<T>(*t, *c, i, w);       \
  }

ASE_MLP_SNA_KERNEL(ase_mlp_sna_fused_f64, double, sna_fused_linear_atom)
ASE_MLP_SNA_KERNEL(ase_mlp_sna_fused_f32, float, sna_fused_linear_atom)
ASE_MLP_SNA_KERNEL(ase_mlp_sna_descriptors_f64, double, sna_descriptors_atom)
ASE_MLP_SNA_KERNEL(ase_mlp_sna_descriptors_f32, float, sna_descriptors_atom)
ASE_MLP_SNA_KERNEL(ase_mlp_sna_gradient_f64, double, sna_gradient_atom)
ASE_MLP_SNA_KERNEL(ase_mlp_sna_gradient_f32, float, sna_gradient_atom)
ASE_MLP_SNA_KERNEL(ase_mlp_sna_nn_f64, double, sna_fused_nn_atom)
ASE_MLP_SNA_KERNEL(ase_mlp_sna_nn_f32, float, sna_fused_nn_atom)
