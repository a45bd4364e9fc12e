"""Export ase_mlp models as metatomic ``.pt`` files (TorchScript ``AtomisticModel``).

:func:`export_metatomic` writes a file that LAMMPS (``pair_style metatomic``), i-PI,
``metatomic_ase`` and torch-sim load. ase_mlp's own model classes cannot be scripted
(``torch.jit.script``) as they are: the bispectrum keeps a ``_layer_cache`` dict keyed
by ``(dtype, device)`` filled with numpy at first use, evaluates through the ``Graph``
dataclass and Python closures (``energy_fn``), ZBL caches its tables in a dict, and both
dispatch to compiled kernels. The export therefore builds separate TorchScript modules
from the models' settings, index tables and coefficients (float64 copies):

* :mod:`ase_mlp.io._metatomic_snap`: the energy path of the torch bispectrum (Cayley-Klein
  recursion, densities, Z and B by the same index tables) in real arithmetic, shared by
  the linear, quadratic and NN heads;
* :mod:`ase_mlp.io._metatomic_zbl`: the ZBL pair energy from its LAMMPS tables;
* :mod:`ase_mlp.io._metatomic_model`: the metatomic model adding the per-atom energies
  of these terms over one full neighbour list, with forces and stress by autograd in
  the engine.

Supported: :class:`~ase_mlp.models.LinearSNAP`, :class:`~ase_mlp.models.QuadraticSNAP`,
:class:`~ase_mlp.models.NNSNAP` (any descriptor flags), :class:`~ase_mlp.models.ZBL`,
and :class:`~ase_mlp.models.SumModel` / :class:`~ase_mlp.models.Committee` (its mean;
the spread is not exported) of these, nested. Anything else (Electrostatics: reciprocal
space; foreign models; subclasses, whose overrides the twins would ignore) raises
``TypeError`` naming the model.
"""

from __future__ import annotations

import math
import pathlib

import numpy as np
import torch


SUPPORTED = "LinearSNAP, QuadraticSNAP, NNSNAP, ZBL, and SumModel or Committee of these"


def export_metatomic(model, path, *, name: str | None = None, description: str = "",
                     authors=(), references=None) -> pathlib.Path:
    """Write ``model`` as a metatomic TorchScript ``.pt`` file; returns the path.

    The exported model declares ``energy`` (eV, per atom), its elements as atomic
    types, lengths in Å, float64, CPU and CUDA, and one full neighbour list with the
    largest pair cutoff. Coefficients are copied (float64): later training of ``model``
    does not change the file. Raises ``TypeError`` for models it cannot export (see the
    module doc) before writing anything.
    """
    try:
        import metatomic.torch as mta
    except ImportError as err:
        raise ImportError("export_metatomic needs metatomic-torch: pip install "
                          f"'ase_mlp[metatomic]' ({err})") from err
    from ase_mlp.io._metatomic_model import ScriptEnergyModel

    elements = list(getattr(model, "elements", []))
    terms = _terms(model, 1.0, elements)
    module = ScriptEnergyModel(terms, list(model.atomic_numbers), float(model.cutoff)).eval()
    caps = mta.ModelCapabilities(
        outputs={"energy": mta.ModelOutput(unit="eV", sample_kind="atom",
                                           explicit_gradients=[])},
        atomic_types=list(model.atomic_numbers),
        interaction_range=float(model.cutoff), length_unit="angstrom",
        supported_devices=["cpu", "cuda"], dtype="float64")
    meta = mta.ModelMetadata(name=name or f"ase_mlp {type(model).__name__}",
                             description=description, authors=list(authors),
                             references=references or {})
    path = pathlib.Path(path)
    mta.AtomisticModel(module, meta, caps).save(str(path))
    return path


def _terms(model, scale: float, elements: list) -> list:
    """TorchScript terms of ``model`` (members of sums and committees flattened)."""
    from ase_mlp.models.committee import Committee
    from ase_mlp.models.snap import NNSNAP, LinearSNAP, QuadraticSNAP
    from ase_mlp.models.sum import SumModel
    from ase_mlp.models.zbl import ZBL

    kind = type(model)
    if kind in (SumModel, Committee):
        w = scale / len(model.models) if kind is Committee else scale
        return [t for m in model.models for t in _terms(m, w, elements)]
    exportable = (LinearSNAP, QuadraticSNAP, NNSNAP, ZBL)
    if kind not in exportable:
        raise TypeError(f"export_metatomic cannot export {kind.__name__}: {_why(model)}; "
                        f"supported: {SUPPORTED}")
    if list(model.elements) != elements:
        raise TypeError(f"export_metatomic: member {kind.__name__} has elements "
                        f"{list(model.elements)}, the model {elements} (same order needed)")
    if kind is ZBL:
        from ase_mlp.io._metatomic_zbl import ScriptZBL

        t = {k: torch.as_tensor(v, dtype=torch.float64).clone()
             for k, v in model._tables_np.items()}
        return [ScriptZBL(t["d"], t["zze"], t["sw"], t["c"], float(model.inner),
                          float(model.outer), float(scale))]
    from ase_mlp.io._metatomic_snap import ScriptBispectrum, ScriptSNAP

    return [ScriptSNAP(ScriptBispectrum(**_bispectrum_tables(model.descriptor)),
                       _head(model), float(scale))]


def _why(model) -> str:
    """Why ``model`` cannot be exported, for the TypeError."""
    from ase_mlp.models.electrostatics import Electrostatics
    from ase_mlp.models.metatomic import MetatomicModel
    from ase_mlp.models.snap import NNSNAP, LinearSNAP, QuadraticSNAP
    from ase_mlp.models.zbl import ZBL

    if isinstance(model, Electrostatics):
        return "long-range electrostatics (Ewald/PME) have no TorchScript twin"
    if isinstance(model, MetatomicModel):
        return ("it is a metatomic model already: save it with "
                "model.metatomic_model.save(path)")
    for base in (LinearSNAP, QuadraticSNAP, NNSNAP, ZBL):
        if isinstance(model, base):
            return f"a subclass of {base.__name__}: the twin would ignore its overrides"
    return "it has no TorchScript twin"


def _head(model) -> torch.nn.Module:
    """The per-atom energy on the bispectrum of a SNAP model (float64 copies)."""
    from ase_mlp.io import _metatomic_snap as ms
    from ase_mlp.models.snap import LinearSNAP, QuadraticSNAP

    def f64(x):
        return x.detach().to(device="cpu", dtype=torch.float64).clone()

    if type(model) is LinearSNAP:
        return ms.LinearHead(f64(model.coefficients))
    K = model.descriptor.n_descriptors
    if type(model) is QuadraticSNAP:
        return ms.QuadraticHead(f64(model.coefficients[:, :1 + K]),
                                f64(model.quadratic_matrix()))
    layers = []
    for k, act in enumerate(model.activations):
        if act not in ms.ACTIVATIONS:
            raise TypeError(f"export_metatomic: NNSNAP activation {act!r} has no TorchScript "
                            f"twin (known: {sorted(ms.ACTIVATIONS)})")
        w = torch.stack([f64(net[k].weight) for net in model.networks])
        b = torch.stack([f64(net[k].bias) for net in model.networks])
        layers.append((w, b, ms.ACTIVATIONS[act]))
    return ms.NetworkHead(layers, f64(model.mean), f64(model.std))


def _bispectrum_tables(d) -> dict:
    """Everything the scriptable bispectrum needs, as plain tensors and numbers."""
    t = d.tables
    f64 = torch.float64
    layers = []
    for j, h, coa, cob, mirror, nj in d._layers(f64, torch.device("cpu")):
        layers.append((int(j), int(h), coa.clone(), cob.clone(), mirror.clone(), int(nj)))
    H = int(t.half_index.shape[0])
    diag = torch.zeros(H, dtype=f64)
    diag[d._half_diag] = 1.0
    tables = dict(
        layers=layers, twojmax=int(d.twojmax), H=H, U=int(t.idxu_max), n_z=int(t.n_z),
        n_b=int(t.n_b), n_slots=int(d.n_slots), chemflag=bool(d.chemflag),
        wselfallflag=bool(d.wselfallflag), bzeroflag=bool(d.bzeroflag),
        switchflag=bool(d.switchflag), switchinnerflag=bool(d.switchinnerflag),
        rfac0=float(d.rfac0), rmin0=float(d.rmin0),
        cutoffs=torch.as_tensor(np.asarray(d.pair_cutoffs()), dtype=f64),
        weights=d._weights.to(f64).clone(),
        sinner=(d._sinner.to(f64).clone() if d.switchinnerflag else torch.zeros(1, dtype=f64)),
        dinner=(d._dinner.to(f64).clone() if d.switchinnerflag else torch.ones(1, dtype=f64)),
        half_diag=diag, full_from_half=d._full_from_half.clone(),
        full_mirror=d._full_mirror.clone(), full_sign=d._full_sign.to(f64).clone(),
        zp1=d._zp1.clone(), zp2=d._zp2.clone(), zidx=d._zidx.clone(),
        zcoef=d._zcoef.to(f64).clone(), bq=d._bq.clone(), bz=d._bz.clone(),
        bidx=d._bidx.clone(), bw=d._bw.to(f64).clone(), bzero=d._bzero.to(f64).clone(),
        triple_of_b=d._triple_of_b.clone(), pi=math.pi)
    # a model trained on a GPU exports the same file
    return {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in tables.items()}


__all__ = ["export_metatomic"]
