"""i-PI PES module: ase_mlp models inside i-PI's own Python driver and ``<ffdirect>``.

i-PI loads PES files by path, so point it at this file::

    PES=$(python -c "import ase_mlp.ipi.pes as m; print(m.__file__)")
    i-pi-driver-py -u -a NAME -m custom -P "$PES" -o template=init.xyz,model=GaN.pt

Keywords (``-o k=v,...`` or the ``<parameters>`` of an ``<ffdirect pes='custom'
pes_path='...'>``): ``template`` (structure file: atom names and order; optional for
one-element models), ``model`` and ``model2`` (model file(s) as
``MLPCalculator.from_file`` takes them; default: the embedded GaN model), ``device``,
``dtype`` (``float64``/``float32``). Batched requests (``batch_size`` in i-PI) are
evaluated in one model call.
"""

from __future__ import annotations

import numpy as np
from ipi.pes.dummy import Dummy_driver


__DRIVER_NAME__ = "ase_mlp"
__DRIVER_CLASS__ = "ASEMLPDriver"


class ASEMLPDriver(Dummy_driver):
    """i-PI PES (``Dummy_driver`` interface) evaluating an ase_mlp model."""

    def __init__(self, template=None, model=None, model2=None, device=None,
                 dtype="float64", *args, **kwargs):
        self.template = template
        self.model_paths = [p for p in (model, model2) if p]
        self.device = device
        self.dtype = dtype
        super().__init__(*args, **kwargs)

    def check_parameters(self):
        from ase.io import read

        from ase_mlp.calculators import MLPCalculator
        from ase_mlp.cli import default_model_path
        from ase_mlp.ipi.evaluate import Evaluator

        paths = self.model_paths or [default_model_path()]
        calc = MLPCalculator.from_file(*paths, device=self.device, dtype=str(self.dtype))
        atoms = read(str(self.template)) if self.template else None
        self.evaluator = Evaluator(calc, atoms)

    def compute(self, cell, pos):
        from ase_mlp.ipi.protocol import from_ase, to_ase

        batched = isinstance(cell, list)
        h = np.asarray(cell, dtype=float).reshape(-1, 3, 3)
        q = np.asarray(pos, dtype=float)
        q = q.reshape(len(h), -1, 3)
        cells, positions = to_ase(h, q)
        e, f, w = from_ase(*self.evaluator(cells, positions))
        out = [(float(e[k]), f[k].reshape(np.shape(pos[k]) if batched else np.shape(pos)),
                w[k], "") for k in range(len(h))]
        return out if batched else out[0]
