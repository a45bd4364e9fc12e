"""NN training checkpoints (``fit --resume``) carry a checksum (issue 18): a damaged checkpoint
is refused with the file named instead of resuming from wrong weights."""

import struct
import zipfile

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator

from ase_mlp.calculators import MLPCalculator
from ase_mlp.descriptors.bispectrum import Bispectrum
from ase_mlp.models import NNSNAP, LinearSNAP
from ase_mlp.models.serialization import ModelFormatError
from ase_mlp.training import fit


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(3)
    desc = Bispectrum(["Ta"], twojmax=2, rcutfac=4.7, radii=[0.5], bzeroflag=False)
    truth = LinearSNAP(desc, rng.normal(size=(1, 1 + desc.n_descriptors)) * 0.05)
    frames = []
    for _ in range(4):
        at = bulk("Ta", "bcc", a=3.3, cubic=True).repeat(2)
        at.positions += rng.normal(scale=0.1, size=at.positions.shape)
        frames.append(at)
    for at, r in zip(frames, MLPCalculator(truth, device="cpu").calculate_batch(frames),
                     strict=True):
        at.calc = SinglePointCalculator(at, energy=r["energy"], forces=r["forces"])
    return desc, frames


OPTS = dict(batch_size=2, lr=5e-3, checkpoint_every=1, seed=2)


def flip_in_weights(path):
    """Flip one bit in the largest tensor record of a torch.save archive."""
    raw = bytearray(path.read_bytes())
    infos = [i for i in zipfile.ZipFile(path).infolist() if "/data/" in i.filename]
    info = max(infos, key=lambda i: i.file_size)
    h = info.header_offset
    n, e = struct.unpack("<HH", raw[h + 26:h + 30])
    raw[h + 30 + n + e + 3] ^= 0x08
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("optimizer", ["adam", "lbfgs"])
def test_damaged_checkpoint_is_refused(data, tmp_path, optimizer):
    desc, frames = data
    ckpt = tmp_path / "ck.pt"
    kw = dict(OPTS, optimizer=optimizer, checkpoint=ckpt)
    kw.update(epochs=2) if optimizer == "adam" else kw.update(max_iter=25)
    fit(NNSNAP(desc, hidden=(4,)), frames, **kw)
    saved = torch.load(ckpt, weights_only=True)
    assert saved["checksum"]["algorithm"] == "sha256"
    flip_in_weights(ckpt)
    kw.update(epochs=3) if optimizer == "adam" else kw.update(max_iter=50)
    with pytest.raises(ModelFormatError, match=r"ck.pt: NN training checkpoint is corrupt"):
        fit(NNSNAP(desc, hidden=(4,)), frames, resume=True, **kw)


def test_checkpoint_without_checksum_still_resumes(data, tmp_path):
    desc, frames = data
    ckpt = tmp_path / "ck.pt"
    full = fit(NNSNAP(desc, hidden=(4,)), frames, epochs=3, **OPTS)
    fit(NNSNAP(desc, hidden=(4,)), frames, epochs=2, checkpoint=ckpt, **OPTS)
    saved = torch.load(ckpt, weights_only=True)
    del saved["checksum"]  # as written before checksums existed
    torch.save(saved, ckpt)
    resumed = fit(NNSNAP(desc, hidden=(4,)), frames, epochs=3, checkpoint=ckpt, resume=True,
                  **OPTS)
    for k, v in full.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[k], v, rtol=0, atol=0)
