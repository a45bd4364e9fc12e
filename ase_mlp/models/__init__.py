"""ase_mlp models: SNAP family, ZBL, DeePMD DeepPot-SE, sums, committees; saving and loading."""

from ase_mlp.models.base import MODEL_REGISTRY, Model, register_model
from ase_mlp.models.committee import Committee
from ase_mlp.models.deepmd import DeepPotSE
from ase_mlp.models.electrostatics import Electrostatics
from ase_mlp.models.snap import NNSNAP, LinearSNAP, QuadraticSNAP
from ase_mlp.models.sum import SumModel


try:  # written alongside; optional until it lands
    from ase_mlp.models.zbl import ZBL
except ImportError:  # pragma: no cover
    ZBL = None


def load(path, **kwargs):
    """Load a model saved with ``model.save(path)`` (ase_mlp's own format)."""
    from ase_mlp.models.serialization import load as _load

    return _load(path, **kwargs)


__all__ = ["Model", "MODEL_REGISTRY", "register_model", "LinearSNAP", "QuadraticSNAP",
           "NNSNAP", "SumModel", "Committee", "Electrostatics", "ZBL", "DeepPotSE", "load"]
