"""Native torch GAP (Gaussian Approximation Potential) read from ``gap_fit``'s ``.xml`` files.

A GAP (Bartók et al., PRL 104, 136403 (2010); Bartók & Csányi, IJQC 115, 1051 (2015)) is a
sparse Gaussian process over local descriptors. Each ``gpCoordinates`` block of the xml
holds a descriptor ``d``, its sparse points ``x_s`` with weights ``alpha_s`` and per-point
cutoff values ``c_s``, and a covariance; the energy of one descriptor instance ``x`` is
(GAP's ``gpCoordinates_Predict``)::

    ard_se:       e(x) = sum_s alpha_s c_s (delta^2 exp(-|(x - x_s) / theta|^2 / 2) + f0^2)
    dot_product:  e(x) = sum_s alpha_s c_s delta^2 (x . x_s)^zeta

and the total energy is ``sum_atoms e0[Z_i] + sum_instances f_c(instance) e(x)``.

Descriptors:

* ``distance_2b`` (Z1, Z2, cutoff, cutoff_transition_width, exponents, tail_range,
  tail_exponent): one instance per *ordered* pair ``(i, j)`` with ``r_ij < cutoff`` and
  matching elements (so each unordered pair counts twice, as in QUIP), ``x = r^exponents``,
  ``f_c = (cos(pi (r - rc + w) / w) + 1) / 2`` in the last ``w`` Å before ``rc`` (times
  ``(erf(a r) / r)^p`` with a tail). The instance energy goes to the centre atom ``i``;
  since both orders are present this equals QUIP's half-per-end split of
  ``local_energy``. ``resid_name``/``only_intra``/``only_inter`` need residue ids: refused.
* ``soap``: computed by :class:`ase_mlp.descriptors.soap_quip.QuipSoap` (QUIP's SOAP in
  torch, QUIP's element order and normalisation), ``f_c = 1``, energy to the centre atom.

Any other descriptor, a core potential (``Sum`` of ``IP ...`` and GAP, ``do_core=T``),
other covariance types and permutations are refused with :class:`GapFormatError` naming the
file and what was found. Forces, stress and per-atom virials come from ``dE/dr_ij`` by
autograd through :func:`ase_mlp.models.base.assemble`. Per-atom virials (edges half per
end) are exactly QUIP's ``local_virial`` for ``distance_2b``-only GAPs; QUIP gives each
edge's ``-r_ij (x) dE/dr_ij`` of a SOAP wholly to the neighbour ``j`` (unsymmetrised), a
different split of the same total, so with a ``soap`` block ``per_atom_virials`` is False
and ``stresses`` are refused. Evaluation is float64 only (GAP weights alternate in sign
and cancel ~1e3-fold). Units: eV and Å (GAP's).

Predicted variance (QUIP's ``local_gap_variance``, :meth:`GAP.predict_variance`): per
instance ``delta^2 + f0^2 + reg^2 - k^T K_mm^-1 k`` with ``k_s`` the covariance to sparse
point ``s`` (times ``c_s``) and GAP's ``K_mm`` rebuilt from the sparse points alone
(ard_se: ``delta^2 c_s c_t exp(...)``; dot_product: ``delta^2 (x_s . x_t)^zeta``, no ``c``;
both ``+ f0^2 + reg^2 I``); an atom's variance is the sum over the instances it centres of
``f_c^2`` times that. ``reg`` is QUIP's ``gap_variance_regularisation`` (default 1e-3).

quippy/QUIP is never imported here (it is the reference of the tests only).
"""

from __future__ import annotations

import math
import pathlib

import numpy as np
import torch
from ase.data import chemical_symbols

from ase_mlp.models._gap_xml import GapFormatError, parse_args_string, read_gap_xml
from ase_mlp.models.base import Model


SUPPORTED_DESCRIPTORS = ("distance_2b", "soap")


def _flag(args: dict, key: str) -> bool:
    return str(args.get(key, "F")).strip().upper().startswith("T")


class _Distance2b:
    """Settings of one ``distance_2b`` descriptor (parsed from its QUIP string)."""

    def __init__(self, args: dict, dims: int, path, where):
        for key in ("resid_name", "only_intra", "only_inter"):
            if key in args and (key == "resid_name" or _flag(args, key)):
                raise GapFormatError(
                    f"{path}: {where}: distance_2b with {key}={args[key]!r} needs residue ids; "
                    "not supported")
        try:
            self.cutoff = float(args.get("cutoff", "0"))
            self.width = float(args.get("cutoff_transition_width", "0.5"))
            self.z1 = int(float(args.get("Z1", "0")))
            self.z2 = int(float(args.get("Z2", "0")))
            n_exp = int(float(args.get("n_exponents", "1")))
            if "exponents" in args:
                exps = [float(t) for t in args["exponents"].split()]
            else:
                exps = [1.0] if n_exp == 1 else [-float(k) for k in range(1, n_exp + 1)]
            self.tail_range = float(args.get("tail_range", "1.0"))
            self.tail_exponent = int(float(args.get("tail_exponent", "0")))
        except ValueError as err:
            raise GapFormatError(f"{path}: {where}: bad distance_2b setting ({err})") from None
        if len(exps) != dims:
            raise GapFormatError(f"{path}: {where}: distance_2b has {len(exps)} exponent(s) but "
                                 f"the sparse points have {dims} dimension(s)")
        if not self.cutoff > 0:
            raise GapFormatError(f"{path}: {where}: distance_2b cutoff must be positive")
        self.exponents = exps

    def matches(self, za: int, zb: int) -> bool:
        def ok(z, want):
            return want == 0 or z == want
        return (ok(za, self.z1) and ok(zb, self.z2)) or (ok(za, self.z2) and ok(zb, self.z1))


class GAP(Model):
    """A GAP potential (``distance_2b`` and ``soap`` descriptors) evaluated in torch.

    Build it with :meth:`from_xml` or ``MLPCalculator.from_file("gap.xml")``. The
    arrays of the xml are float64 buffers (they follow ``model.to(device)``); evaluation is
    float64 only (``TypeError`` otherwise: GAP weights cancel ~1e3-fold, float32 loses
    ~1e-3 relative). Saving in ase_mlp's format is not offered: keep the xml (and its
    ``*.sparseX.*`` files).
    """

    per_atom_energies = True
    per_atom_virials = True

    def __init__(self, data: dict, path="<GAP>"):
        super().__init__()
        self.source_file = str(path)
        self.label = data.get("label", "")
        self._blocks = []
        zs = {z for z, v in data["e0"].items() if v != 0.0}
        for k, c in enumerate(data["coordinates"]):
            where = c.get("where", f"<gpCoordinates> #{k + 1}")
            name = c["name"]
            if name not in SUPPORTED_DESCRIPTORS:
                raise GapFormatError(
                    f"{path}: {where}: descriptor {name!r} is not supported (supported: "
                    f"{list(SUPPORTED_DESCRIPTORS)}); descriptor string: {c['descriptor']!r}")
            if name == "distance_2b":
                spec = _Distance2b(c["args"], c["sparse_x"].shape[1], path, where)
                zs |= {z for z in (spec.z1, spec.z2) if z}
            else:
                spec = self._soap(c, path, where, data.get("gap_version"))
                zs |= {z for z in spec["species"] if z}
            self._blocks.append({"name": name, "spec": spec, "covariance": c["covariance"],
                                 "delta": float(c["delta"]), "f0": float(c["f0"]),
                                 "zeta": float(c["zeta"]), "descriptor": c["descriptor"]})
            self.register_buffer(f"x_{k}", torch.as_tensor(c["sparse_x"], dtype=torch.float64))
            self.register_buffer(f"w_{k}", torch.as_tensor(c["alpha"] * c["sparse_cutoff"],
                                                           dtype=torch.float64))
            self.register_buffer(f"c_{k}", torch.as_tensor(c["sparse_cutoff"],
                                                           dtype=torch.float64))
            theta = c["theta"] if c["covariance"] == "ard_se" else np.ones(1)
            self.register_buffer(f"theta_{k}", torch.as_tensor(theta, dtype=torch.float64))
        zs = sorted(zs)
        bad = [z for z in zs if not 0 < z < len(chemical_symbols)]
        if bad or not zs:
            raise GapFormatError(f"{path}: no usable elements in the model (found Z={zs})")
        self.elements = [chemical_symbols[z] for z in zs]
        self.register_buffer("z_table", torch.as_tensor(zs, dtype=torch.long))
        # QUIP's local_virial gives each edge's r (x) dE/dr wholly to the neighbour atom,
        # unsymmetrised; half per end (assemble) is the same thing for a pair descriptor
        # only, so per-atom virials of many-body (soap) GAPs are refused
        self.per_atom_virials = all(b["name"] == "distance_2b" for b in self._blocks)
        e0_default = float(data.get("e0_default", 0.0))
        self.register_buffer("e0", torch.as_tensor([data["e0"].get(z, e0_default) for z in zs],
                                                   dtype=torch.float64))
        for k, b in enumerate(self._blocks):
            if b["name"] == "soap":
                self.add_module(f"soap_{k}", b["spec"]["module"])

    # -- construction ------------------------------------------------------
    @staticmethod
    def _soap(c, path, where, version) -> dict:
        try:
            from ase_mlp.descriptors.soap_quip import QuipSoap
        except ImportError as err:
            raise GapFormatError(
                f"{path}: {where}: a soap descriptor needs ase_mlp.descriptors.soap_quip, "
                f"which cannot be imported here ({err})") from None
        try:
            module = QuipSoap.from_quip_string(c["descriptor"], xml_version=version)
        except (ValueError, KeyError, NotImplementedError) as err:
            raise GapFormatError(f"{path}: {where}: soap descriptor not supported: {err}") \
                from None
        dims = c["sparse_x"].shape[1]
        if int(module.dimension) != dims:
            raise GapFormatError(f"{path}: {where}: the soap descriptor has {module.dimension} "
                                 f"components but the sparse points have {dims}")
        species = [int(z) for z in list(module.Z) + list(module.species_Z)]
        return {"module": module, "cutoff": float(module.cutoff), "species": species,
                "centres": [int(z) for z in module.Z]}

    @classmethod
    def from_xml(cls, path) -> "GAP":
        """Read a ``gap_fit`` xml file (and the sparse-point files next to it)."""
        path = pathlib.Path(path)
        return cls(read_gap_xml(path), path)

    # -- description -------------------------------------------------------
    def pair_cutoffs(self) -> np.ndarray:
        zs = [int(z) for z in self.z_table]
        n = len(zs)
        out = np.zeros((n, n))
        for b in self._blocks:
            spec = b["spec"]
            for a in range(n):
                for c in range(n):
                    if b["name"] == "soap":
                        out[a, c] = max(out[a, c], spec["cutoff"])
                    elif spec.matches(zs[a], zs[c]):
                        out[a, c] = max(out[a, c], spec.cutoff)
        return out

    @property
    def descriptors(self) -> list[str]:
        """The QUIP descriptor strings, one per ``gpCoordinates`` block."""
        return [b["descriptor"] for b in self._blocks]

    def config(self) -> dict:
        """Where the model came from (for the calculator's checksum and parameters); not a
        recipe to rebuild it: :meth:`save` is refused."""
        return {"file": self.source_file, "label": self.label}

    def save(self, path) -> None:
        raise NotImplementedError(self._no_save())

    def _no_save(self) -> str:
        return ("a GAP model is not saved in ase_mlp's format: keep the original gap_fit xml "
                f"({self.source_file}) and its *.sparseX.* files, and load that")

    def extra_repr(self) -> str:
        names = [b["name"] for b in self._blocks]
        return f"elements={self.elements}, cutoff={self.cutoff:.4f}, descriptors={names}"

    # -- evaluation --------------------------------------------------------
    def _kernel_energy(self, k: int, x: torch.Tensor) -> torch.Tensor:
        """``sum_s alpha_s c_s k(x, x_s)`` for descriptor rows ``x`` (N, d)."""
        b = self._blocks[k]
        xs, w = getattr(self, f"x_{k}"), getattr(self, f"w_{k}")
        if b["covariance"] == "ard_se":
            theta = getattr(self, f"theta_{k}")
            diff = (x.unsqueeze(1) - xs.unsqueeze(0)) / theta
            kern = b["delta"] ** 2 * torch.exp(-0.5 * (diff * diff).sum(-1)) + b["f0"] ** 2
        else:
            kern = b["delta"] ** 2 * torch.pow(x @ xs.T, b["zeta"])
        return kern @ w

    def _distance_2b(self, k, graph, v, zi, zj):
        idx, x, fc = self._distance_2b_rows(k, v, zi, zj)
        return idx, self._kernel_energy(k, x) * fc

    def _distance_2b_rows(self, k, v, zi, zj):
        """Edges of descriptor ``k``, their descriptor rows ``r^exponents`` and cutoffs."""
        spec = self._blocks[k]["spec"]
        rsq = (v * v).sum(1)
        mask = (rsq < spec.cutoff ** 2) & (rsq > 1e-20)

        def ok(z, want):
            return torch.ones_like(mask) if want == 0 else z == want
        mask &= (ok(zi, spec.z1) & ok(zj, spec.z2)) | (ok(zi, spec.z2) & ok(zj, spec.z1))
        idx = torch.nonzero(mask, as_tuple=False).squeeze(1)
        r = rsq[idx].sqrt()
        exps = torch.as_tensor(spec.exponents, dtype=r.dtype, device=r.device)
        x = r.unsqueeze(1) ** exps
        rc, w = spec.cutoff, spec.width
        if w > 0:
            t = ((r - rc + w) / w).clamp(0.0, 1.0)
            fc = 0.5 * (torch.cos(math.pi * t) + 1.0)
        else:
            fc = torch.ones_like(r)
        if spec.tail_exponent != 0:
            fc = fc * (torch.erf(spec.tail_range * r) / r) ** spec.tail_exponent
        return idx, x, fc

    def atom_energies(self, graph, v: torch.Tensor) -> torch.Tensor:
        """Per-atom energies (n_atoms,), differentiable with respect to the edge vectors
        ``v`` (all edges of ``graph``; those beyond each descriptor's cutoff are skipped)."""
        z = self.z_table[graph.species]
        energies = self.e0.to(v.dtype)[graph.species].clone()
        i, j = graph.edge_index
        zi, zj = z[i], z[j]
        for k, b in enumerate(self._blocks):
            if b["name"] == "distance_2b":
                idx, e = self._distance_2b(k, graph, v, zi, zj)
                energies = energies.index_add(0, i[idx], e)
            else:
                centre_z = [c for c in b["spec"]["centres"] if c]
                if centre_z and not bool(torch.isin(z, z.new_tensor(centre_z)).any()):
                    continue  # no centre of this element in the batch
                desc, centres = getattr(self, f"soap_{k}")(z, i, j, v)
                energies = energies.index_add(0, centres, self._kernel_energy(k, desc))
        return energies

    # -- predicted variance -------------------------------------------------
    def _variance_terms(self, k: int, x: torch.Tensor, regularisation: float) -> torch.Tensor:
        """GAP's ``gpCoordinates_Predict`` variance of descriptor rows ``x`` (N, d):
        ``delta^2 + f0^2 + reg^2 - k^T K_mm^-1 k`` with GAP's ``K_mm``
        (``gpCoordinates_initialise_variance_estimate``)."""
        b = self._blocks[k]
        xs, c = getattr(self, f"x_{k}"), getattr(self, f"c_{k}")
        d2, f2 = b["delta"] ** 2, b["f0"] ** 2
        if b["covariance"] == "ard_se":
            theta = getattr(self, f"theta_{k}")
            diff = (x.unsqueeze(1) - xs.unsqueeze(0)) / theta
            kx = (d2 * torch.exp(-0.5 * (diff * diff).sum(-1)) + f2) * c
            dm = (xs.unsqueeze(1) - xs.unsqueeze(0)) / theta
            kmm = d2 * torch.exp(-0.5 * (dm * dm).sum(-1)) * c.unsqueeze(1) * c.unsqueeze(0)
        else:
            kx = d2 * torch.pow(x @ xs.T, b["zeta"]) * c
            kmm = d2 * torch.pow(xs @ xs.T, b["zeta"])   # GAP leaves out c here
        kmm = kmm + f2 + regularisation ** 2 * torch.eye(len(xs), dtype=xs.dtype,
                                                          device=xs.device)
        chol = torch.linalg.cholesky(kmm)
        sol = torch.cholesky_solve(kx.T, chol)
        return d2 + f2 + regularisation ** 2 - (kx.T * sol).sum(0)

    def local_variance(self, graph, vectors=None, regularisation: float = 1e-3):
        """Per-atom predicted variance (eV^2), QUIP's ``local_gap_variance``: for every
        descriptor instance its GP variance times its cutoff squared, summed on the centre
        atom. ``regularisation`` is QUIP's ``gap_variance_regularisation`` (default 1e-3)."""
        v = graph.edge_vectors() if vectors is None else vectors
        with torch.no_grad():
            z = self.z_table[graph.species]
            out = v.new_zeros(graph.n_atoms)
            i, j = graph.edge_index
            for k, b in enumerate(self._blocks):
                if b["name"] == "distance_2b":
                    idx, x, fc = self._distance_2b_rows(k, v, z[i], z[j])
                    out.index_add_(0, i[idx], self._variance_terms(k, x, regularisation) * fc ** 2)
                else:
                    centre_z = [c for c in b["spec"]["centres"] if c]
                    if centre_z and not bool(torch.isin(z, z.new_tensor(centre_z)).any()):
                        continue
                    desc, centres = getattr(self, f"soap_{k}")(z, i, j, v)
                    out.index_add_(0, centres, self._variance_terms(k, desc, regularisation))
        return out

    def predict_variance(self, images, regularisation: float = 1e-3) -> list[np.ndarray]:
        """QUIP's ``local_gap_variance`` (eV^2 per atom) of one structure or a list."""
        from ase import Atoms

        from ase_mlp.models.base import symbols_to_species
        from ase_mlp.neighbors import batch_neighbor_list, graph_from_neighbors

        single = isinstance(images, Atoms)
        images = [images] if single else list(images)
        species = [symbols_to_species(a.get_chemical_symbols(), self.elements) for a in images]
        nb = batch_neighbor_list([(a.positions, a.cell.array, a.pbc) for a in images], None,
                                 species=species, pair_cutoffs=self.pair_cutoffs())
        dev = self.e0.device
        graph = graph_from_neighbors(
            np.concatenate([a.positions for a in images]), np.stack([a.cell.array for a in images]),
            np.concatenate(species), nb.atom_system, nb.i, nb.j, nb.shifts,
            dtype=torch.float64, device=dev, pbc=np.stack([a.pbc for a in images]))
        var = self.local_variance(graph, regularisation=regularisation).cpu().numpy()
        out = np.split(var, np.cumsum([len(a) for a in images])[:-1])
        return out[0] if single else out

    def compute(self, graph, vectors, need_gradient):
        if vectors.dtype != torch.float64 or self.e0.dtype != torch.float64:
            raise TypeError(
                f"GAP models are evaluated in float64 only (got {vectors.dtype}): the GP "
                "weights of a GAP alternate in sign and cancel ~1e3-fold, so float32 gives "
                "errors of ~1e-3 relative; use MLPCalculator(..., dtype='float64')")
        with torch.enable_grad() if need_gradient else torch.no_grad():
            v = vectors.detach()
            if need_gradient:
                v = v.requires_grad_(True)
            energies = self.atom_energies(graph, v)
            grad = None
            if need_gradient:
                grad = vectors.new_zeros(vectors.shape)
                if energies.requires_grad:
                    (g,) = torch.autograd.grad(energies.sum(), v, allow_unused=True)
                    if g is not None:
                        grad = g
        return energies.detach(), grad


class GapFormat:
    """Entry point (group ``ase_mlp.model_formats``): one ``gap_fit`` ``.xml`` file."""

    name = "gap"

    @staticmethod
    def can_load(paths) -> bool:
        if len(paths) != 1 or pathlib.Path(paths[0]).suffix.lower() != ".xml":
            return False
        try:
            with open(paths[0], "rb") as fh:
                head = fh.read(4096)
        except OSError:
            return False
        return b"GAP_params" in head or b"IP GAP" in head

    @staticmethod
    def load(paths) -> GAP:
        return GAP.from_xml(paths[0])


__all__ = ["GAP", "GapFormat", "GapFormatError", "parse_args_string"]
