"""SNAP bispectrum descriptor in torch, exact to LAMMPS ``compute sna/atom``.

Thompson, Swiler, Trott, Foiles, Tucker, J. Comput. Phys. 285, 316 (2015);
Wood & Thompson, J. Chem. Phys. 148, 241721 (2018) (quadratic);
Cusentino, Wood & Thompson, J. Phys. Chem. A 124, 5456 (2020) (chemflag).

The route is LAMMPS's, vectorised:

1. for every edge ``r_ij`` within ``rcutfac * (R_i + R_j)``, the Wigner matrices
   ``u_j(r_ij)`` on the 3-sphere by the Cayley-Klein recursion (VMK 4.8.2);
2. per atom, the density ``U_i = w_self * I + sum_j f_c(r_ij) w_j u(r_ij)``
   (one copy per element of ``j`` with ``chemflag``);
3. ``Z_{j1 j2 j} = sum CG CG U_j1 U_j2`` and ``B_{j1 j2 j} = sum conj(U_j) Z``;
4. forces by the adjoint route: with ``beta_i = dE_i/dB_i`` (supplied by the
   model), the gradient ``Y_i = dE_i/dU_i`` is assembled once per atom and
   contracted with ``dU/dr_ij`` for every edge. No autograd over edges.

Memory is bounded by processing atoms and edges in chunks.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ase_mlp._util import check_elements
from ase_mlp.descriptors._sna_tables import n_bispectrum, sna_tables
from ase_mlp.neighbors.graph import edges_within


#: LAMMPS keywords of ``.snapparam`` files accepted but without effect here
#: (Kokkos/OpenMP tuning knobs).
IGNORED_KEYWORDS = ("chunksize", "parallelthresh")

_COMPLEX = {torch.float64: torch.complex128, torch.float32: torch.complex64}


def _contract_by_target(Y, target, du):
    """``J[e] = Y[target[e]] @ du[:, :, e].T`` for a chunk of edges, shape ``(P, K, 3)``.

    Edges of one target (centre atom and slot) that are contiguous in the chunk (neighbour
    lists come sorted by centre) share one ``(K x 2H) @ (2H x 3 n)`` product instead of
    ``n`` tiny ones.
    """
    P = target.shape[0]
    uniq, inv, counts = torch.unique_consecutive(target, return_inverse=True,
                                                 return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    pos = torch.arange(P, device=target.device) - starts[inv]
    G, M = uniq.shape[0], int(counts.max())
    H2 = du.shape[1]
    D = du.new_zeros((G, M, 3, H2))
    D[inv, pos] = du.permute(2, 0, 1)
    out = torch.bmm(Y.index_select(0, uniq), D.view(G, M * 3, H2).transpose(1, 2))
    return out.view(G, -1, M, 3).permute(0, 2, 1, 3)[inv, pos]


def _compiled_unavailable(device: torch.device) -> str | None:
    """Why the compiled kernels cannot run on ``device`` (None when they can)."""
    from ase_mlp import kernels

    if device.type == "cpu":
        try:
            kernels.library()
        except kernels.KernelUnavailable as exc:
            return str(exc)
        return None
    if device.type == "cuda":
        from ase_mlp.kernels import gpu

        if gpu.available():
            return None
        return "the GPU kernels need cupy (pip install 'ase-mlp[gpu]') and a CUDA device"
    return f"there are no compiled kernels for device type {device.type!r}"


@functools.cache
def _warn_fallback(reason: str) -> None:
    warnings.warn(f"ase_mlp: compiled SNAP kernels unavailable, using the (slower) torch "
                  f"implementation: {reason}", RuntimeWarning, stacklevel=3)


@dataclass
class _Context:
    """Per-call edge data shared by the passes."""

    graph: object
    dtype: torch.dtype
    ctype: torch.dtype
    device: torch.device
    n_atoms: int
    n_edges: int
    H: int
    sel: torch.Tensor
    r: torch.Tensor
    rij: torch.Tensor
    target: torch.Tensor
    rcut: torch.Tensor
    wj: torch.Tensor
    rinner: torch.Tensor | None
    drinner: torch.Tensor | None
    edge_chunk: int


def _per_element(name, value, elements, default=None):
    if value is None:
        if default is None:
            raise ValueError(f"{name} must be given for elements {elements}")
        value = [default] * len(elements)
    if isinstance(value, dict):
        missing = [e for e in elements if e not in value]
        if missing:
            raise ValueError(f"{name} has no value for element(s) {missing}")
        value = [value[e] for e in elements]
    value = [float(v) for v in value]
    if len(value) != len(elements):
        raise ValueError(f"{name} needs {len(elements)} values (one per element), got {len(value)}")
    if not all(math.isfinite(v) for v in value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


class Bispectrum(torch.nn.Module):
    """SNAP bispectrum components, LAMMPS conventions and keywords.

    Parameters
    ----------
    elements : list of str
        Chemical symbols; their order is the element order of the model.
    twojmax : int
        Band limit ``2 J_max``.
    rcutfac : float
        Cutoff scale: the pair cutoff is ``rcutfac * (R_i + R_j)`` (Å).
    radii, weights : sequence or dict
        Per-element radii ``R`` (Å) and neighbour weights ``w``.
    rfac0, rmin0 : float
        Angular mapping ``theta0 = rfac0 * pi * (r - rmin0) / (R_ij - rmin0)``.
    switchflag : bool
        Use the cosine cutoff function (LAMMPS default 1).
    bzeroflag : bool
        Subtract the isolated-atom bispectrum (LAMMPS default 1).
    chemflag : bool
        Explicit multi-element bispectrum (``n_elements**3`` blocks).
    bnormflag : bool
        Normalise ``B_{j1 j2 j}`` by ``1/(j+1)``.
    wselfallflag : bool
        Add the self weight to every element's density, not only the centre's.
    switchinnerflag : bool
        Inner switching between ``sinner`` and ``sinner + dinner`` (per element,
        pair values are the averages of the two elements).
    """

    def __init__(
        self,
        elements,
        twojmax: int,
        rcutfac: float,
        radii,
        weights=None,
        *,
        rfac0: float = 0.99363,
        rmin0: float = 0.0,
        switchflag: bool = True,
        bzeroflag: bool = True,
        chemflag: bool = False,
        bnormflag: bool = False,
        wselfallflag: bool = False,
        switchinnerflag: bool = False,
        sinner=None,
        dinner=None,
    ):
        super().__init__()
        self.elements = check_elements(list(elements))
        twojmax = int(twojmax)
        if twojmax < 0:
            raise ValueError(f"twojmax must be a non-negative integer, got {twojmax}")
        if not (rcutfac > 0 and math.isfinite(rcutfac)):
            raise ValueError(f"rcutfac must be positive, got {rcutfac}")
        if not (0.0 < rfac0 <= 1.0):
            raise ValueError(f"rfac0 must be in (0, 1], got {rfac0}")
        self.twojmax = twojmax
        self.rcutfac = float(rcutfac)
        self.radii = _per_element("radii", radii, self.elements)
        self.weights = _per_element("weights", weights, self.elements, default=1.0)
        if any(r <= 0 for r in self.radii):
            raise ValueError(f"radii must be positive, got {self.radii}")
        self.rfac0 = float(rfac0)
        self.rmin0 = float(rmin0)
        self.switchflag = bool(switchflag)
        self.bzeroflag = bool(bzeroflag)
        self.chemflag = bool(chemflag)
        self.bnormflag = bool(bnormflag)
        self.wselfallflag = bool(wselfallflag)
        self.switchinnerflag = bool(switchinnerflag)
        if self.switchinnerflag:
            self.sinner = _per_element("sinner", sinner, self.elements)
            self.dinner = _per_element("dinner", dinner, self.elements)
            if any(d <= 0 for d in self.dinner):
                raise ValueError(f"dinner must be positive, got {self.dinner}")
        else:
            if sinner is not None or dinner is not None:
                raise ValueError("sinner/dinner are given but switchinnerflag is off")
            self.sinner = self.dinner = None
        rc = self.pair_cutoffs()
        if self.rmin0 >= rc.min():
            raise ValueError(f"rmin0={self.rmin0} must be below the smallest cutoff {rc.min()}")

        n_slots = len(self.elements) if self.chemflag else 1
        self.n_slots = n_slots
        self.tables = sna_tables(self.twojmax, n_slots, self.bnormflag)
        t = self.tables
        reg = self.register_buffer
        reg("_cutoffs", torch.as_tensor(rc), persistent=False)
        reg("_radii", torch.tensor(self.radii, dtype=torch.float64), persistent=False)
        reg("_weights", torch.tensor(self.weights, dtype=torch.float64), persistent=False)
        if self.switchinnerflag:
            reg("_sinner", torch.tensor(self.sinner, dtype=torch.float64), persistent=False)
            reg("_dinner", torch.tensor(self.dinner, dtype=torch.float64), persistent=False)
        for name in ("zidx", "zp1", "zp2", "bidx", "bz", "bq", "half_index", "half_diag",
                     "full_from_half", "full_mirror"):
            reg("_" + name, torch.as_tensor(getattr(t, name)), persistent=False)
        reg("_zcoef", torch.as_tensor(t.zcoef), persistent=False)
        reg("_bw", torch.as_tensor(t.bw), persistent=False)
        reg("_half_sign", torch.as_tensor(t.half_sign), persistent=False)
        reg("_full_sign", torch.as_tensor(t.full_sign), persistent=False)
        partner = t.half_partner.copy()
        centre = partner < 0
        partner[centre] = t.half_index[centre]
        reg("_half_partner", torch.as_tensor(partner), persistent=False)
        reg("_half_centre", torch.as_tensor(centre), persistent=False)
        bzero = np.zeros(t.n_b)
        if self.bzeroflag:
            bzero = 1.0 if self.bnormflag else (t.bzero_j + 1).astype(np.float64)
            bzero = np.broadcast_to(bzero, (t.n_b,)).astype(np.float64)
        reg("_bzero", torch.as_tensor(bzero), persistent=False)
        reg("_triple_of_b", torch.as_tensor(t.triple_of_b), persistent=False)
        self._layer_cache: dict = {}

    # ------------------------------------------------------------------ info
    @property
    def n_descriptors(self) -> int:
        """Number of bispectrum components per atom (``K * n_elements**3`` with chemflag)."""
        return self.tables.n_b

    @property
    def n_components_per_block(self) -> int:
        return n_bispectrum(self.twojmax)

    def pair_cutoffs(self) -> np.ndarray:
        r = np.asarray(self.radii)
        return self.rcutfac * (r[:, None] + r[None, :])

    @property
    def cutoff(self) -> float:
        return float(self.pair_cutoffs().max())

    def config(self) -> dict:
        cfg = dict(
            elements=list(self.elements),
            twojmax=self.twojmax,
            rcutfac=self.rcutfac,
            radii=list(self.radii),
            weights=list(self.weights),
            rfac0=self.rfac0,
            rmin0=self.rmin0,
            switchflag=self.switchflag,
            bzeroflag=self.bzeroflag,
            chemflag=self.chemflag,
            bnormflag=self.bnormflag,
            wselfallflag=self.wselfallflag,
            switchinnerflag=self.switchinnerflag,
        )
        if self.switchinnerflag:
            cfg.update(sinner=list(self.sinner), dinner=list(self.dinner))
        return cfg

    def extra_repr(self) -> str:
        flags = [k for k in ("chemflag", "bnormflag", "wselfallflag", "switchinnerflag")
                 if getattr(self, k)]
        return (f"elements={self.elements}, twojmax={self.twojmax}, rcutfac={self.rcutfac}, "
                f"n_descriptors={self.n_descriptors}" + (f", {'+'.join(flags)}" if flags else ""))

    # ------------------------------------------------------------ public API
    def forward(self, graph, vectors: torch.Tensor | None = None) -> torch.Tensor:
        """Bispectrum components of every atom, shape ``(n_atoms, n_descriptors)``."""
        if vectors is None:
            vectors = graph.edge_vectors()
        out = []

        def keep(B, species):
            out.append(B)
            return B.new_zeros(B.shape[0]), None

        self.evaluate(graph, vectors, keep, need_gradient=False)
        if not out:
            return vectors.new_zeros((0, self.n_descriptors))
        return torch.cat(out, dim=0)

    def evaluate(
        self,
        graph,
        vectors: torch.Tensor,
        energy_fn: Callable,
        need_gradient: bool,
        *,
        atom_chunk: int | None = None,
        edge_chunk: int | None = None,
        linear: torch.Tensor | None = None,
        network=None,
        quadratic: torch.Tensor | None = None,
    ):
        """Per-atom energies and ``dE/dr_ij`` for a model ``E_i = f(B_i)``.

        ``energy_fn(B, species) -> (E, dE/dB)`` is called on chunks of atoms
        (``B`` of shape ``(n_chunk, n_descriptors)``); ``dE/dB`` may be None when
        ``need_gradient`` is False. Returns ``(energies, edge_grad)`` with
        ``edge_grad`` of shape ``(graph.n_edges, 3)`` (zeros on edges beyond the
        cutoff) or None.

        ``linear`` (n_elements, 1 + n_descriptors), optional: the coefficients of a
        linear model ``E_i = beta_0 + beta . B_i``; the compiled kernels then run
        descriptors, energies and gradients in one pass (``energy_fn`` is not called);
        with ``quadratic`` (n_elements, K, K) symmetric matrices, of a quadratic model
        ``E_i = beta_0 + beta . B_i + B_i . A B_i / 2`` (then ``energy_fn`` is the torch
        fallback).
        ``network``, optional: a callable ``(dtype, device) -> packed networks or None``
        (:func:`ase_mlp.kernels.sna.pack_network`) with which the compiled kernels run an
        NN-SNAP in one pass too; ``energy_fn`` is the fallback.

        On the CPU the compiled kernels (:mod:`ase_mlp.kernels`) run this unless
        ``kernel_settings(backend="torch")`` is in force, no compiler is available, or
        autograd must see through the descriptor (``vectors.requires_grad``).
        """
        if self._use_compiled(vectors, linear if quadratic is None else quadratic):
            from ase_mlp.kernels import sna

            packed = None if network is None else network(vectors.dtype, vectors.device)
            out = sna.evaluate(self, graph, vectors, energy_fn, need_gradient, linear, packed,
                               quadratic)
            if out is not None:  # None: dE/dB carries autograd history, use torch below
                return out
        ctx = self._prepare(graph, vectors, edge_chunk)
        if linear is not None and quadratic is None:
            def energy_fn(B, species, _c=linear):  # noqa: F811 - the linear model in torch
                c = _c.to(B.dtype)[species]
                return c[:, 0] + (B * c[:, 1:]).sum(1), c[:, 1:]
        uhalf = self._densities(ctx)
        n_atoms = ctx.n_atoms
        H, S = ctx.H, self.n_slots
        if atom_chunk is None:
            # keep the (terms x atoms) temporaries within a few MB of cache
            atom_chunk = max(16, int(1.5e5 // max(len(self.tables.zidx), 1)))
        energies = vectors.new_zeros(n_atoms)
        Y = torch.zeros((H, n_atoms * S), dtype=ctx.ctype, device=ctx.device) \
            if need_gradient else None
        for a in range(0, n_atoms, atom_chunk):
            b = min(a + atom_chunk, n_atoms)
            B, saved = self._atom_block(ctx, uhalf, a, b)
            e, dEdB = energy_fn(B.transpose(0, 1), graph.species[a:b])
            energies[a:b] = e
            if not need_gradient:
                continue
            if dEdB is None:
                raise RuntimeError("energy_fn returned no dE/dB although forces were requested")
            Yc = self._adjoint(saved, dEdB.transpose(0, 1).to(ctx.dtype))  # (S, H, nc)
            Y.view(H, n_atoms, S)[:, a:b, :] = Yc.permute(1, 2, 0)
        if not need_gradient:
            return energies, None

        # -- pass 3: edge gradients dE/dr_ij = Re(conj(Y_i) . d(f_c w u_ij)/dr) ----
        grad_sel = vectors.new_zeros((ctx.n_edges, 3))
        for a, b, sfac, dsfac, rij, r, rcut, unit in self._edge_chunks(ctx, need_d=True):
            Yp = Y.index_select(1, ctx.target[a:b])  # (H, P)
            gd, gu = self._edge_kernel(rij, r, rcut, Yp)
            grad_sel[a:b] = (gd * sfac).transpose(0, 1) + (gu * dsfac).unsqueeze(1) * unit
        grad = vectors.new_zeros((graph.n_edges, 3))
        grad.index_copy_(0, ctx.sel, grad_sel)
        return energies, grad

    def _use_compiled(self, vectors: torch.Tensor, linear=None) -> bool:
        """Whether :meth:`evaluate` runs the compiled kernels (see there)."""
        from ase_mlp import kernels

        backend = kernels.current_settings().backend
        if backend == "torch":
            return False
        if torch.is_grad_enabled() and (vectors.requires_grad or (
                linear is not None and linear.requires_grad)):
            # autograd must see through the descriptor: not a missing capability
            if backend == "compiled":
                raise kernels.KernelUnavailable(
                    "backend='compiled' was requested, but the inputs require grad and the "
                    "compiled kernels are not differentiable by autograd")
            return False
        reason = _compiled_unavailable(vectors.device)
        if reason is None:
            return True
        if backend == "compiled":
            raise kernels.KernelUnavailable(f"backend='compiled' was requested, but {reason}")
        _warn_fallback(reason)
        return False

    def jacobian(self, graph, vectors: torch.Tensor | None = None, *, edge_chunk: int = 512):
        """Descriptors and their gradients with respect to every edge vector.

        Returns ``(B, sel, J)``: ``B`` (n_atoms, n_descriptors); ``sel`` (E',)
        indices of the graph edges within the cutoff; ``J`` (E', n_descriptors, 3)
        with ``J[e, k] = dB_{i,k} / dr_ij`` for edge ``e = (i, j)`` (``i`` the
        centre). Any model ``E_i = f(B_i)`` then has ``dE/dr_ij = sum_k
        (dE_i/dB_ik) J[e, k]``, which is how training uses it: the descriptor
        gradients are computed once and the model is fitted on top of them.

        ``dB/dU`` is built once per atom for all components (the adjoint of
        :meth:`evaluate` with unit ``dE/dB``), and ``du_ij/dr`` by a forward-mode
        (tangent) pass of the Wigner recursion.
        """
        if vectors is None:
            vectors = graph.edge_vectors()
        if vectors.device.type == "cpu" and self._use_compiled(vectors):
            from ase_mlp.kernels import sna

            sel, _ = edges_within(graph, vectors, self._cutoffs.to(vectors.dtype))
            B_all, J = sna.jacobian(self, graph, vectors, sel)
            return B_all, sel, J
        ctx = self._prepare(graph, vectors, edge_chunk)
        uhalf = self._densities(ctx)
        n_atoms, H, S = ctx.n_atoms, ctx.H, self.n_slots
        K = self.n_descriptors
        dtype = ctx.dtype
        B_all = vectors.new_zeros((n_atoms, K))
        # Y[atom*S + slot] = (dB_k/dU_re, dB_k/dU_im) on the half set, (K, 2H) real
        Y = torch.zeros((n_atoms, S, K, 2 * H), dtype=dtype, device=ctx.device)
        atom_chunk = max(1, int(4e6 // max(len(self.tables.zidx), 1) // max(K, 1)))
        for a in range(0, n_atoms, atom_chunk):
            b = min(a + atom_chunk, n_atoms)
            nc = b - a
            B, saved = self._atom_block(ctx, uhalf, a, b)
            B_all[a:b] = B.transpose(0, 1)
            Yc = self._adjoint_all(saved, dtype).view(S, H, K, nc).permute(3, 0, 2, 1)
            Y[a:b, :, :, :H] = Yc.real
            Y[a:b, :, :, H:] = Yc.imag
        Y = Y.view(n_atoms * S, K, 2 * H)
        J = vectors.new_zeros((ctx.n_edges, K, 3))
        for a, b, sfac, dsfac, rij, r, rcut, unit in self._edge_chunks(ctx, need_d=True):
            ur, ui, dur, dui = self._edge_tangent(rij, r, rcut)  # (H,P), (3,H,P)
            # total u = f_c w u: du = f_c w du + u (d f_c w/dr) unit
            ds = (dsfac * unit.transpose(0, 1)).unsqueeze(1)  # (3, 1, P)
            du = torch.cat([dur * sfac + ur.unsqueeze(0) * ds,
                            dui * sfac + ui.unsqueeze(0) * ds], dim=1)  # (3, 2H, P)
            J[a:b] = _contract_by_target(Y, ctx.target[a:b], du)
        return B_all, ctx.sel, J

    # ------------------------------------------------------------ passes
    def _prepare(self, graph, vectors, edge_chunk=None):
        dtype = vectors.dtype
        if dtype not in _COMPLEX:
            raise TypeError(f"positions must be float32 or float64, got {dtype}")
        cutoffs = self._cutoffs.to(dtype)
        sel, r = edges_within(graph, vectors, cutoffs)
        ei = graph.edge_index[0, sel]
        ej = graph.edge_index[1, sel]
        si = graph.species[ei]
        sj = graph.species[ej]
        slot = sj if self.chemflag else torch.zeros_like(sj)
        if self.switchinnerflag:
            sin = self._sinner.to(dtype)
            din = self._dinner.to(dtype)
            rinner = 0.5 * (sin[si] + sin[sj])
            drinner = 0.5 * (din[si] + din[sj])
        else:
            rinner = drinner = None
        return _Context(
            graph=graph, dtype=dtype, ctype=_COMPLEX[dtype], device=vectors.device,
            n_atoms=graph.n_atoms, n_edges=int(sel.shape[0]),
            H=int(self.tables.half_index.shape[0]),
            sel=sel, r=r, rij=vectors[sel], target=ei * self.n_slots + slot,
            rcut=cutoffs[si, sj], wj=self._weights.to(dtype)[sj], rinner=rinner,
            drinner=drinner, edge_chunk=2048 if edge_chunk is None else int(edge_chunk))

    def _edge_chunks(self, ctx, need_d):
        step = ctx.edge_chunk
        for a in range(0, ctx.n_edges, step):
            b = min(a + step, ctx.n_edges)
            sfac, dsfac = self._switch(ctx.r[a:b], ctx.rcut[a:b], ctx.wj[a:b],
                                       None if ctx.rinner is None else ctx.rinner[a:b],
                                       None if ctx.drinner is None else ctx.drinner[a:b], need_d)
            rij, r = ctx.rij[a:b], ctx.r[a:b]
            yield a, b, sfac, dsfac, rij, r, ctx.rcut[a:b], rij / r.unsqueeze(1)

    def _densities(self, ctx):
        """Pass 1: densities U_i on the half set, shape ``(H, n_atoms, S)``."""
        n_atoms, S = ctx.n_atoms, self.n_slots
        uhalf = torch.zeros((ctx.H, n_atoms * S), dtype=ctx.ctype, device=ctx.device)
        for a, b, sfac, _, rij, r, rcut, _ in self._edge_chunks(ctx, need_d=False):
            u = self._edge_kernel(rij, r, rcut)
            uhalf.index_add_(1, ctx.target[a:b], u * sfac)
        uhalf = uhalf.view(ctx.H, n_atoms, S)
        hd = self._half_diag
        if self.chemflag and not self.wselfallflag:
            ar = torch.arange(n_atoms, device=ctx.device)
            uhalf[hd.unsqueeze(1), ar.unsqueeze(0), ctx.graph.species.unsqueeze(0)] += 1.0
        else:
            uhalf[hd] += 1.0
        return uhalf

    def _atom_block(self, ctx, uhalf, a, b):
        """Pass 2 for atoms ``a:b``: ``B`` (n_b, nc) and what the adjoint needs."""
        t = self.tables
        dtype, ctype, dev = ctx.dtype, ctx.ctype, ctx.device
        U, S = t.idxu_max, self.n_slots
        nc = b - a
        hc = uhalf[:, a:b, :].permute(2, 0, 1)  # (S, H, nc)
        full = hc.index_select(1, self._full_from_half)  # (S, U, nc)
        fsign = self._full_sign.to(dtype).view(1, U, 1)
        full = torch.where(self._full_mirror.view(1, U, 1), full.conj() * fsign, full)
        uT = full.reshape(S * U, nc)
        u1 = uT.index_select(0, self._zp1)
        u2 = uT.index_select(0, self._zp2)
        zcoef = self._zcoef.to(dtype).unsqueeze(1)
        Z = torch.zeros((t.n_z, nc), dtype=ctype, device=dev)
        Z.index_add_(0, self._zidx, u1 * u2 * zcoef)
        uq = uT.index_select(0, self._bq)
        Zb = Z.index_select(0, self._bz)
        prod = uq.real * Zb.real + uq.imag * Zb.imag
        B = torch.zeros((t.n_b, nc), dtype=dtype, device=dev)
        B.index_add_(0, self._bidx, prod * self._bw.to(dtype).unsqueeze(1))
        if self.bzeroflag:
            bzero = self._bzero.to(dtype).unsqueeze(1)
            if self.chemflag and not self.wselfallflag:
                n = S
                sp = ctx.graph.species[a:b]
                own = (sp * n + sp) * n + sp
                mask = (self._triple_of_b.unsqueeze(1) == own.unsqueeze(0)).to(dtype)
                B = B - bzero * mask
            else:
                B = B - bzero
        return B, (uq, Zb, u1, u2)

    def _adjoint_all(self, saved, dtype):
        """``dB_k/dU`` for every component ``k`` at once, ``(S, H, K*n)`` (k-major).

        Sparse: component ``k`` only reaches the ``Z`` entries of its own
        ``(j1, j2, j)`` triple, so the index lists below pair every ``k`` with
        just the Z terms it needs (built once, :meth:`_jacobian_tables`).
        """
        uq, Zb, u1, u2 = saved
        t = self.tables
        K, SU, n_z = t.n_b, self.n_slots * t.idxu_max, t.n_z
        n = uq.shape[1]
        kb, yb, zb, pk, pt, yp1, yp2, zpt = self._jacobian_tables(uq.device)
        bw = self._bw.to(dtype).unsqueeze(1)
        Yf = torch.zeros((K * SU, n), dtype=uq.dtype, device=uq.device)
        Yf.index_add_(0, yb, Zb * bw)
        gZ = torch.zeros((K * n_z, n), dtype=uq.dtype, device=uq.device)
        gZ.index_add_(0, zb, uq * bw)
        gP = gZ.index_select(0, zpt) * self._zcoef.to(dtype).index_select(0, pt).unsqueeze(1)
        Yf.index_add_(0, yp1, gP * u2.index_select(0, pt).conj())
        Yf.index_add_(0, yp2, gP * u1.index_select(0, pt).conj())
        G = Yf.view(K, self.n_slots, t.idxu_max, n).permute(1, 2, 0, 3)
        return self._fold(G.reshape(self.n_slots, t.idxu_max, K * n), dtype)

    def _jacobian_tables(self, device):
        key = ("jac", device)
        if key not in self._layer_cache:
            t = self.tables
            SU, n_z = self.n_slots * t.idxu_max, t.n_z
            bidx, bq, bz = (np.asarray(getattr(t, k)) for k in ("bidx", "bq", "bz"))
            zidx, zp1, zp2 = (np.asarray(getattr(t, k)) for k in ("zidx", "zp1", "zp2"))
            member = np.zeros((t.n_b, n_z), dtype=bool)
            member[bidx, bz] = True
            pk, pt = np.nonzero(member[:, zidx])  # (k, Z term) pairs that matter
            tabs = (bidx, bidx * SU + bq, bidx * n_z + bz, pk, pt, pk * SU + zp1[pt],
                    pk * SU + zp2[pt], pk * n_z + zidx[pt])
            self._layer_cache[key] = tuple(torch.as_tensor(x, dtype=torch.int64, device=device)
                                           for x in tabs)
        return self._layer_cache[key]

    def _adjoint(self, saved, dEdB):
        """``Y = dE/dU`` on the half set, ``(S, H, n)``, from ``dE/dB`` ``(n_b, n)``."""
        t = self.tables
        uq, Zb, u1, u2 = saved
        dtype = dEdB.dtype
        n = dEdB.shape[1]
        gB = dEdB.index_select(0, self._bidx) * self._bw.to(dtype).unsqueeze(1)  # (nbs, n)
        gZ = torch.zeros((t.n_z, n), dtype=uq.dtype, device=uq.device)
        gZ.index_add_(0, self._bz, uq * gB)
        gU = torch.zeros((self.n_slots * t.idxu_max, n), dtype=uq.dtype, device=uq.device)
        gU.index_add_(0, self._bq, Zb * gB)
        gP = gZ.index_select(0, self._zidx) * self._zcoef.to(dtype).unsqueeze(1)
        gU.index_add_(0, self._zp1, gP * u2.conj())
        gU.index_add_(0, self._zp2, gP * u1.conj())
        return self._fold(gU.view(self.n_slots, t.idxu_max, n), dtype)

    # ------------------------------------------------------------ internals
    def _fold(self, G: torch.Tensor, dtype) -> torch.Tensor:
        """Fold dE/dU of full matrices ``(S, U, n)`` onto the half set ``(S, H, n)``.

        The right half of every ``u_j`` is ``(-1)^(ma-mb) conj`` of the left,
        so its gradient folds in as ``s * conj(G_partner)``; the centre of an
        even-j matrix is real and keeps only its real part.
        """
        left = G.index_select(1, self._half_index)
        right = G.index_select(1, self._half_partner).conj() * self._half_sign.to(dtype).view(
            1, -1, 1)
        return torch.where(self._half_centre.view(1, -1, 1), left.real.to(left.dtype),
                           left + right)

    def _switch(self, r, rcut, wj, rinner, drinner, need_d):
        rmin0 = self.rmin0
        if self.switchflag:
            fac = math.pi / (rcut - rmin0)
            x = (r - rmin0) * fac
            inside = r > rmin0
            sfac = torch.where(inside, 0.5 * (torch.cos(x) + 1.0), torch.ones_like(r))
            dsfac = torch.where(inside, -0.5 * torch.sin(x) * fac, torch.zeros_like(r)) \
                if need_d else None
        else:
            sfac = torch.ones_like(r)
            dsfac = torch.zeros_like(r) if need_d else None
        if self.switchinnerflag:
            fac = math.pi / drinner
            x = (r - rinner) * fac
            mid = (r > rinner) & (r < rinner + drinner)
            si = torch.where(r >= rinner + drinner, torch.ones_like(r),
                             torch.where(mid, 0.5 * (1.0 - torch.cos(x)), torch.zeros_like(r)))
            if need_d:
                dsi = torch.where(mid, 0.5 * torch.sin(x) * fac, torch.zeros_like(r))
                dsfac = dsfac * si + sfac * dsi
            sfac = sfac * si
        sfac = sfac * wj
        if need_d:
            dsfac = dsfac * wj
        return sfac, dsfac

    def _layers(self, dtype, device):
        key = (dtype, device)
        if key not in self._layer_cache:
            rp = self.tables.rootpq
            layers = []
            for j in range(1, self.twojmax + 1):
                h = j // 2
                ca = np.zeros((h + 1, j, 1))
                cb = np.zeros((h + 1, j, 1))
                for mb in range(h + 1):
                    for ma in range(j):
                        ca[mb, ma, 0] = rp[j - ma, j - mb]
                        cb[mb, ma, 0] = rp[ma + 1, j - mb]
                # odd j: the next layer also needs row h+1 = (-1)^(h+1-ma) conj(row h reversed)
                mirror = np.array([(-1.0) ** (h + 1 - ma) for ma in range(j + 1)]).reshape(-1, 1)
                layers.append((j, h, torch.as_tensor(ca, dtype=dtype, device=device),
                               torch.as_tensor(cb, dtype=dtype, device=device),
                               torch.as_tensor(mirror, dtype=dtype, device=device),
                               int(self.tables.layer_sizes[j])))
            self._layer_cache[key] = layers
        return self._layer_cache[key]

    def _cayley_klein(self, rij, r, rcut):
        """``conj(a)``, ``conj(b)`` of the Cayley-Klein parameters of every edge.

        ``a = (z0 - i z)/r0``, ``b = (y - i x)/r0`` with ``z0 = r cot(theta0)``;
        returns the real and imaginary parts ``(car, cai, cbr, cbi)`` and the
        intermediates ``(z0, r0inv, rscale0)`` the derivatives need.
        """
        x, y, z = rij[:, 0], rij[:, 1], rij[:, 2]
        rscale0 = self.rfac0 * math.pi / (rcut - self.rmin0)
        theta0 = (r - self.rmin0) * rscale0
        z0 = r * torch.cos(theta0) / torch.sin(theta0)
        r0inv = 1.0 / torch.sqrt(r * r + z0 * z0)
        return (z0 * r0inv, z * r0inv, y * r0inv, x * r0inv), (z0, r0inv, rscale0)

    @staticmethod
    def _cayley_klein_grad(rij, r, z0, r0inv, rscale0):
        """``d/dr_ij`` of ``(car, cai, cbr, cbi)``, each of shape ``(3, P)``."""
        x, y, z = rij[:, 0], rij[:, 1], rij[:, 2]
        rsq = r * r
        dz0dr = z0 / r - (r * rscale0) * (rsq + z0 * z0) / rsq
        unit = (rij / r.unsqueeze(1)).transpose(0, 1)  # (3, P)
        dr0inv = -(r0inv ** 3) * (r + z0 * dz0dr) * unit  # (3, P)
        dcar = dz0dr * unit * r0inv + z0 * dr0inv
        dcai = z * dr0inv
        dcai[2] += r0inv
        dcbr = y * dr0inv
        dcbr[1] += r0inv
        dcbi = x * dr0inv
        dcbi[0] += r0inv
        return dcar, dcai, dcbr, dcbi

    def _edge_tangent(self, rij, r, rcut):
        """Wigner matrices of a chunk of edges on the half set and their gradients.

        Forward (tangent) mode of the recursion in :meth:`_edge_kernel`: returns
        ``(u_re, u_im, du_re, du_im)`` of shapes ``(H, P)`` and ``(3, H, P)``
        with ``du[d] = du / d r_ij[d]`` (without the cutoff function).
        """
        dtype = rij.dtype
        P = rij.shape[0]
        dev = rij.device
        (car, cai, cbr, cbi), inter = self._cayley_klein(rij, r, rcut)
        dcar, dcai, dcbr, dcbi = self._cayley_klein_grad(rij, r, *inter)
        # broadcast shapes (3, 1, 1, P) against tangents (3, h+1, j, P)
        dcar, dcai, dcbr, dcbi = (v.view(3, 1, 1, P) for v in (dcar, dcai, dcbr, dcbi))
        H = int(self.tables.layer_sizes.sum())
        ur = torch.empty((H, P), dtype=dtype, device=dev)
        ui = torch.empty((H, P), dtype=dtype, device=dev)
        dur = torch.empty((3, H, P), dtype=dtype, device=dev)
        dui = torch.empty((3, H, P), dtype=dtype, device=dev)
        ur[0], ui[0], dur[:, 0], dui[:, 0] = 1.0, 0.0, 0.0, 0.0
        pr = torch.ones((1, 1, P), dtype=dtype, device=dev)
        pi = torch.zeros((1, 1, P), dtype=dtype, device=dev)
        dpr = torch.zeros((3, 1, 1, P), dtype=dtype, device=dev)
        dpi = torch.zeros((3, 1, 1, P), dtype=dtype, device=dev)
        off = 1
        for j, h, coa, cob, mirror, nj in self._layers(dtype, dev):
            Ar, Ai = pr[: h + 1], pi[: h + 1]
            dAr, dAi = dpr[:, : h + 1], dpi[:, : h + 1]
            nr = torch.zeros((h + 1, j + 1, P), dtype=dtype, device=dev)
            ni = torch.zeros_like(nr)
            dnr = torch.zeros((3, h + 1, j + 1, P), dtype=dtype, device=dev)
            dni = torch.zeros_like(dnr)
            nr[:, :j] = coa * (car * Ar - cai * Ai)
            ni[:, :j] = coa * (car * Ai + cai * Ar)
            dnr[:, :, :j] = coa * (dcar * Ar + car * dAr - dcai * Ai - cai * dAi)
            dni[:, :, :j] = coa * (dcar * Ai + car * dAi + dcai * Ar + cai * dAr)
            nr[:, 1:] -= cob * (cbr * Ar - cbi * Ai)
            ni[:, 1:] -= cob * (cbr * Ai + cbi * Ar)
            dnr[:, :, 1:] -= cob * (dcbr * Ar + cbr * dAr - dcbi * Ai - cbi * dAi)
            dni[:, :, 1:] -= cob * (dcbr * Ai + cbr * dAi + dcbi * Ar + cbi * dAr)
            ur[off:off + nj] = nr.view(-1, P)[:nj]
            ui[off:off + nj] = ni.view(-1, P)[:nj]
            dur[:, off:off + nj] = dnr.reshape(3, -1, P)[:, :nj]
            dui[:, off:off + nj] = dni.reshape(3, -1, P)[:, :nj]
            off += nj
            if j % 2 == 1 and j < self.twojmax:
                nr = torch.cat([nr, (nr[h].flip(0) * mirror).unsqueeze(0)], dim=0)
                ni = torch.cat([ni, (-ni[h].flip(0) * mirror).unsqueeze(0)], dim=0)
                dnr = torch.cat([dnr, (dnr[:, h].flip(1) * mirror).unsqueeze(1)], dim=1)
                dni = torch.cat([dni, (-dni[:, h].flip(1) * mirror).unsqueeze(1)], dim=1)
            pr, pi, dpr, dpi = nr, ni, dnr, dni
        return ur, ui, dur, dui

    def _edge_kernel(self, rij, r, rcut, Y=None):
        """Wigner matrices of a chunk of edges, left-half rows only (VMK 4.8.2).

        Real arithmetic, edges on the last (contiguous) axis.

        Without ``Y``: returns ``u`` on the half set, shape ``(H, P)`` complex.
        With ``Y`` (``(H, P)`` complex, the adjoint of each edge's centre atom):
        returns ``(dL/dr, L)`` with ``L = sum_h Re(conj(Y_h) u_h)`` per edge, of
        shapes ``(3, P)`` and ``(P,)``. The gradient runs the recursion backwards
        (reverse mode, by hand) to the Cayley-Klein parameters, then to ``r``.
        """
        dtype = rij.dtype
        P = rij.shape[0]
        dev = rij.device
        # conj(a), conj(b) of the Cayley-Klein parameters a = (z0 - i z)/r0, b = (y - i x)/r0
        (car, cai, cbr, cbi), inter = self._cayley_klein(rij, r, rcut)
        grad = Y is not None
        layers = self._layers(dtype, dev)
        if grad:
            Yr, Yi = Y.real, Y.imag
            gu = Yr[0].clone()  # u_0 = 1
            saved = []
        else:
            H = int(self.tables.layer_sizes.sum())
            out_r = torch.empty((H, P), dtype=dtype, device=dev)
            out_i = torch.empty((H, P), dtype=dtype, device=dev)
            out_r[0] = 1.0
            out_i[0] = 0.0
        pr = torch.ones((1, 1, P), dtype=dtype, device=dev)
        pi = torch.zeros((1, 1, P), dtype=dtype, device=dev)
        off = 1
        for j, h, coa, cob, mirror, nj in layers:
            Ar, Ai = pr[: h + 1], pi[: h + 1]  # (h+1, j, P)
            nr = torch.zeros((h + 1, j + 1, P), dtype=dtype, device=dev)
            ni = torch.zeros((h + 1, j + 1, P), dtype=dtype, device=dev)
            nr[:, :j] = coa * (car * Ar - cai * Ai)
            ni[:, :j] = coa * (car * Ai + cai * Ar)
            nr[:, 1:] -= cob * (cbr * Ar - cbi * Ai)
            ni[:, 1:] -= cob * (cbr * Ai + cbi * Ar)
            fr = nr.view(-1, P)[:nj]
            fi = ni.view(-1, P)[:nj]
            if grad:
                saved.append((Ar, Ai))
                gu += (fr * Yr[off:off + nj] + fi * Yi[off:off + nj]).sum(0)
            else:
                out_r[off:off + nj] = fr
                out_i[off:off + nj] = fi
            off += nj
            if j % 2 == 1 and j < self.twojmax:
                nr = torch.cat([nr, (nr[h].flip(0) * mirror).unsqueeze(0)], dim=0)
                ni = torch.cat([ni, (-ni[h].flip(0) * mirror).unsqueeze(0)], dim=0)
            pr, pi = nr, ni
        if not grad:
            return torch.complex(out_r, out_i)

        # ---- reverse sweep: adjoints G of every layer's computed rows --------
        gca_r = torch.zeros(P, dtype=dtype, device=dev)
        gca_i = torch.zeros_like(gca_r)
        gcb_r = torch.zeros_like(gca_r)
        gcb_i = torch.zeros_like(gca_r)
        Gr_next = Gi_next = None
        off = int(self.tables.layer_sizes.sum())
        for (j, h, coa, cob, mirror, nj), (Ar, Ai) in zip(reversed(layers), reversed(saved),
                                                          strict=True):
            off -= nj
            rows = h + 2 if (j % 2 == 1 and j < self.twojmax) else h + 1
            Gr = torch.zeros((rows, j + 1, P), dtype=dtype, device=dev)
            Gi = torch.zeros((rows, j + 1, P), dtype=dtype, device=dev)
            Gr.view(-1, P)[:nj] += Yr[off:off + nj]
            Gi.view(-1, P)[:nj] += Yi[off:off + nj]
            if Gr_next is not None:
                Gr[: Gr_next.shape[0]] += Gr_next
                Gi[: Gi_next.shape[0]] += Gi_next
            if rows == h + 2:  # mirror row: u[h+1, m] = s_m conj(u[h, j-m])
                Gr[h] += (Gr[h + 1] * mirror).flip(0)
                Gi[h] -= (Gi[h + 1] * mirror).flip(0)
                Gr, Gi = Gr[: h + 1], Gi[: h + 1]
            Gar, Gai = Gr[:, :j] * coa, Gi[:, :j] * coa
            Gbr, Gbi = Gr[:, 1:] * cob, Gi[:, 1:] * cob
            gca_r += (Ar * Gar + Ai * Gai).sum((0, 1))
            gca_i += (Ar * Gai - Ai * Gar).sum((0, 1))
            gcb_r -= (Ar * Gbr + Ai * Gbi).sum((0, 1))
            gcb_i -= (Ar * Gbi - Ai * Gbr).sum((0, 1))
            if j > 1:
                Gr_next = car * Gar + cai * Gai - (cbr * Gbr + cbi * Gbi)
                Gi_next = car * Gai - cai * Gar - (cbr * Gbi - cbi * Gbr)

        # ---- chain to r through conj(a), conj(b): dL/dr = sum G . d(conj a, conj b)/dr
        dcar, dcai, dcbr, dcbi = self._cayley_klein_grad(rij, r, *inter)
        gd = gca_r * dcar + gca_i * dcai + gcb_r * dcbr + gcb_i * dcbi
        return gd, gu
