"""Linear and quadratic SNAP, and NN-SNAP, over the bispectrum descriptor.

Per-atom energies follow LAMMPS ``pair_style snap`` / ``pair_style mliap``:

* linear:    ``E_i = beta_0 + sum_k beta_k B_ik``
* quadratic: ``E_i = beta_0 + sum_k beta_k B_ik + 1/2 sum_k a_kk B_ik^2 + sum_{k<l} a_kl B_ik B_il``
  with the coefficients in LAMMPS's order (linear, then the upper triangle row by row);
* NN-SNAP:   ``E_i = NN_e((B_i - mean_e) / std_e)``, one network per element.

Forces and stress use the adjoint route of :class:`~ase_mlp.descriptors.Bispectrum`
with ``beta_i = dE_i/dB_i``.
"""

from __future__ import annotations

import numpy as np
import torch

from ase_mlp.descriptors.bispectrum import Bispectrum
from ase_mlp.models.base import Model, register_model


def _descriptor(descriptor) -> Bispectrum:
    if isinstance(descriptor, dict):
        return Bispectrum(**descriptor)
    if not isinstance(descriptor, Bispectrum):
        raise TypeError(
            f"descriptor must be a Bispectrum (or its config dict), got {type(descriptor)}")
    return descriptor


class _SNAPBase(Model):
    def __init__(self, descriptor):
        super().__init__()
        self.descriptor = _descriptor(descriptor)
        self.elements = list(self.descriptor.elements)

    def pair_cutoffs(self) -> np.ndarray:
        return self.descriptor.pair_cutoffs()

    def atom_energy(self, B: torch.Tensor, species: torch.Tensor, need_gradient: bool):
        raise NotImplementedError

    def compute(self, graph, vectors, need_gradient):
        def fn(B, species):
            return self.atom_energy(B, species, need_gradient)

        return self.descriptor.evaluate(graph, vectors, fn, need_gradient)

    def descriptors(self, graph) -> torch.Tensor:
        """Bispectrum components of every atom of ``graph``."""
        return self.descriptor(graph)


def _coefficients(coefficients, n_elements, n_expected, what):
    c = torch.as_tensor(np.asarray(coefficients, dtype=np.float64))
    if c.ndim != 2 or c.shape[0] != n_elements:
        raise ValueError(
            f"{what} coefficients must have shape (n_elements={n_elements}, {n_expected}), "
            f"got {tuple(c.shape)}")
    if c.shape[1] != n_expected:
        raise ValueError(
            f"{what} coefficients: expected {n_expected} per element for this descriptor, "
            f"got {c.shape[1]}")
    if not torch.isfinite(c).all():
        raise ValueError(f"{what} coefficients contain NaN or inf")
    return c


@register_model
class LinearSNAP(_SNAPBase):
    """Linear SNAP (``pair_style snap`` with ``quadraticflag 0``).

    Parameters
    ----------
    descriptor : Bispectrum or dict
    coefficients : array (n_elements, 1 + n_descriptors)
        ``beta_0`` then ``beta_k`` per element, in LAMMPS order.
    """

    def __init__(self, descriptor, coefficients=None):
        super().__init__(descriptor)
        n = self.descriptor.n_descriptors
        if coefficients is None:
            coefficients = np.zeros((len(self.elements), 1 + n))
        self.coefficients = torch.nn.Parameter(
            _coefficients(coefficients, len(self.elements), 1 + n, "linear SNAP"))

    def config(self) -> dict:
        return {"descriptor": self.descriptor.config()}

    def compute(self, graph, vectors, need_gradient):
        # the compiled kernels fuse descriptors, energies and gradients of linear SNAP
        return self.descriptor.evaluate(graph, vectors, None, need_gradient,
                                        linear=self.coefficients)

    def atom_energy(self, B, species, need_gradient):
        c = self.coefficients.to(B.dtype)[species]
        beta = c[:, 1:]
        e = c[:, 0] + (B * beta).sum(1)
        return e, beta if need_gradient else None


@register_model
class QuadraticSNAP(_SNAPBase):
    """Quadratic SNAP (``quadraticflag 1``).

    Parameters
    ----------
    descriptor : Bispectrum or dict
    coefficients : array (n_elements, 1 + K + K(K+1)/2)
        ``beta_0``, the K linear coefficients, then the upper triangle
        ``a_kl`` (``l >= k``) row by row, as in LAMMPS ``.snapcoeff`` files.
    """

    def __init__(self, descriptor, coefficients=None):
        super().__init__(descriptor)
        K = self.descriptor.n_descriptors
        n = 1 + K + K * (K + 1) // 2
        if coefficients is None:
            coefficients = np.zeros((len(self.elements), n))
        self.coefficients = torch.nn.Parameter(
            _coefficients(coefficients, len(self.elements), n, "quadratic SNAP"))
        iu = torch.triu_indices(K, K)
        self.register_buffer("_iu", iu, persistent=False)

    def config(self) -> dict:
        return {"descriptor": self.descriptor.config()}

    def quadratic_matrix(self) -> torch.Tensor:
        """Symmetric ``A`` (n_elements, K, K) with ``E = ... + 1/2 B^T A B``."""
        K = self.descriptor.n_descriptors
        c = self.coefficients[:, 1 + K:]
        A = c.new_zeros((c.shape[0], K, K))
        A[:, self._iu[0], self._iu[1]] = c
        A[:, self._iu[1], self._iu[0]] = c
        return A

    def compute(self, graph, vectors, need_gradient):
        def fn(B, species):
            return self.atom_energy(B, species, need_gradient)

        K = self.descriptor.n_descriptors
        if torch.is_grad_enabled() and self.coefficients.requires_grad:
            return self.descriptor.evaluate(graph, vectors, fn, need_gradient)
        # the compiled kernels run the whole quadratic model in one pass
        return self.descriptor.evaluate(graph, vectors, fn, need_gradient,
                                        linear=self.coefficients[:, :1 + K],
                                        quadratic=self.quadratic_matrix())

    def atom_energy(self, B, species, need_gradient):
        K = self.descriptor.n_descriptors
        c = self.coefficients.to(B.dtype)
        A = self.quadratic_matrix().to(B.dtype)
        ci = c[species]
        # A B per element (A[species] would be an (n, K, K) copy)
        AB = torch.zeros_like(B)
        for el in range(len(self.elements)):
            idx = torch.nonzero(species == el).squeeze(1)
            if idx.numel():
                AB[idx] = B.index_select(0, idx) @ A[el]
        e = ci[:, 0] + (B * ci[:, 1:1 + K]).sum(1) + 0.5 * (B * AB).sum(1)
        return e, (ci[:, 1:1 + K] + AB) if need_gradient else None


_ACTIVATIONS = {
    "linear": lambda x: x,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "relu": torch.relu,
}


@register_model
class NNSNAP(_SNAPBase):
    """NN-SNAP: a per-element multilayer perceptron on standardised bispectra.

    Parameters
    ----------
    descriptor : Bispectrum or dict
    hidden : list of int
        Hidden layer widths (the output layer has width 1).
    activations : list of str
        One per layer including the output layer (``linear``, ``tanh``,
        ``sigmoid``, ``relu``); default ``tanh`` for hidden layers, ``linear`` out.
    mean, std : array (n_elements, n_descriptors), optional
        Standardisation ``(B - mean) / std`` (stored in the model).
    """

    def __init__(self, descriptor, hidden=(32, 32), activations=None, mean=None, std=None):
        super().__init__(descriptor)
        K = self.descriptor.n_descriptors
        ne = len(self.elements)
        self.hidden = [int(h) for h in hidden]
        sizes = [K] + self.hidden + [1]
        if activations is None:
            activations = ["tanh"] * len(self.hidden) + ["linear"]
        activations = list(activations)
        if len(activations) != len(sizes) - 1:
            raise ValueError(f"need {len(sizes) - 1} activations, got {len(activations)}")
        for a in activations:
            if a not in _ACTIVATIONS:
                raise ValueError(f"unknown activation {a!r}; choose from {sorted(_ACTIVATIONS)}")
        self.activations = activations
        self.networks = torch.nn.ModuleList(
            torch.nn.ModuleList(
                torch.nn.Linear(sizes[k], sizes[k + 1], dtype=torch.float64)
                for k in range(len(sizes) - 1))
            for _ in range(ne))
        mean = np.zeros((ne, K)) if mean is None else np.asarray(mean, dtype=np.float64)
        std = np.ones((ne, K)) if std is None else np.asarray(std, dtype=np.float64)
        if mean.shape != (ne, K) or std.shape != (ne, K):
            raise ValueError(f"mean/std must have shape {(ne, K)}")
        if np.any(std == 0):
            raise ValueError("std has zero entries")
        self.register_buffer("mean", torch.as_tensor(mean))
        self.register_buffer("std", torch.as_tensor(std))

    def config(self) -> dict:
        return {"descriptor": self.descriptor.config(), "hidden": list(self.hidden),
                "activations": list(self.activations)}

    def set_layer(self, element: int, layer: int, weight, bias):
        """Set one layer's ``weight`` (out, in) and ``bias`` (out,) for an element."""
        lin = self.networks[element][layer]
        w = torch.as_tensor(np.asarray(weight, dtype=np.float64))
        b = torch.as_tensor(np.asarray(bias, dtype=np.float64))
        if w.shape != lin.weight.shape or b.shape != lin.bias.shape:
            raise ValueError(f"layer {layer}: expected weight {tuple(lin.weight.shape)} and bias "
                             f"{tuple(lin.bias.shape)}, got {tuple(w.shape)}, {tuple(b.shape)}")
        with torch.no_grad():
            lin.weight.copy_(w)
            lin.bias.copy_(b)

    def compute(self, graph, vectors, need_gradient):
        def fn(B, species):
            return self.atom_energy(B, species, need_gradient)

        return self.descriptor.evaluate(graph, vectors, fn, need_gradient,
                                        network=self._packed_network)

    def _packed_network(self, dtype, device):
        """The networks for the compiled kernels (one pass, no torch ops), or None when
        autograd must see the parameters (training with grad enabled)."""
        if torch.is_grad_enabled() and any(p.requires_grad for p in self.parameters()):
            return None
        from ase_mlp.kernels.sna import pack_network

        return pack_network(self, dtype, device)

    def _net(self, e: int, x: torch.Tensor) -> torch.Tensor:
        for lin, act in zip(self.networks[e], self.activations, strict=False):
            x = _ACTIVATIONS[act](torch.nn.functional.linear(
                x, lin.weight.to(x.dtype), lin.bias.to(x.dtype)))
        return x.squeeze(-1)

    def atom_energy(self, B, species, need_gradient):
        e = B.new_zeros(B.shape[0])
        g = torch.zeros_like(B) if need_gradient else None
        mean = self.mean.to(B.dtype)
        std = self.std.to(B.dtype)
        for el in range(len(self.elements)):
            idx = torch.nonzero(species == el).squeeze(1)
            if idx.numel() == 0:
                continue
            with torch.enable_grad():
                x = B.index_select(0, idx).detach().requires_grad_(need_gradient)
                ei = self._net(el, (x - mean[el]) / std[el])
                if need_gradient:
                    (gi,) = torch.autograd.grad(ei.sum(), x)
            e[idx] = ei.detach()
            if need_gradient:
                g[idx] = gi
        return e, g
