"""Export ase_mlp models as metatomic ``.pt`` files (TorchScript ``AtomisticModel``).

:func:`export_metatomic` writes a file that LAMMPS (``pair_style metatomic``), i-PI,
``metatomic_ase`` and torch-sim load. ase_mlp's own model classes cannot be scripted
(``torch.jit.script``) as they are: the bispectrum keeps a ``_layer_cache`` dict keyed
by ``(dtype, device)`` filled with numpy at first use, evaluates through the ``Graph``
dataclass and Python closures (``energy_fn``), and dispatches to compiled kernels. The
export therefore builds a separate TorchScript module from the model's descriptor
settings, index tables and coefficients (:class:`_ScriptLinearSNAP`): the energy path of
the torch bispectrum (Cayley-Klein recursion, densities, Z and B by the same index
tables) in real arithmetic, with forces and stress by autograd in the engine.

Supported: :class:`~ase_mlp.models.LinearSNAP` (any descriptor flags). Other classes
raise ``TypeError`` naming what is missing.
"""

from __future__ import annotations

import math
import pathlib

import numpy as np
import torch


def export_metatomic(model, path, *, name: str | None = None, description: str = "",
                     authors=(), references=None) -> pathlib.Path:
    """Write ``model`` as a metatomic TorchScript ``.pt`` file; returns the path.

    The exported model declares ``energy`` (eV, per atom), its elements as atomic
    types, lengths in Å, float64, CPU and CUDA, and one full neighbour list with the
    largest pair cutoff. Coefficients are copied (float64): later training of ``model``
    does not change the file.
    """
    from ase_mlp.models.snap import LinearSNAP

    try:
        import metatomic.torch as mta
    except ImportError as err:
        raise ImportError("export_metatomic needs metatomic-torch: pip install "
                          f"'ase_mlp[metatomic]' ({err})") from err
    if not isinstance(model, LinearSNAP):
        raise TypeError(
            f"export_metatomic supports LinearSNAP only, got {type(model).__name__}: "
            "other ase_mlp models are not TorchScript-able (see ase_mlp.io.metatomic_export)"
            " and have no scriptable twin yet")
    from ase_mlp.io._metatomic_snap import ScriptLinearSNAP

    module = ScriptLinearSNAP(**_snap_tables(model)).eval()
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


def _snap_tables(model) -> dict:
    """Everything the scriptable linear SNAP needs, as plain tensors and numbers."""
    d = model.descriptor
    t = d.tables
    f64 = torch.float64
    layers = []
    for j, h, coa, cob, mirror, nj in d._layers(f64, torch.device("cpu")):
        layers.append((int(j), int(h), coa.clone(), cob.clone(), mirror.clone(), int(nj)))
    H = int(t.half_index.shape[0])
    diag = torch.zeros(H, dtype=f64)
    diag[d._half_diag] = 1.0
    return dict(
        layers=layers, twojmax=int(d.twojmax), H=H, U=int(t.idxu_max), n_z=int(t.n_z),
        n_b=int(t.n_b), n_slots=int(d.n_slots), chemflag=bool(d.chemflag),
        wselfallflag=bool(d.wselfallflag), bzeroflag=bool(d.bzeroflag),
        switchflag=bool(d.switchflag), switchinnerflag=bool(d.switchinnerflag),
        rfac0=float(d.rfac0), rmin0=float(d.rmin0), cutoff=float(np.max(d.pair_cutoffs())),
        cutoffs=torch.as_tensor(np.asarray(d.pair_cutoffs()), dtype=f64),
        weights=d._weights.to(f64).clone(),
        sinner=(d._sinner.to(f64).clone() if d.switchinnerflag else torch.zeros(1, dtype=f64)),
        dinner=(d._dinner.to(f64).clone() if d.switchinnerflag else torch.ones(1, dtype=f64)),
        half_diag=diag, full_from_half=d._full_from_half.clone(),
        full_mirror=d._full_mirror.clone(), full_sign=d._full_sign.to(f64).clone(),
        zp1=d._zp1.clone(), zp2=d._zp2.clone(), zidx=d._zidx.clone(),
        zcoef=d._zcoef.to(f64).clone(), bq=d._bq.clone(), bz=d._bz.clone(),
        bidx=d._bidx.clone(), bw=d._bw.to(f64).clone(), bzero=d._bzero.to(f64).clone(),
        triple_of_b=d._triple_of_b.clone(),
        coefficients=model.coefficients.detach().to(f64).cpu().clone(),
        numbers=list(model.atomic_numbers), pi=math.pi)


__all__ = ["export_metatomic"]
