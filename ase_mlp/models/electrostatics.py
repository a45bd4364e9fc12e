"""Fixed-charge electrostatics: point, Gaussian or Slater-1s charges; Ewald, PME or direct sums.

The ES-GAP baseline (Staacke et al. 2021; ``docs/methods.md`` section 4):
``E = E_ES(fixed q) + E_local(ML)``, with the ML part trained on the residual.
:class:`Electrostatics` is an ordinary ase_mlp model: it runs through
:class:`~ase_mlp.calculators.MLPCalculator`, one structure or a batch, adds to
any ML model in a :class:`~ase_mlp.models.SumModel` and is held fixed when the
ML member of that sum is fitted (:func:`ase_mlp.training.fit`).

Conventions
-----------
* Charges in e, ``k_e = 14.399645`` eV Å (LAMMPS ``metal``; ASE's
  ``Hartree * Bohr`` differs by 3e-8 relative and can be passed as ``coulomb_constant``).
* ``width`` is a length for both smeared densities: Gaussian
  ``rho ~ exp(-r^2 / 2 w^2)`` (``w = sigma``), Slater 1s ``rho ~ exp(-r / w)``
  (``w = 1 / lambda``).
* Energies *exclude* the self-interaction of each charge cloud unless
  ``include_self_energy=True`` (a constant per composition; stay consistent
  between training and use). With that convention smeared charges tend to point
  charges as the width goes to 0 or the separation grows.
* Periodic cells (``pbc`` all True): Ewald summation, real-space cutoff
  ``cutoff`` and ``alpha``, ``k_cut`` chosen so that ``erfc(alpha r_c)`` and
  ``exp(-k_cut^2 / 4 alpha^2)`` are below ``accuracy``; or smooth particle-mesh Ewald
  (B-splines of order ``pme_order``, analytic forces and virial) for large cells. Open
  structures (``pbc`` all False): direct all-pairs sum. Mixed boundary conditions are refused.
* A periodic cell must be neutral, unless ``neutralize=True`` adds the uniform
  background ``-pi Q^2 / (2 V alpha^2)``.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

from ase_mlp.models import _coulomb as C
from ase_mlp.models import _pme
from ase_mlp.models.base import Model, assemble, edges_within, register_model


_METHODS = ("auto", "ewald", "pme", "direct")


def _per_element(value, elements, name, *, positive=False) -> list[float]:
    if isinstance(value, dict):
        missing = [e for e in elements if e not in value]
        if missing:
            raise ValueError(f"{name} has no entry for element(s) {missing} (given for "
                             f"{sorted(value)})")
        out = [float(value[e]) for e in elements]
    else:
        out = [float(value)] * len(elements)
    for e, v in zip(elements, out, strict=True):
        if not np.isfinite(v) or (positive and v <= 0):
            kind = "positive and finite" if positive else "finite"
            raise ValueError(f"{name} of {e} must be {kind}, got {v}")
    return out


@register_model
class Electrostatics(Model):
    """Coulomb energy of fixed charges, as an ase_mlp model.

    Parameters
    ----------
    charges : dict or array
        Charge (e) per element, e.g. ``{"Na": 1, "Cl": -1}``, or one charge per
        atom (then ``elements`` is required and every structure evaluated must
        have exactly that many atoms).
    elements : list of str, optional
        Element list (order matters when summing with an ML model: pass the ML
        model's ``elements``). Default: the keys of ``charges``.
    density : {"point", "gaussian", "slater"}
        Shape of each charge cloud.
    width : float or dict, optional
        Cloud width in Å (per element with a dict); required for smeared densities.
    accuracy : float
        Relative accuracy of the Ewald sums (and of the truncation of the
        smearing correction).
    cutoff : float, optional
        Real-space cutoff in Å (default 10 Å, raised when the smearing
        correction needs more).
    method : {"auto", "ewald", "pme", "direct"}
        ``auto``: direct sum for open structures, Ewald for periodic cells of up
        to ``pme_threshold`` atoms, PME above.
    neutralize : bool
        Add a uniform neutralising background to charged periodic cells instead
        of raising.
    include_self_energy : bool
        Add the self-interaction of smeared clouds to the energy.
    coulomb_constant : float
        ``e^2 / 4 pi eps0`` in eV Å.
    mesh_spacing, pme_order : PME mesh spacing (Å along each lattice vector; default
        ``0.26 / alpha``, 0.6 Å at the default cutoff) and B-spline order (default 8):
        reciprocal-space forces to ~1e-6 relative (finer mesh or higher order for more).
    pme_threshold : int
        ``method="auto"`` uses Ewald up to this many atoms per structure, PME above.
    """

    edge_decomposable: ClassVar[bool] = False

    def __init__(self, charges, *, elements=None, density: str = "point", width=None,
                 accuracy: float = 1e-8, cutoff: float | None = None, method: str = "auto",
                 neutralize: bool = False, include_self_energy: bool = False,
                 coulomb_constant: float = C.COULOMB_CONSTANT, mesh_spacing: float | None = None,
                 pme_order: int = 8, pme_threshold: int = 500):
        super().__init__()
        if density not in C.DENSITIES:
            raise ValueError(f"density must be one of {C.DENSITIES}, got {density!r}")
        if method not in _METHODS:
            raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
        if not (0 < float(accuracy) < 1):
            raise ValueError(f"accuracy must lie in (0, 1), got {accuracy}")
        if isinstance(charges, dict):
            self.elements = list(elements) if elements is not None else list(charges)
            self._atom_charges = None
            q_el = _per_element(charges, self.elements, "charges")
        else:
            q = np.asarray(charges, dtype=float)
            if q.ndim != 1 or len(q) == 0:
                raise ValueError(f"per-atom charges must be a non-empty 1D array, got shape "
                                 f"{q.shape}")
            if not np.isfinite(q).all():
                raise ValueError(f"charges must be finite; atom {int(np.argmax(~np.isfinite(q)))}"
                                 f" has {q[~np.isfinite(q)][0]}")
            if elements is None:
                raise ValueError("per-atom charges need the element list: "
                                 "Electrostatics(q, elements=[...])")
            self.elements = list(elements)
            self._atom_charges = q.tolist()
            q_el = [0.0] * len(self.elements)
        if density == "point":
            if width is not None:
                raise ValueError("width is only used with density='gaussian' or 'slater'")
            w_el = [1.0] * len(self.elements)
        else:
            if width is None:
                raise ValueError(f"density={density!r} needs a width (Å), e.g. width=1.0 or "
                                 f"width={{'Na': 0.8, 'Cl': 1.2}}")
            w_el = _per_element(width, self.elements, "width", positive=True)
            if density == "slater":
                for a in w_el:
                    for b in w_el:
                        if a != b and abs(a - b) / max(a, b) < 1e-2:
                            raise ValueError(
                                f"Slater widths {a} and {b} Å differ by less than 1%: the "
                                "unequal-exponent formula loses precision there; make them "
                                "equal or further apart")
        self.density = density
        self.width = width if not isinstance(width, dict) else dict(width)
        self.charges_spec = dict(charges) if isinstance(charges, dict) else self._atom_charges
        self.accuracy = float(accuracy)
        self.method = method
        self.neutralize = bool(neutralize)
        self.include_self_energy = bool(include_self_energy)
        self.coulomb_constant = float(coulomb_constant)
        if not 2 <= int(pme_order) <= 12:
            raise ValueError(f"pme_order must be between 2 and 12, got {pme_order}")
        self.pme_order = int(pme_order)
        self.pme_threshold = int(pme_threshold)
        need = C.correction_range(density, max(w_el), min(w_el), self.accuracy)
        if cutoff is None:
            cutoff = max(10.0, need)
        elif not (np.isfinite(cutoff) and cutoff > 0):
            raise ValueError(f"cutoff must be a positive finite length (Å), got {cutoff}")
        elif cutoff < need:
            raise ValueError(
                f"cutoff {cutoff} Å is too short for {density} charges of width up to "
                f"{max(w_el)} Å at accuracy {self.accuracy:g}: the smearing correction needs "
                f"at least {need:.3f} Å")
        self.real_cutoff = float(cutoff)
        self.alpha, self.kcut = C.ewald_parameters(self.accuracy, self.real_cutoff)
        if mesh_spacing is not None and not (np.isfinite(mesh_spacing) and mesh_spacing > 0):
            raise ValueError(f"mesh_spacing must be a positive length (Å), got {mesh_spacing}")
        self.mesh_spacing = float(mesh_spacing) if mesh_spacing is not None else 0.26 / self.alpha
        self.register_buffer("q_species", torch.tensor(q_el, dtype=torch.float64),
                             persistent=False)
        self.register_buffer("w_species", torch.tensor(w_el, dtype=torch.float64),
                             persistent=False)
        q_atoms = torch.tensor(self._atom_charges if self._atom_charges else [],
                               dtype=torch.float64)
        self.register_buffer("q_atoms", q_atoms, persistent=False)

    # ------------------------------------------------------------ description
    def pair_cutoffs(self) -> np.ndarray:
        n = len(self.elements)
        return np.full((n, n), self.real_cutoff)

    def config(self) -> dict:
        return dict(charges=self.charges_spec, elements=list(self.elements),
                    density=self.density, width=self.width, accuracy=self.accuracy,
                    cutoff=self.real_cutoff, method=self.method, neutralize=self.neutralize,
                    include_self_energy=self.include_self_energy,
                    coulomb_constant=self.coulomb_constant, mesh_spacing=self.mesh_spacing,
                    pme_order=self.pme_order,
                    pme_threshold=self.pme_threshold)

    def extra_repr(self) -> str:
        return (f"elements={self.elements}, density={self.density!r}, cutoff="
                f"{self.real_cutoff:.3f}, alpha={self.alpha:.4f}, kcut={self.kcut:.4f}")

    def compute(self, graph, vectors, need_gradient):
        raise TypeError("Electrostatics has reciprocal-space terms that edges cannot carry: "
                        "call the model (forward) or sum it with SumModel, not compute()")

    # ------------------------------------------------------------ evaluation
    def atom_charges(self, graph) -> torch.Tensor:
        """Charge of every atom of ``graph`` (e)."""
        if self._atom_charges is None:
            return self.q_species[graph.species]
        n = len(self._atom_charges)
        counts = torch.bincount(graph.system, minlength=graph.n_systems)
        bad = torch.nonzero(counts != n).flatten()
        if len(bad):
            k = int(bad[0])
            raise ValueError(f"charges has length {n} but structure {k} has "
                             f"{int(counts[k])} atoms")
        return self.q_atoms.repeat(graph.n_systems)

    def _periodicity(self, graph) -> list[bool]:
        out = []
        for k in range(graph.n_systems):
            if graph.pbc is not None:
                pbc = [bool(x) for x in graph.pbc[k]]
            else:  # no pbc recorded: a 3D cell is taken as periodic
                pbc = [bool(abs(float(torch.linalg.det(graph.cells[k]))) > 1e-12)] * 3
            if any(pbc) and not all(pbc):
                raise ValueError(
                    f"Electrostatics handles fully periodic (Ewald/PME) or open (direct sum) "
                    f"structures; structure {k} has pbc={pbc}")
            out.append(all(pbc))
        return out

    def forward(self, graph, forces: bool = True, stress: bool = True) -> dict:
        q = self.atom_charges(graph)
        w = self.w_species[graph.species]
        periodic = self._periodicity(graph)
        ke = self.coulomb_constant
        vectors = graph.edge_vectors()
        # real-space Ewald terms (and smearing corrections) on the periodic structures' edges
        n_el = len(self.elements)
        cut = torch.full((n_el, n_el), self.real_cutoff, dtype=vectors.dtype,
                         device=vectors.device)
        idx, r = edges_within(graph, vectors, cut)
        i, j = graph.edge_index[:, idx]
        per = torch.tensor(periodic, device=vectors.device)
        keep = per[graph.system[i]]
        idx, r, i, j = idx[keep], r[keep], i[keep], j[keep]
        phi, dphi = C.pair_kernel(r, self.alpha, self.density, w[i], w[j], periodic=True)
        qq = 0.5 * ke * q[i] * q[j]  # each pair appears as (i, j) and (j, i)
        energies = vectors.new_zeros(graph.n_atoms).index_add_(0, i, qq * phi)
        grad = vectors.new_zeros(vectors.shape)
        grad[idx] = (qq * dphi / r)[:, None] * vectors[idx]
        out = assemble(graph, vectors, energies, grad, forces=True, stress=stress)
        # per-structure long-range terms
        for k, is_periodic in enumerate(periodic):
            atoms = torch.nonzero(graph.system == k).flatten()
            if len(atoms) == 0:
                continue
            e, f, aw = self._long_range(graph.positions[atoms], graph.cells[k], q[atoms],
                                        w[atoms], is_periodic, k, stress)
            out["energies"].index_add_(0, atoms, ke * e)
            out["forces"].index_add_(0, atoms, ke * f)
            if stress:
                out["atom_virial"].index_add_(0, atoms, ke * aw)
        if self.include_self_energy:
            out["energies"] += ke * C.self_energy(q, self.density, w)
        n_sys = graph.n_systems
        out["energy"] = out["energies"].new_zeros(n_sys).index_add_(0, graph.system,
                                                                   out["energies"])
        if stress:
            out["virial"] = out["atom_virial"].new_zeros((n_sys, 3, 3)).index_add_(
                0, graph.system, out["atom_virial"])
        if not forces:
            out.pop("forces")
        return out

    def _long_range(self, pos, cell, q, w, periodic: bool, k: int, stress: bool = True):
        if not periodic:
            return C.direct_sum(pos, q, self.density, w)
        total = float(q.sum())
        if abs(total) > 1e-8 * max(1.0, float(q.abs().sum())) and not self.neutralize:
            raise ValueError(
                f"structure {k} is periodic with net charge {total:+.6g} e: Ewald needs a "
                "neutral cell; fix the charges or pass neutralize=True for a uniform "
                "neutralising background")
        method = self.method
        if method == "direct":
            raise ValueError(f"method='direct' is for open structures; structure {k} is "
                             "periodic (use 'ewald', 'pme' or 'auto')")
        if method == "auto":
            method = "pme" if len(pos) > self.pme_threshold else "ewald"
        if method == "pme":
            e, f, aw = _pme.pme_kspace(pos, cell, q, self.alpha, mesh_spacing=self.mesh_spacing,
                                       order=self.pme_order, virial=stress)
        else:
            e, f, aw = C.ewald_kspace(pos, cell, q, self.alpha, self.kcut, virial=stress)
        e = e - self.alpha / np.sqrt(np.pi) * q * q
        if self.neutralize:
            eb, wb = C.ewald_background(q, cell, self.alpha)
            e = e + eb
            aw = aw + wb if aw is not None else None
        return e, f, aw
