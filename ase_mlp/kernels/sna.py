"""ctypes bindings of the SNAP kernels (``sna_core.h``) on torch CPU tensors.

The tables of a :class:`~ase_mlp.descriptors.Bispectrum` are converted once
(:func:`tables_for`) and every call passes ``data_ptr()`` of contiguous tensors: no
copies beyond the per-edge inputs the torch path also builds.
"""

from __future__ import annotations

import ctypes
import weakref

import numpy as np
import torch

from ase_mlp.descriptors._sna_tables import bispectrum_triples, n_bispectrum
from ase_mlp.kernels import current_settings, default_threads
from ase_mlp.kernels._build import library


P = ctypes.c_void_p
I64 = ctypes.c_int64


class _Tables(ctypes.Structure):
    _fields_ = [(n, P) for n in (
        "zoff", "zp1", "zp2", "zcoef", "bidx", "bz", "bq", "bw", "boff", "bzero", "triple_of_b",
        "full_from_half", "full_sign", "half_index", "half_partner", "half_sign", "half_diag",
        "rootpq", "klayers", "layer_off")] + [(n, I64) for n in (
            "twojmax", "n_slots", "H", "U", "n_z", "K", "n_bs", "n_diag", "switchflag",
            "switchinnerflag", "bzeroflag", "chemflag", "wselfallflag")] + [
        ("rfac0", ctypes.c_double), ("rmin0", ctypes.c_double)]


class _Call(ctypes.Structure):
    _fields_ = [(n, P) for n in (
        "vectors", "neighbor", "offsets", "species", "pair_rcut", "elem_weight", "elem_sinner",
        "elem_dinner", "coeff", "quad", "dedb", "uhalf", "energies", "descriptors", "edge_grad",
        "jacobian", "nn_params", "nn_sizes", "nn_acts")] + [
            (n, I64) for n in ("n_atoms", "n_edges", "n_elements", "nn_layers", "nn_stride",
                               "nn_width")]


class CompiledTables:
    """The index tables of one descriptor as C arrays (kept alive with the struct)."""

    def __init__(self, d):
        t = d.tables
        i32 = np.int32

        def arr(x, dtype):
            return np.ascontiguousarray(np.asarray(x), dtype=dtype)

        zidx = np.asarray(t.zidx)
        if np.any(np.diff(zidx) < 0):
            raise RuntimeError("Z terms are not grouped by Z entry")
        zoff = np.zeros(t.n_z + 1, dtype=np.int64)
        np.cumsum(np.bincount(zidx, minlength=t.n_z), out=zoff[1:])
        bidx = np.asarray(t.bidx)
        if np.any(np.diff(bidx) < 0):
            raise RuntimeError("B terms are not grouped by component")
        boff = np.zeros(t.n_b + 1, dtype=np.int64)
        np.cumsum(np.bincount(bidx, minlength=t.n_b), out=boff[1:])
        full_sign = np.where(np.asarray(t.full_mirror), np.asarray(t.full_sign), 0.0)
        centre = np.asarray(t.half_partner) < 0
        partner = np.where(centre, t.half_index, t.half_partner)
        half_sign = np.where(centre, 0.0, np.asarray(t.half_sign))
        self._keep = {
            "zoff": arr(zoff, i32), "zp1": arr(t.zp1, i32), "zp2": arr(t.zp2, i32),
            "zcoef": arr(t.zcoef, np.float64), "bidx": arr(t.bidx, i32),
            "bz": arr(t.bz, i32), "bq": arr(t.bq, i32), "bw": arr(t.bw, np.float64),
            "boff": arr(boff, i32),
            "bzero": arr(d._bzero.cpu().numpy(), np.float64),
            "triple_of_b": arr(t.triple_of_b, i32),
            "full_from_half": arr(t.full_from_half, i32), "full_sign": arr(full_sign, np.float64),
            "half_index": arr(t.half_index, i32), "half_partner": arr(partner, i32),
            "half_sign": arr(half_sign, np.float64), "half_diag": arr(t.half_diag, i32),
            "rootpq": arr(t.rootpq, np.float64),
            "klayers": arr(np.tile(np.asarray(bispectrum_triples(d.twojmax)),
                                   (t.n_b // n_bispectrum(d.twojmax), 1)), i32),
            "layer_off": arr(np.concatenate([[0], np.cumsum(t.layer_sizes)]), i32),
        }
        if self._keep["rootpq"].shape != (d.twojmax + 2, d.twojmax + 2):
            raise RuntimeError("unexpected rootpq table shape")
        s = _Tables()
        for k, v in self._keep.items():
            setattr(s, k, v.ctypes.data)
        s.twojmax, s.n_slots = d.twojmax, d.n_slots
        s.H, s.U, s.n_z = len(t.half_index), t.idxu_max, t.n_z // (d.n_slots ** 2)
        s.K, s.n_bs, s.n_diag = t.n_b, len(t.bidx), len(t.half_diag)
        s.switchflag, s.switchinnerflag = int(d.switchflag), int(d.switchinnerflag)
        s.bzeroflag, s.chemflag, s.wselfallflag = (int(d.bzeroflag), int(d.chemflag),
                                                   int(d.wselfallflag))
        s.rfac0, s.rmin0 = d.rfac0, d.rmin0
        self.struct = s
        self.H = int(s.H)
        self.K = int(s.K)


_TABLES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def tables_for(descriptor) -> CompiledTables:
    """The C tables of ``descriptor``, built once and held beside it (not in it: the
    module stays picklable and deep-copyable)."""
    cached = _TABLES.get(descriptor)
    if cached is None:
        cached = CompiledTables(descriptor)
        _TABLES[descriptor] = cached
    return cached


def _ptr(x: torch.Tensor | None):
    return None if x is None else x.data_ptr()


def _typed(name: str, dtype):
    """The float64 or float32 entry point ``name`` of the CPU library."""
    return getattr(library(), f"{name}_{'f64' if dtype == torch.float64 else 'f32'}")


def _run(kind: int, tables: CompiledTables, call: _Call, dtype, threads: int,
         device=None) -> None:
    if device is not None and device.type == "cuda":
        from ase_mlp.kernels import gpu

        gpu.run(kind, tables, call, dtype, device)
        return
    status = _typed("ase_mlp_sna", dtype)(kind, ctypes.byref(tables.struct),
                                          ctypes.byref(call), int(threads))
    if status != 0:
        raise RuntimeError(f"SNAP kernel {kind} failed with status {status}")


def _call_for(descriptor, graph, vectors, edge_index):
    """The ``SnaCall`` of one evaluation: the edges grouped by centre atom (CSR
    offsets). Returns ``(call, order, keep)`` with ``order`` the sorting permutation
    of the edges (None when they come sorted, as our neighbour lists do) and ``keep``
    the tensors the struct points into."""
    dtype, device = vectors.dtype, vectors.device
    n_atoms, n_edges = graph.n_atoms, int(edge_index.shape[1])
    centre, neighbor = edge_index[0], edge_index[1]
    order = None
    if n_edges > 1 and bool((centre[1:] < centre[:-1]).any()):
        order = torch.argsort(centre, stable=True)
        centre, neighbor, vectors = centre[order], neighbor[order], vectors[order]
    offsets = torch.zeros(n_atoms + 1, dtype=torch.int64, device=device)
    if n_edges:
        torch.cumsum(torch.bincount(centre, minlength=n_atoms), 0, out=offsets[1:])
    per_element = [descriptor._cutoffs, descriptor._weights]
    if descriptor.switchinnerflag:
        per_element += [descriptor._sinner, descriptor._dinner]
    keep = [x.contiguous() for x in (vectors, neighbor.to(torch.int64), offsets,
                                     graph.species.to(torch.int64))]
    keep += [x.to(device=device, dtype=dtype).contiguous() for x in per_element]
    call = _Call()
    call.vectors, call.neighbor, call.offsets, call.species = (_ptr(x) for x in keep[:4])
    call.pair_rcut, call.elem_weight = _ptr(keep[4]), _ptr(keep[5])
    if descriptor.switchinnerflag:
        call.elem_sinner, call.elem_dinner = _ptr(keep[6]), _ptr(keep[7])
    call.n_atoms, call.n_edges = n_atoms, n_edges
    call.n_elements = len(descriptor.elements)
    return call, order, keep


def _threads(n_atoms: int) -> int:
    settings = current_settings()
    return settings.threads if settings.threads is not None else default_threads(n_atoms)


def _unsort(x, order):
    return x if order is None else torch.empty_like(x).index_copy_(0, order, x)


_ACT_CODES = {"linear": 0, "tanh": 1, "sigmoid": 2, "relu": 3}


def pack_network(model, dtype, device):
    """The per-element networks of an NN-SNAP model as the flat arrays of ``SnaCall``
    (mean, std, then W and b of every layer, per element); None when an activation has
    no kernel version."""
    if any(a not in _ACT_CODES for a in model.activations):
        return None
    rows = []
    for e, layers in enumerate(model.networks):
        parts = [model.mean[e], model.std[e]]
        for lin in layers:
            parts += [lin.weight.reshape(-1), lin.bias.reshape(-1)]
        rows.append(torch.cat([p.detach().to(device=device, dtype=dtype) for p in parts]))
    params = torch.stack(rows).contiguous()
    sizes = [model.descriptor.n_descriptors] + list(model.hidden) + [1]
    return (params, torch.tensor(sizes, dtype=torch.int64, device=device),
            torch.tensor([_ACT_CODES[a] for a in model.activations], dtype=torch.int64,
                         device=device))


def evaluate(descriptor, graph, vectors, energy_fn, need_gradient: bool, linear=None,
             network=None, quadratic=None):
    """Per-atom energies and edge gradients ``dE/dr_ij`` by the compiled kernels.

    Works on every edge of ``graph`` (the kernels test the pair cutoffs themselves, so
    no selected copies of the edge arrays are made). Returns ``(energies, grad)`` with
    ``grad`` of shape ``(graph.n_edges, 3)`` (zero beyond the cutoffs) or None; None
    instead of the pair when ``energy_fn``'s ``dE/dB`` needs autograd (the caller
    then uses torch).
    """
    tables = tables_for(descriptor)
    dtype, n_atoms, device = vectors.dtype, graph.n_atoms, vectors.device
    S = descriptor.n_slots
    call, order, _keep = _call_for(descriptor, graph, vectors, graph.edge_index)
    threads = _threads(n_atoms)
    grad = torch.empty((graph.n_edges, 3), dtype=dtype, device=device) \
        if need_gradient else None
    K = tables.K
    if network is not None:
        params, sizes, acts = network
        energies = torch.empty(n_atoms, dtype=dtype, device=device)
        call.nn_params, call.nn_sizes, call.nn_acts = _ptr(params), _ptr(sizes), _ptr(acts)
        call.nn_layers, call.nn_stride = int(acts.shape[0]), int(params.shape[1])
        call.nn_width = int(sizes.sum())
        call.energies, call.edge_grad = _ptr(energies), _ptr(grad)
        _run(4, tables, call, dtype, threads, device)
    elif linear is not None:
        coeff = linear.detach().to(dtype=dtype, device=device).contiguous()
        if coeff.shape != (len(descriptor.elements), 1 + K):
            raise ValueError(f"linear coefficients of shape {tuple(coeff.shape)}, expected "
                             f"{(len(descriptor.elements), 1 + K)}")
        energies = torch.empty(n_atoms, dtype=dtype, device=device)
        call.coeff, call.energies, call.edge_grad = _ptr(coeff), _ptr(energies), _ptr(grad)
        if quadratic is not None:
            quad = quadratic.detach().to(dtype=dtype, device=device).contiguous()
            if quad.shape != (len(descriptor.elements), K, K):
                raise ValueError(f"quadratic matrices of shape {tuple(quad.shape)}, expected "
                                 f"{(len(descriptor.elements), K, K)}")
            call.quad = _ptr(quad)
        _run(0, tables, call, dtype, threads, device)
    else:
        B = torch.empty((n_atoms, K), dtype=dtype, device=device)
        uhalf = torch.empty((n_atoms, S, tables.H, 2), dtype=dtype, device=device) \
            if need_gradient else None
        call.descriptors, call.uhalf = _ptr(B), _ptr(uhalf)
        _run(1, tables, call, dtype, threads, device)
        e, dEdB = energy_fn(B, graph.species)
        energies = e.to(dtype)  # keeps autograd history w.r.t. model parameters
        if need_gradient:
            if dEdB is None:
                raise RuntimeError("energy_fn returned no dE/dB although forces were requested")
            if dEdB.requires_grad and torch.is_grad_enabled():
                return None  # forces must stay differentiable: the caller uses torch
            dedb = dEdB.detach().to(dtype).contiguous()
            if dedb.shape != (n_atoms, K):
                raise ValueError(f"dE/dB of shape {tuple(dedb.shape)}, expected {(n_atoms, K)}")
            call.dedb, call.edge_grad = _ptr(dedb), _ptr(grad)
            call.descriptors = None
            _run(2, tables, call, dtype, threads, device)
    return energies, None if grad is None else _unsort(grad, order)


def jacobian(descriptor, graph, vectors, sel):
    """Descriptors ``(n_atoms, K)`` and ``dB_ik/dr_ij`` ``(len(sel), K, 3)`` for the
    graph edges ``sel`` (those within the cutoffs)."""
    if vectors.device.type != "cpu":
        raise ValueError("the compiled descriptor Jacobian runs on the CPU")
    tables = tables_for(descriptor)
    call, order, _keep = _call_for(descriptor, graph, vectors[sel],
                                   graph.edge_index[:, sel])
    K, dtype = tables.K, vectors.dtype
    B = torch.empty((graph.n_atoms, K), dtype=dtype)
    J = torch.empty((int(sel.shape[0]), K, 3), dtype=dtype)
    call.descriptors, call.jacobian = _ptr(B), _ptr(J)
    _run(3, tables, call, dtype, _threads(graph.n_atoms))
    return B, _unsort(J, order)


def assemble(graph, vectors, edge_grad, forces: bool, stress: bool):
    """Forces ``(n_atoms, 3)`` and per-atom virials ``(n_atoms, 3, 3)`` (or None) from
    edge gradients, by one serial C loop over the edges (fixed summation order)."""
    fn = _typed("ase_mlp_assemble", vectors.dtype)
    n = graph.n_atoms
    f = vectors.new_zeros((n, 3)) if forces else None
    w = vectors.new_zeros((n, 3, 3)) if stress else None
    ei = graph.edge_index.to(torch.int64)
    centre, neighbor = ei[0].contiguous(), ei[1].contiguous()
    v, g = vectors.contiguous(), edge_grad.contiguous()
    fn(_ptr(v), _ptr(g), _ptr(centre), _ptr(neighbor), graph.n_edges, _ptr(f), _ptr(w))
    if w is not None:  # mirror the upper triangles
        w = w + w.transpose(1, 2) - torch.diag_embed(torch.diagonal(w, dim1=1, dim2=2))
    return f, w


def edge_vectors(graph, positions):
    """``r_ij = x_j - x_i + S_ij @ cell`` by one serial C loop (no BLAS call, whose
    threads contend with other processes on shared cores, no per-edge cell copies)."""
    dtype = positions.dtype
    fn = _typed("ase_mlp_edge_vectors", dtype)
    ei = graph.edge_index
    centre, neighbor = ei[0].contiguous(), ei[1].contiguous()
    x = positions.contiguous()
    cells = graph.cells.to(dtype).contiguous()
    shifts = graph.shifts.to(dtype).contiguous()
    system = graph.system.contiguous() if graph.n_systems > 1 else None
    out = torch.empty((graph.n_edges, 3), dtype=dtype)
    fn(graph.n_edges, _ptr(x), _ptr(cells), _ptr(shifts), _ptr(centre), _ptr(neighbor),
       _ptr(system), _ptr(out))
    return out


def zbl(model, graph, vectors, need_gradient: bool):
    """Per-atom energies and edge gradients of a :class:`~ase_mlp.models.ZBL` model by
    one serial C loop over the edges."""
    dtype = vectors.dtype
    fn = _typed("ase_mlp_zbl", dtype)
    table = model.__dict__.get("_c_table")
    if table is None:
        t = model._tables_np
        table = np.ascontiguousarray(np.concatenate(
            [t["d"], t["zze"][..., None], t["sw"]], axis=2), dtype=np.float64)
        model.__dict__["_c_table"] = table
    c = np.ascontiguousarray(model._tables_np["c"], dtype=np.float64)
    ei = graph.edge_index
    centre, neighbor = ei[0].contiguous(), ei[1].contiguous()
    v = vectors.contiguous()
    species = graph.species.contiguous()
    energies = torch.zeros(graph.n_atoms, dtype=dtype)
    grad = torch.empty((graph.n_edges, 3), dtype=dtype) if need_gradient else None
    fn(graph.n_edges, _ptr(v), _ptr(centre), _ptr(neighbor), _ptr(species),
       len(model.elements), table.ctypes.data, c.ctypes.data, float(model.inner),
       float(model.outer), _ptr(energies), _ptr(grad))
    return energies, grad
