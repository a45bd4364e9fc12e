"""Native torch DeepPot-SE (``se_e2_a`` descriptor + energy fitting) read from DeePMD-kit
``.dp`` files.

DeePMD-kit's backend-independent ``.dp`` format is an HDF5 file whose ``json`` attribute
holds the serialised model and whose datasets (``variable_NNNN``) hold the arrays; it is
read here with ``h5py`` alone (no deepmd-kit needed). The energy of atom ``i`` is that of
deepmd's NumPy backend (``deepmd.dpmodel``)::

    R_ij  = w(r) (1/(r+p), x/(r+p)^2, y/(r+p)^2, z/(r+p)^2)          (environment row)
    R'_ij = (R_ij - davg[t_i, t_j]) / dstd[t_i, t_j]                   (normalised)
    G_ij  = N_{t_j}(R'_ij[0])  (type_one_side)  or  N_{t_i, t_j}(R'_ij[0])
    T_i   = (sum_j G_ij (x) R'_ij + padding) / sum(sel)                 (ng x 4)
    D_i   = T_i T_i[:axis_neuron]^T                                     (ng x axis_neuron)
    E_i   = F_{t_i}(D_i) [- F_{t_i}(0) for atom_ener types] + bias_atom_e[t_i] + out_bias[t_i]

with ``w(r) = 1 - 10u^3 + 15u^4 - 6u^5``, ``u = (r - rcut_smth)/(rcut - rcut_smth)`` clipped
to [0, 1]. deepmd pads each neighbour-type section to ``sel[t]`` slots; an empty slot has
the row ``-davg/dstd`` (not zero), so it adds ``(sel[t] - n_t) N(-davg0/dstd0) (x) (-davg/dstd)``
to ``T_i``; this is reproduced exactly. deepmd truncates a section holding more than
``sel[t]`` neighbours (keeping the nearest, which makes the energy discontinuous); this
model refuses such structures instead (``ValueError`` naming the structure, the atom, the
neighbour element and the counts).

Forces, stress and per-atom virials come from ``dE/dr_ij`` by autograd
(:func:`ase_mlp.models.base.assemble`). Units: eV and Å (deepmd's).
"""

from __future__ import annotations

import json
import math
import pathlib
from typing import ClassVar

import numpy as np
import torch
from ase.calculators.calculator import PropertyNotImplementedError

from ase_mlp.models.base import Model, check_finite_parameters, edges_within, register_model


HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


class DeepmdFormatError(ValueError):
    """A ``.dp`` file cannot be read as a DeePot-SE energy model; the message names the file
    and the key."""


def _gelu(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def _softplus(x):
    # deepmd's form (no threshold: torch's softplus returns x above 20, 2e-9 off)
    return torch.relu(x) + torch.log(1.0 + torch.exp(-torch.abs(x)))


_ACTIVATIONS = {
    "tanh": torch.tanh,
    "relu": torch.relu,
    "gelu": _gelu,
    "gelu_tf": _gelu,
    "relu6": lambda x: torch.clamp(x, 0.0, 6.0),
    "softplus": _softplus,
    "sigmoid": torch.sigmoid,
    "silu": torch.nn.functional.silu,
    "none": lambda x: x,
    "linear": lambda x: x,
}


def _layer_spec(layer: dict, where: str, path) -> dict:
    act = str(layer.get("activation_function", "none")).lower()
    if act not in _ACTIVATIONS:
        raise DeepmdFormatError(
            f"{path}: {where}.activation_function is {act!r}; supported: {sorted(_ACTIVATIONS)}")
    var = layer.get("@variables", {})
    w = var.get("w")
    if w is None:
        raise DeepmdFormatError(f"{path}: {where} has no weight matrix 'w'")
    w = np.asarray(w, dtype=np.float64)
    if w.ndim != 2:
        raise DeepmdFormatError(f"{path}: {where}.w has shape {w.shape}, expected 2-D")
    b, idt = var.get("b"), var.get("idt")
    return {"n_in": int(w.shape[0]), "n_out": int(w.shape[1]), "activation": act,
            "resnet": bool(layer.get("resnet", False)), "bias": b is not None,
            "timestep": idt is not None,
            "arrays": {"w": w,
                       "b": None if b is None else np.asarray(b, np.float64).reshape(-1),
                       "idt": None if idt is None else np.asarray(idt, np.float64).reshape(-1)}}


def _strip(spec: dict) -> dict:
    return {k: v for k, v in spec.items() if k != "arrays"}


@register_model
class DeepPotSE(Model):
    """DeepPot-SE energy model (``se_e2_a`` + per-type energy fitting nets).

    Build it with :meth:`from_dp` (a DeePMD-kit ``.dp`` file) or
    :func:`ase_mlp.calculators.MLPCalculator.from_file`. The constructor takes the
    architecture (``config()``); the weights are buffers, so ``model.save`` and
    ``ase_mlp.models.load`` round-trip it.

    Parameters
    ----------
    elements : list of str
        deepmd's ``type_map`` (species order).
    rcut, rcut_smth : float
        Cutoff and start of the smooth switch, Å.
    sel : list of int
        Neighbour slots per neighbour type; more neighbours raise ``ValueError``.
    axis_neuron : int
        Columns of the embedding matrix kept for the descriptor (M2).
    type_one_side : bool
        One embedding net per neighbour type (True) or per (centre, neighbour) pair.
    env_protection : float
        ``p`` in ``1/(r+p)``, Å.
    embedding_layers, fitting_layers : list of list of dict
        Layer specs (``n_in``, ``n_out``, ``activation``, ``resnet``, ``bias``,
        ``timestep``) of each embedding net (index ``t_j`` or ``t_i * n + t_j``) and of
        each per-type fitting net.
    remove_vacuum : list of bool
        Per type: subtract ``F_t(0)`` (deepmd's ``atom_ener`` given for that type).
    """

    #: what this model computes (ASE names); anything else raises PropertyNotImplementedError
    implemented_properties: ClassVar[tuple] = (
        "energy", "free_energy", "energies", "forces", "stress", "stresses")
    units: ClassVar[dict] = {"energy": "eV", "length": "Angstrom"}

    def __init__(self, elements, rcut, rcut_smth, sel, axis_neuron, type_one_side,
                 embedding_layers, fitting_layers, remove_vacuum=None, env_protection=0.0):
        super().__init__()
        self.elements = list(elements)
        nt = len(self.elements)
        self.rcut, self.rcut_smth = float(rcut), float(rcut_smth)
        if not 0.0 <= self.rcut_smth < self.rcut:
            raise ValueError(f"need 0 <= rcut_smth < rcut, got rcut_smth={rcut_smth}, "
                             f"rcut={rcut}")
        self.sel = [int(s) for s in sel]
        if len(self.sel) != nt:
            raise ValueError(f"sel {self.sel} has {len(self.sel)} entries for {nt} elements")
        self.axis_neuron = int(axis_neuron)
        self.type_one_side = bool(type_one_side)
        self.env_protection = float(env_protection)
        n_emb = nt if self.type_one_side else nt * nt
        if len(embedding_layers) != n_emb or len(fitting_layers) != nt:
            raise ValueError(f"need {n_emb} embedding nets and {nt} fitting nets, got "
                             f"{len(embedding_layers)} and {len(fitting_layers)}")
        self.embedding_layers = [[_strip(s) for s in net] for net in embedding_layers]
        self.fitting_layers = [[_strip(s) for s in net] for net in fitting_layers]
        self.ng = self.embedding_layers[0][-1]["n_out"]
        if not 1 <= self.axis_neuron <= self.ng:
            raise ValueError(f"axis_neuron={axis_neuron} must be in 1..{self.ng}")
        self.remove_vacuum = [bool(x) for x in (remove_vacuum or [False] * nt)]
        self._nets = {}
        for kind, nets in (("emb", self.embedding_layers), ("fit", self.fitting_layers)):
            for k, net in enumerate(nets):
                for layer_no, spec in enumerate(net):
                    name = f"{kind}{k}_{layer_no}"
                    self.register_buffer(name + "_w", torch.zeros(spec["n_in"], spec["n_out"],
                                                                  dtype=torch.float64))
                    if spec["bias"]:
                        self.register_buffer(name + "_b", torch.zeros(spec["n_out"],
                                                                      dtype=torch.float64))
                    if spec["timestep"]:
                        self.register_buffer(name + "_idt", torch.zeros(spec["n_out"],
                                                                        dtype=torch.float64))
        self.register_buffer("davg", torch.zeros(nt, nt, 4, dtype=torch.float64))
        self.register_buffer("dstd", torch.ones(nt, nt, 4, dtype=torch.float64))
        self.register_buffer("atom_bias", torch.zeros(nt, dtype=torch.float64))

    # -- description -----------------------------------------------------
    def pair_cutoffs(self) -> np.ndarray:
        n = len(self.elements)
        return np.full((n, n), self.rcut)

    def config(self) -> dict:
        return {"elements": list(self.elements), "rcut": self.rcut, "rcut_smth": self.rcut_smth,
                "sel": list(self.sel), "axis_neuron": self.axis_neuron,
                "type_one_side": self.type_one_side,
                "embedding_layers": self.embedding_layers, "fitting_layers": self.fitting_layers,
                "remove_vacuum": list(self.remove_vacuum),
                "env_protection": self.env_protection}

    @classmethod
    def check_properties(cls, properties) -> None:
        """Raise ``PropertyNotImplementedError`` naming any property this model lacks."""
        missing = sorted(set(properties) - set(cls.implemented_properties))
        if missing:
            raise PropertyNotImplementedError(
                f"DeepPotSE computes {list(cls.implemented_properties)}; not {missing} (deepmd "
                "dipole, polarizability and DOS models are not supported)")

    @classmethod
    def from_dp(cls, path) -> "DeepPotSE":
        """Read a DeePMD-kit ``.dp`` file (needs ``h5py``; not deepmd-kit)."""
        path = pathlib.Path(path)
        data = read_dp(path)
        model = _build(data, path)
        try:
            check_finite_parameters(model)
        except ValueError as err:
            raise DeepmdFormatError(f"{path}: {err}") from None
        model.source_file = str(path.resolve())
        return model

    # -- evaluation ------------------------------------------------------
    def _mlp(self, prefix: str, layers: list, x: torch.Tensor) -> torch.Tensor:
        for layer_no, spec in enumerate(layers):
            name = f"{prefix}_{layer_no}"
            w = getattr(self, name + "_w")
            y = x @ w
            if spec["bias"]:
                y = y + getattr(self, name + "_b")
            y = _ACTIVATIONS[spec["activation"]](y)
            if spec["timestep"]:
                y = y * getattr(self, name + "_idt")
            if spec["resnet"] and spec["n_out"] == spec["n_in"]:
                y = y + x
            elif spec["resnet"] and spec["n_out"] == 2 * spec["n_in"]:
                y = y + torch.cat([x, x], dim=-1)
            x = y
        return x

    def _emb_index(self, ti: int, tj: int) -> int:
        # deepmd's NetworkCollection stores the (ti, tj) net at ti + tj * ntypes
        return tj if self.type_one_side else ti + tj * len(self.elements)

    def compute(self, graph, vectors, need_gradient):
        nt = len(self.elements)
        n_atoms = graph.n_atoms
        cut = vectors.new_full((nt, nt), self.rcut)
        idx, _ = edges_within(graph, vectors, cut)
        i = graph.edge_index[0, idx]
        j = graph.edge_index[1, idx]
        ti_e, tj_e = graph.species[i], graph.species[j]
        # neighbour count per (atom, neighbour type); deepmd truncates overflow, we refuse
        counts = torch.zeros(n_atoms * nt, dtype=torch.long, device=vectors.device)
        counts.index_add_(0, i * nt + tj_e, torch.ones_like(i))
        counts = counts.view(n_atoms, nt)
        sel = torch.as_tensor(self.sel, device=vectors.device)
        over = counts > sel
        if bool(over.any()):
            self._overflow(graph, counts, over)
        with torch.enable_grad() if need_gradient else torch.no_grad():
            v = vectors[idx]
            if need_gradient:
                v = v.detach().requires_grad_(True)
            energies = self._energies(graph, v, i, ti_e, tj_e, counts)
            grad = None
            if need_gradient:
                grad = vectors.new_zeros(vectors.shape)
                if energies.requires_grad:  # False when no atom has a neighbour
                    (gv,) = torch.autograd.grad(energies.sum(), v, allow_unused=True)
                    if gv is not None:
                        grad[idx] = gv
        return energies.detach(), grad

    def _energies(self, graph, v, i, ti_e, tj_e, counts):
        nt = len(self.elements)
        n_atoms = graph.n_atoms
        dtype = v.dtype
        p = self.env_protection
        r = torch.linalg.vector_norm(v, dim=1, keepdim=True)
        u = ((r.clamp(self.rcut_smth, self.rcut) - self.rcut_smth)
             / (self.rcut - self.rcut_smth))
        w = u * u * u * (-6.0 * u * u + 15.0 * u - 10.0) + 1.0
        row = torch.cat([1.0 / (r + p), v / (r + p) ** 2], dim=1) * w
        pair = ti_e * nt + tj_e
        davg = self.davg.to(dtype).view(nt * nt, 4)
        dstd = self.dstd.to(dtype).view(nt * nt, 4)
        row = (row - davg[pair]) / dstd[pair]
        ng = self.ng
        # embedding of every edge, by (centre type, neighbour type) block
        blocks, outs = [], []
        pad_rows = -davg / dstd  # (nt*nt, 4): the row of an empty slot
        species = graph.species
        n_pad = (torch.as_tensor(self.sel, device=v.device) - counts).to(dtype)  # (n, nt)
        pad = v.new_zeros((n_atoms, ng, 4))
        for ti in range(nt):
            for tj in range(nt):
                k = self._emb_index(ti, tj)
                prefix = f"emb{k}"
                layers = self.embedding_layers[k]
                sel_e = torch.nonzero(pair == ti * nt + tj).squeeze(1)
                if sel_e.numel():
                    blocks.append(sel_e)
                    outs.append(self._mlp(prefix, layers, row[sel_e, :1]))
                # empty slots: a constant per atom, weighted by how many there are
                pr = pad_rows[ti * nt + tj]
                gp = self._mlp(prefix, layers, pr[:1].view(1, 1)).view(ng)
                weight = (species == ti).to(dtype) * n_pad[:, tj]
                pad = pad + weight[:, None, None] * (gp[:, None] * pr[None, :])[None]
        # T_i = sum_j g_ij (x) R_ij as one batched matrix product over a dense
        # (atom, neighbour slot) layout: no (edges, ng, 4) intermediate
        n_e = i.shape[0]
        per_atom = torch.bincount(i, minlength=n_atoms)
        width = int(per_atom.max()) if n_e else 0
        order = torch.argsort(i, stable=True)
        start = torch.cumsum(per_atom, 0) - per_atom
        slot = torch.empty_like(i)
        slot[order] = torch.arange(n_e, device=i.device) - start[i[order]]
        perm = torch.cat(blocks) if blocks else slot
        g = torch.cat(outs) if outs else v.new_zeros((0, ng))
        gd = v.new_zeros((n_atoms, width, ng)).index_put((i[perm], slot[perm]), g)
        rd = v.new_zeros((n_atoms, width, 4)).index_put((i, slot), row)
        gr = torch.bmm(gd.transpose(1, 2), rd) + pad
        gr = gr / float(sum(self.sel))
        d = torch.einsum("nak,nbk->nab", gr, gr[:, : self.axis_neuron, :]).reshape(n_atoms, -1)
        energies = v.new_zeros(n_atoms)
        bias = self.atom_bias.to(dtype)
        for t in range(nt):
            atoms = torch.nonzero(species == t).squeeze(1)
            if atoms.numel() == 0:
                continue
            e = self._mlp(f"fit{t}", self.fitting_layers[t], d[atoms]).squeeze(1)
            if self.remove_vacuum[t]:
                e = e - self._mlp(f"fit{t}", self.fitting_layers[t],
                                  d.new_zeros(1, d.shape[1])).squeeze(1)
            energies = energies.index_add(0, atoms, e + bias[t])
        return energies

    def _overflow(self, graph, counts, over):
        a, t = (int(x) for x in torch.nonzero(over)[0])
        s = int(graph.system[a])
        first = int(torch.nonzero(graph.system == s)[0, 0])
        el = self.elements
        raise ValueError(
            f"structure {s}, atom {a - first} ({el[int(graph.species[a])]}): "
            f"{int(counts[a, t])} {el[t]} neighbours within rcut={self.rcut:g} Å, more than "
            f"sel[{t}]={self.sel[t]} of this DeePMD model (deepmd would silently drop the "
            f"farthest, making the energy discontinuous); the structure is outside what the "
            f"model was built for ({int(over.sum())} atom/type pair(s) over sel in this batch)")


# ----------------------------------------------------------------------------- reading
def read_dp(path) -> dict:
    """The model dictionary of a DeePMD-kit ``.dp`` file (HDF5: JSON + arrays)."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"DeePMD model file not found: {path}")
    try:
        import h5py
    except ImportError:  # pragma: no cover
        raise ImportError(
            f"reading the DeePMD file {path} needs h5py: pip install 'ase-mlp[deepmd]'"
        ) from None
    try:
        with h5py.File(path, "r") as f:
            if "json" not in f.attrs:
                raise DeepmdFormatError(f"{path}: HDF5 file without a 'json' attribute: not a "
                                        "DeePMD-kit .dp model")
            data = json.loads(f.attrs["json"])

            def fetch(node):
                if isinstance(node, dict):
                    if node.get("@is_variable", False):
                        raise DeepmdFormatError(f"{path}: unexpected variable node {node}")
                    return {k: (fetch_var(v) if k == "@variables" else fetch(v))
                            for k, v in node.items()}
                if isinstance(node, list):
                    return [fetch(x) for x in node]
                return node

            def fetch_var(node):
                if isinstance(node, dict):
                    return {k: fetch_var(v) for k, v in node.items()}
                if isinstance(node, list):
                    return [fetch_var(x) for x in node]
                if isinstance(node, str):
                    if node not in f:
                        raise DeepmdFormatError(f"{path}: dataset {node!r} is missing")
                    return np.asarray(f[node][()])
                return node

            return fetch(data)
    except (OSError, json.JSONDecodeError) as err:
        raise DeepmdFormatError(f"{path}: not a readable DeePMD-kit .dp file ({err})") from err


def _get(d: dict, key: str, where: str, path):
    if not isinstance(d, dict) or key not in d:
        raise DeepmdFormatError(f"{path}: missing key {key!r} in {where}")
    return d[key]


def _build(data: dict, path) -> DeepPotSE:
    model = _get(data, "model", "the file", path)
    mtype = model.get("type", "standard")
    if model.get("@class") != "Model" or mtype != "standard":
        raise DeepmdFormatError(
            f"{path}: model.type is {mtype!r} (class {model.get('@class')!r}); only standard "
            "DeePMD energy models (descriptor + fitting net) are supported (no ZBL/linear/spin)")
    for key in ("atom_exclude_types", "pair_exclude_types"):
        if model.get(key):
            raise DeepmdFormatError(f"{path}: model.{key}={model[key]} is not supported")
    type_map = list(_get(model, "type_map", "model", path))
    nt = len(type_map)
    desc = _get(model, "descriptor", "model", path)
    dtype_name = desc.get("type")
    if dtype_name not in ("se_e2_a", "se_a"):
        raise DeepmdFormatError(
            f"{path}: model.descriptor.type is {dtype_name!r}; only se_e2_a (DeepPot-SE) is "
            "supported")
    fit = _get(model, "fitting", "model", path)
    if fit.get("var_name", "energy") != "energy" or fit.get("type", "ener") not in (
            "ener", None):
        raise DeepmdFormatError(
            f"{path}: the fitting net predicts {fit.get('var_name')!r} "
            f"(type {fit.get('type')!r}); only energy models are supported: "
            + f"{list(DeepPotSE.implemented_properties)}")
    for key, bad in (("exclude_types", desc.get("exclude_types")),
                     ("spin", desc.get("spin")), ("compress", desc.get("compress"))):
        if bad:
            raise DeepmdFormatError(f"{path}: model.descriptor.{key}={bad!r} is not supported")
    if desc.get("env_mat", {}).get("use_exp_switch", False):
        raise DeepmdFormatError(f"{path}: model.descriptor.env_mat.use_exp_switch is not "
                                "supported")
    for key in ("numb_fparam", "numb_aparam", "dim_case_embd"):
        if fit.get(key, 0):
            raise DeepmdFormatError(f"{path}: model.fitting.{key}={fit[key]} is not supported "
                                    "(frame/atomic parameters)")
    if fit.get("exclude_types"):
        raise DeepmdFormatError(
            f"{path}: model.fitting.exclude_types={fit['exclude_types']} is not supported")
    if fit.get("mixed_types", False):
        raise DeepmdFormatError(f"{path}: model.fitting.mixed_types=True is not supported")
    sel = [int(s) for s in _get(desc, "sel", "model.descriptor", path)]
    if len(sel) != nt:
        raise DeepmdFormatError(f"{path}: model.descriptor.sel {sel} does not have one entry "
                                f"per type of type_map {type_map}")
    one_side = bool(desc.get("type_one_side", True))

    def nets(coll, where, n):
        networks = _get(coll, "networks", where, path)
        if len(networks) != n:
            raise DeepmdFormatError(f"{path}: {where}.networks has {len(networks)} nets, "
                                    f"expected {n}")
        out = []
        for k, net in enumerate(networks):
            if net is None:
                raise DeepmdFormatError(f"{path}: {where}.networks[{k}] is empty")
            layers = _get(net, "layers", f"{where}.networks[{k}]", path)
            out.append([_layer_spec(layer, f"{where}.networks[{k}].layers[{m}]", path)
                        for m, layer in enumerate(layers)])
        return out

    emb = nets(_get(desc, "embeddings", "model.descriptor", path), "model.descriptor.embeddings",
               nt if one_side else nt * nt)
    fitn = nets(_get(fit, "nets", "model.fitting", path), "model.fitting.nets", nt)
    ng = emb[0][-1]["n_out"]
    axis = int(_get(desc, "axis_neuron", "model.descriptor", path))
    dvar = _get(desc, "@variables", "model.descriptor", path)
    davg = np.asarray(_get(dvar, "davg", "model.descriptor.@variables", path), np.float64)
    dstd = np.asarray(_get(dvar, "dstd", "model.descriptor.@variables", path), np.float64)
    nnei = sum(sel)
    if davg.shape != (nt, nnei, 4) or dstd.shape != (nt, nnei, 4):
        raise DeepmdFormatError(f"{path}: model.descriptor davg/dstd have shapes {davg.shape}/"
                                f"{dstd.shape}, expected {(nt, nnei, 4)}")
    cum = np.concatenate([[0], np.cumsum(sel)])
    avg = np.zeros((nt, nt, 4))
    std = np.ones((nt, nt, 4))
    for ti in range(nt):
        for tj in range(nt):
            if sel[tj] == 0:
                continue
            for name, arr, out in (("davg", davg, avg), ("dstd", dstd, std)):
                block = arr[ti, cum[tj]:cum[tj + 1]]
                if not np.all(block == block[0]):
                    raise DeepmdFormatError(
                        f"{path}: model.descriptor.{name}[{ti}] varies between the neighbour "
                        f"slots of type {type_map[tj]}; deepmd's statistics give one value per "
                        "slot section, and slot-dependent values are not supported")
                out[ti, tj] = block[0]
    if np.any(std == 0.0):
        raise DeepmdFormatError(f"{path}: model.descriptor.dstd holds zeros")
    if fitn[0][0]["n_in"] != ng * axis:
        raise DeepmdFormatError(
            f"{path}: the fitting nets take {fitn[0][0]['n_in']} inputs, the descriptor gives "
            f"{ng} x {axis} = {ng * axis}")
    fvar = fit.get("@variables", {})
    bias_e = np.asarray(_get(fvar, "bias_atom_e", "model.fitting.@variables", path),
                        np.float64).reshape(nt, -1)
    mvar = model.get("@variables", {})
    out_bias = mvar.get("out_bias")
    out_bias = (np.zeros(nt) if out_bias is None
                else np.asarray(out_bias, np.float64).reshape(-1, nt)[0])
    # deepmd: subtract F(0) unless the list is shorter or says False (general_fitting.py)
    # (invar_fitting.py: atom_ener -> remove_vaccum_contribution)
    atom_ener = fit.get("atom_ener") or []
    if all(x is None for x in atom_ener):
        remove = [False] * nt
    else:
        rvc = [x is not None for x in atom_ener]
        remove = [not (len(rvc) > k and not rvc[k]) for k in range(nt)]
    env = desc.get("env_mat", {})
    model_t = DeepPotSE(
        type_map, float(desc["rcut"]), float(desc["rcut_smth"]), sel, axis, one_side,
        emb, fitn, remove_vacuum=remove,
        env_protection=float(env.get("protection", desc.get("env_protection", 0.0))))
    with torch.no_grad():
        for kind, netl in (("emb", emb), ("fit", fitn)):
            for k, net in enumerate(netl):
                for m, spec in enumerate(net):
                    name = f"{kind}{k}_{m}"
                    for key in ("w", "b", "idt"):
                        arr = spec["arrays"][key]
                        if arr is None:
                            continue
                        buf = getattr(model_t, f"{name}_{key}")
                        if tuple(arr.shape) != tuple(buf.shape):
                            raise DeepmdFormatError(
                                f"{path}: layer {kind}{k}.{m}.{key} has shape {arr.shape}, "
                                f"expected {tuple(buf.shape)}")
                        buf.copy_(torch.as_tensor(arr))
        model_t.davg.copy_(torch.as_tensor(avg))
        model_t.dstd.copy_(torch.as_tensor(std))
        model_t.atom_bias.copy_(torch.as_tensor(bias_e[:, 0] + out_bias))
    return model_t


class DeepmdFormat:
    """Entry point (group ``ase_mlp.model_formats``): one DeePMD-kit ``.dp`` file."""

    name = "deepmd"

    @staticmethod
    def can_load(paths) -> bool:
        if len(paths) != 1 or pathlib.Path(paths[0]).suffix != ".dp":
            return False
        try:
            with open(paths[0], "rb") as fh:
                return fh.read(8) == HDF5_MAGIC
        except OSError:
            return False

    @staticmethod
    def load(paths) -> DeepPotSE:
        return DeepPotSE.from_dp(paths[0])


__all__ = ["DeepPotSE", "DeepmdFormat", "DeepmdFormatError", "read_dp"]
