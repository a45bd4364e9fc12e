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

from ase_mlp.kernels import current_settings, default_threads
from ase_mlp.kernels._build import library


P = ctypes.c_void_p
I64 = ctypes.c_int64


class _Tables(ctypes.Structure):
    _fields_ = [(n, P) for n in (
        "zoff", "zp1", "zp2", "zcoef", "bidx", "bz", "bq", "bw", "boff", "bzero", "triple_of_b",
        "full_from_half", "full_sign", "half_index", "half_partner", "half_sign", "half_diag",
        "rootpq")] + [(n, I64) for n in (
            "twojmax", "n_slots", "H", "U", "n_z", "K", "n_bs", "n_diag", "switchflag",
            "switchinnerflag", "bzeroflag", "chemflag", "wselfallflag")] + [
        ("rfac0", ctypes.c_double), ("rmin0", ctypes.c_double)]


class _Call(ctypes.Structure):
    _fields_ = [(n, P) for n in (
        "rij", "rcut", "wj", "rinner", "drinner", "slot", "offsets", "species", "coeff", "dedb",
        "uhalf", "energies", "descriptors", "edge_grad", "jacobian")] + [("n_atoms", I64), ("n_edges", I64)]


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
        self.n_slots = int(d.n_slots)


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


def _run(kind: int, tables: CompiledTables, call: _Call, dtype, threads: int,
         device=None) -> None:
    if device is not None and device.type == "cuda":
        from ase_mlp.kernels import gpu

        gpu.run(kind, tables, call, dtype, device)
        return
    lib = library()
    fn = lib.ase_mlp_sna_f64 if dtype == torch.float64 else lib.ase_mlp_sna_f32
    status = fn(kind, ctypes.byref(tables.struct), ctypes.byref(call), int(threads))
    if status != 0:
        raise RuntimeError(f"SNAP kernel {kind} failed with status {status}")


def _call_for(descriptor, ctx):
    """The ``SnaCall`` of a context: edges sorted by centre, CSR offsets; returns
    ``(call, order, keep)`` with ``order`` the sorting permutation (or None) and
    ``keep`` the tensors the struct points into."""
    dtype, n_atoms = ctx.dtype, ctx.n_atoms
    S = descriptor.n_slots
    ei = torch.div(ctx.target, S, rounding_mode="floor")
    slot = ctx.target - ei * S
    rij, rcut, wj = ctx.rij, ctx.rcut, ctx.wj
    rinner, drinner = ctx.rinner, ctx.drinner
    order = None
    if ctx.n_edges > 1 and bool((ei[1:] < ei[:-1]).any()):
        order = torch.argsort(ei, stable=True)
        ei, slot, rij, rcut, wj = (x[order] for x in (ei, slot, rij, rcut, wj))
        if rinner is not None:
            rinner, drinner = rinner[order], drinner[order]
    offsets = torch.zeros(n_atoms + 1, dtype=torch.int64, device=ctx.device)
    if ctx.n_edges:
        torch.cumsum(torch.bincount(ei, minlength=n_atoms), 0, out=offsets[1:])
    keep = [x.contiguous() if x is not None else None
            for x in (rij, rcut.to(dtype), wj.to(dtype), rinner, drinner, slot.to(torch.int64),
                      ctx.graph.species.to(torch.int64), offsets)]
    call = _Call()
    (call.rij, call.rcut, call.wj, call.rinner, call.drinner, call.slot, call.species,
     call.offsets) = (_ptr(x) for x in keep)
    call.n_atoms, call.n_edges = n_atoms, ctx.n_edges
    return call, order, keep


def _threads(n_atoms: int) -> int:
    settings = current_settings()
    return settings.threads if settings.threads is not None else default_threads(n_atoms)


def _unsort(x, order):
    return x if order is None else torch.empty_like(x).index_copy_(0, order, x)


def evaluate(descriptor, ctx, energy_fn, need_gradient: bool, linear=None):
    """Per-atom energies and selected-edge gradients by the compiled kernels.

    ``ctx`` is the per-call context of :meth:`Bispectrum._prepare` (selected edges,
    their vectors, cutoffs, weights and slots). Returns ``(energies, grad_sel)``
    with ``grad_sel`` of shape ``(n_selected_edges, 3)`` or None; None instead of the
    pair when ``energy_fn``'s ``dE/dB`` needs autograd (the caller then uses torch).
    """
    tables = tables_for(descriptor)
    dtype, n_atoms, device = ctx.dtype, ctx.n_atoms, ctx.device
    graph = ctx.graph
    S = descriptor.n_slots
    call, order, _keep = _call_for(descriptor, ctx)
    threads = _threads(n_atoms)
    grad = torch.empty((ctx.n_edges, 3), dtype=dtype, device=device) if need_gradient else None
    K = tables.K
    if linear is not None:
        coeff = linear.detach().to(dtype=dtype, device=device).contiguous()
        if coeff.shape != (len(descriptor.elements), 1 + K):
            raise ValueError(f"linear coefficients of shape {tuple(coeff.shape)}, expected "
                             f"{(len(descriptor.elements), 1 + K)}")
        energies = torch.empty(n_atoms, dtype=dtype, device=device)
        call.coeff, call.energies, call.edge_grad = _ptr(coeff), _ptr(energies), _ptr(grad)
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


def jacobian(descriptor, ctx):
    """Descriptors ``(n_atoms, K)`` and ``dB_ik/dr_ij`` ``(n_selected_edges, K, 3)``."""
    if ctx.device.type != "cpu":
        raise ValueError("the compiled descriptor Jacobian runs on the CPU")
    tables = tables_for(descriptor)
    call, order, _keep = _call_for(descriptor, ctx)
    K = tables.K
    B = torch.empty((ctx.n_atoms, K), dtype=ctx.dtype)
    J = torch.empty((ctx.n_edges, K, 3), dtype=ctx.dtype)
    call.descriptors, call.jacobian = _ptr(B), _ptr(J)
    _run(3, tables, call, ctx.dtype, _threads(ctx.n_atoms))
    return B, _unsort(J, order)


def descriptors(descriptor, ctx) -> torch.Tensor:
    """Bispectrum components ``(n_atoms, K)`` by the compiled kernels."""
    out = []

    def keep(B, species):
        out.append(B)
        return B.new_zeros(B.shape[0]), None

    evaluate(descriptor, ctx, keep, need_gradient=False)
    return out[0]
