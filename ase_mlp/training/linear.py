"""Linear and quadratic SNAP by weighted, regularised linear least squares.

Both models are linear in their coefficients: per element ``s``,
``E_i = c_s . [1, X_i]`` with ``X = B`` (linear) or ``X = [B, q]`` with the
quadratic terms ``q_kl = B_k B_l`` (``1/2 B_k^2`` on the diagonal) in LAMMPS's
upper-triangle order. Each labelled frame gives rows of a design matrix:

* one energy row, per atom: ``[n_s, sum_{i in s} X_i] / N`` against ``E / N``;
* ``3N`` force rows: ``-d/dr_a`` of the energy row times ``N``, from the cached
  descriptor gradients;
* six stress rows (ASE Voigt, in GPa): ``(1/V) sum_edges sym(r_ij (x) dX/dr_ij)``.

The loss is ``w_E MSE_E + w_F MSE_F + w_S MSE_S`` (means over rows of each
kind, times per-frame and per-element force weights), so the weights balance
kinds of data whatever their counts. Rows are reduced block by block into the
``R`` factor of a QR decomposition (memory ``O(P^2)``, never the normal
equations), and the ridge parameter is chosen on the validation set (or by
generalised cross-validation without one) from an SVD of ``R``.
"""

from __future__ import annotations

import numpy as np
import torch
from ase import units

from ase_mlp.training.features import FrameFeatures


def _quadratic_index(K):
    iu = np.triu_indices(K)
    fac = np.where(iu[0] == iu[1], 0.5, 1.0)
    return torch.as_tensor(iu[0]), torch.as_tensor(iu[1]), torch.as_tensor(fac)


def frame_columns(f: FrameFeatures, n_elements: int, quadratic: bool):
    """Design-matrix blocks of one frame before weighting.

    Returns ``(energy_row (P,), force_rows (3N, P), stress_rows (6, P) or None)``
    with ``P = n_elements * (1 + n_X)``; the energy row is the *total* energy row.
    """
    B, J = f.B, f.J
    if quadratic:
        k, l_, fac = _quadratic_index(B.shape[1])
        fac = fac.to(B.dtype)
        X = torch.cat([B, B[:, k] * B[:, l_] * fac], dim=1)
        Bc = B.index_select(0, f.ei)
        dq = (J[:, k] * Bc[:, l_].unsqueeze(2) + J[:, l_] * Bc[:, k].unsqueeze(2)) \
            * fac.view(1, -1, 1)
        DX = torch.cat([J, dq], dim=1)
    else:
        X, DX = B, J
    N, nX = X.shape
    ne = n_elements
    width = 1 + nX
    sp = f.species
    e_row = torch.zeros((ne, width), dtype=X.dtype)
    e_row[:, 0] = torch.bincount(sp, minlength=ne).to(X.dtype)
    e_row[:, 1:].index_add_(0, sp, X)
    # forces: F_a = sum_{e: ei=a} G_e - sum_{e: ej=a} G_e, in the block of species[ei]
    si = sp.index_select(0, f.ei)
    F = torch.zeros((N * ne, nX, 3), dtype=X.dtype)
    F.index_add_(0, f.ei * ne + si, DX)
    F.index_add_(0, f.ej * ne + si, -DX)
    F = F.view(N, ne, nX, 3).permute(0, 3, 1, 2)  # (N, 3, ne, nX)
    f_rows = torch.zeros((N, 3, ne, width), dtype=X.dtype)
    f_rows[..., 1:] = F
    s_rows = None
    if f.volume > 0:
        # S[s, k, a, b] = sum over edges of centre species s of r_a G_kb, per species (an
        # (E, nX, 3, 3) product of every edge would be the largest allocation of a fit)
        S = torch.zeros((ne, nX, 3, 3), dtype=X.dtype)
        for s_ in range(ne):
            idx = torch.nonzero(si == s_).squeeze(1)
            if idx.numel():
                S[s_] = torch.einsum("ea,ekb->kab", f.rij.index_select(0, idx),
                                     DX.index_select(0, idx))
        S = S / f.volume
        S = 0.5 * (S + S.transpose(2, 3))
        voigt = torch.stack([S[..., 0, 0], S[..., 1, 1], S[..., 2, 2], S[..., 1, 2],
                             S[..., 0, 2], S[..., 0, 1]], dim=0)  # (6, ne, nX)
        s_rows = torch.zeros((6, ne, width), dtype=X.dtype)
        s_rows[..., 1:] = voigt
        s_rows = s_rows.reshape(6, -1)
    return e_row.reshape(-1), f_rows.reshape(3 * N, -1), s_rows


class QRAccumulator:
    """Streaming ``R`` factor of a tall weighted system ``[A | b]``.

    Rows are buffered and folded into the upper-triangular ``R`` of
    ``[A | b]`` with Householder QR, so memory stays ``O(P^2 + block)``.
    """

    def __init__(self, n_cols: int, block_rows: int = 50_000):
        self.P = n_cols
        self.R = np.zeros((0, n_cols + 1))
        self.buf: list[np.ndarray] = []
        self.buffered = 0
        self.block_rows = block_rows
        self.n_rows = 0

    def add(self, A, b, w):
        A = np.asarray(A, dtype=np.float64)
        if A.shape[0] == 0:
            return
        sw = np.sqrt(np.asarray(w, dtype=np.float64)).reshape(-1, 1)
        rows = np.hstack([A * sw, np.asarray(b, dtype=np.float64).reshape(-1, 1) * sw])
        self.buf.append(rows)
        self.buffered += rows.shape[0]
        self.n_rows += rows.shape[0]
        if self.buffered >= self.block_rows:
            self._fold()

    def _fold(self):
        if not self.buf:
            return
        stacked = np.vstack([self.R] + self.buf)
        self.R = np.linalg.qr(stacked, mode="r")
        self.buf, self.buffered = [], 0

    def finish(self):
        self._fold()
        R = self.R
        if R.shape[0] < self.P + 1:  # fewer rows than columns: pad with zeros
            R = np.vstack([R, np.zeros((self.P + 1 - R.shape[0], self.P + 1))])
        return R[: self.P, : self.P], R[: self.P, self.P], float(
            np.linalg.norm(R[self.P:, self.P]))


def _row_weights(frames, n_elements, energy_weight, force_weight, stress_weight,
                 element_force_weights):
    """Per-kind normalisers so the loss is a weighted sum of means."""
    n_e = sum(1 for f in frames if f.energy is not None)
    n_f = sum(3 * f.n_atoms for f in frames if f.forces is not None)
    n_s = sum(6 for f in frames if f.stress is not None)
    wE = energy_weight / n_e if n_e and energy_weight > 0 else 0.0
    wF = force_weight / n_f if n_f and force_weight > 0 else 0.0
    wS = stress_weight / n_s if n_s and stress_weight > 0 else 0.0
    if element_force_weights is None:
        wel = np.ones(n_elements)
    else:
        wel = np.asarray(element_force_weights, dtype=float)
    return wE, wF, wS, wel


def element_weights(spec, elements, frames) -> np.ndarray:
    """Per-element force weights from ``None``, ``"balanced"`` or a dict."""
    ne = len(elements)
    if spec is None:
        return np.ones(ne)
    if isinstance(spec, str):
        if spec != "balanced":
            raise ValueError(f"element_force_weights must be None, 'balanced' or a dict of "
                             f"element -> weight, got {spec!r}")
        counts = np.zeros(ne)
        for f in frames:
            if f.forces is not None:
                counts += np.bincount(f.species.numpy(), minlength=ne)
        present = counts > 0
        w = np.ones(ne)
        w[present] = counts[present].sum() / (present.sum() * counts[present])
        return w
    unknown = set(spec) - set(elements)
    if unknown:
        raise ValueError(f"element_force_weights names elements {sorted(unknown)} not in the "
                         f"model ({elements})")
    return np.array([float(spec.get(e, 1.0)) for e in elements])


def accumulate(frames, n_elements, quadratic, weights, acc=None) -> QRAccumulator:
    wE, wF, wS, wel = weights
    for f in frames:
        e_row, f_rows, s_rows = frame_columns(f, n_elements, quadratic)
        if acc is None:
            acc = QRAccumulator(e_row.shape[0])
        if f.energy is not None and wE > 0:
            acc.add(e_row.numpy()[None] / f.n_atoms, [f.energy / f.n_atoms],
                    [wE * f.weight * f.kind_weights[0]])
        if f.forces is not None and wF > 0:
            w = np.repeat(wel[f.species.numpy()], 3) * wF * f.weight * f.kind_weights[1]
            acc.add(f_rows.numpy(), f.forces.numpy().reshape(-1), w)
        if f.stress is not None and s_rows is not None and wS > 0:
            acc.add(s_rows.numpy() / units.GPa, f.stress.numpy() / units.GPa,
                    np.full(6, wS * f.weight * f.kind_weights[2]))
    return acc


LAMBDAS = np.concatenate([[0.0], np.logspace(-14, -2, 13)])


def solve(train: QRAccumulator, validation: QRAccumulator | None = None,
          regularization="auto"):
    """Ridge solution ``x``; ``regularization`` is a relative lambda or ``"auto"``.

    Lambda is relative to the largest squared singular value of the column-scaled
    system. ``"auto"`` picks it from :data:`LAMBDAS` by validation loss, or by
    generalised cross-validation when there is no validation set.
    Returns ``(x, info)``.
    """
    R, c, rho = train.finish()
    D = np.linalg.norm(R, axis=0)
    D[D == 0] = 1.0
    M = R / D
    U, s, Vt = np.linalg.svd(M, full_matrices=False)
    Uc = U.T @ c
    smax2 = float(s[0] ** 2) if s.size and s[0] > 0 else 1.0
    cut = s > s[0] * 1e-13 if s.size else s > 0

    def x_of(lam):
        with np.errstate(divide="ignore", invalid="ignore"):
            filt = np.where(cut, s / (s * s + lam * smax2), 0.0)
        return (Vt.T @ (filt * Uc)) / D, filt

    def train_loss(x):
        return float(np.sum((R @ x - c) ** 2) + rho ** 2)

    if validation is not None:
        Rv, cv, rhov = validation.finish()

        def val_loss(x):
            return float(np.sum((Rv @ x - cv) ** 2) + rhov ** 2)

    lams = LAMBDAS if regularization == "auto" else [float(regularization)]
    table = []
    for lam in lams:
        x, filt = x_of(lam)
        tl = train_loss(x)
        if validation is not None:
            score = val_loss(x)
        else:
            df = float(np.sum(filt * s))
            n = max(train.n_rows, 1)
            score = n * tl / max(n - df, 1e-12) ** 2  # GCV
        table.append((lam, tl, score))
    best = min(range(len(table)), key=lambda k: table[k][2])
    lam = table[best][0]
    x, _ = x_of(lam)
    info = {"lambda": lam, "train_loss": table[best][1],
            "selection": "validation" if validation is not None else "gcv",
            "score": table[best][2], "scan": table, "rank": int(cut.sum()),
            "condition": float(s[0] / s[cut][-1]) if cut.any() else float("inf")}
    return x, info


def fit_linear(model, train: list[FrameFeatures], validation: list[FrameFeatures] | None, *,
               energy_weight=1.0, force_weight=1.0, stress_weight=0.0,
               element_force_weights=None, regularization="auto", reference=None):
    """Fit ``model`` (LinearSNAP or QuadraticSNAP) in place; returns the solver info."""
    from ase_mlp.models.snap import QuadraticSNAP

    quadratic = isinstance(model, QuadraticSNAP)
    ne = len(model.elements)
    wel = element_weights(element_force_weights, model.elements, train)
    weights = _row_weights(train, ne, energy_weight, force_weight, stress_weight, wel)
    acc = accumulate(train, ne, quadratic, weights)
    if acc is None or acc.n_rows == 0:
        raise ValueError("no training rows: every weight is zero or the frames carry no labels")
    vacc = None
    if validation:
        # same per-row weights as the training loss, normalised by validation counts
        vweights = _row_weights(validation, ne, energy_weight, force_weight, stress_weight, wel)
        vacc = accumulate(validation, ne, quadratic, vweights,
                          acc=QRAccumulator(acc.P))
        if vacc.n_rows == 0:
            vacc = None
    x, info = solve(acc, vacc, regularization)
    coef = x.reshape(ne, -1)
    if reference is not None:
        coef[:, 0] += reference
    with torch.no_grad():
        model.coefficients.copy_(torch.as_tensor(coef, dtype=model.coefficients.dtype))
    return info
