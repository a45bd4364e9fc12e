"""Model files carry a checksum (issue 18): a flipped byte is refused, not evaluated; old files
without one still load; NaN weights are refused at load, naming file and parameter."""

import struct
import zipfile

import numpy as np
import pytest
import torch
from ase.build import bulk

from ase_mlp.calculators import MLPCalculator
from ase_mlp.descriptors import Bispectrum
from ase_mlp.models import NNSNAP, ZBL, LinearSNAP, SumModel, load
from ase_mlp.models.serialization import ModelFormatError


def make_model(rng):
    d = Bispectrum(["W", "Be"], 4, 4.8, [0.5, 0.42], [1.0, 0.96])
    return SumModel(ZBL(["W", "Be"], 1.5, 2.3),
                    LinearSNAP(d, rng.normal(size=(2, 1 + d.n_descriptors)) * 0.02))


def atoms():
    a = bulk("W", "bcc", a=3.17, cubic=True).repeat(2)
    a.set_chemical_symbols(["W", "Be"] * 8)
    return a


def tensor_records(path):
    """(name, offset, size) of the tensor data records of a torch.save zip archive."""
    raw = path.read_bytes()
    out = []
    for info in zipfile.ZipFile(path).infolist():
        if "/data/" in info.filename and info.file_size:
            h = info.header_offset
            n, e = struct.unpack("<HH", raw[h + 26:h + 30])
            out.append((info.filename, h + 30 + n + e, info.file_size))
    return out


def flip_bit(path, record=-1, byte=5, bit=4):
    name, offset, size = tensor_records(path)[record]
    raw = bytearray(path.read_bytes())
    raw[offset + min(byte, size - 1)] ^= 1 << bit
    path.write_bytes(bytes(raw))
    return name


def test_flipped_byte_in_a_weight_is_refused(tmp_path, rng):
    """torch.load does not notice a flipped bit in a tensor record; the file used to load and
    give other energies (the issue's -153.3 vs -144.9 eV)."""
    model = make_model(rng)
    path = tmp_path / "model.pt"
    model.save(path)
    e0 = MLPCalculator(load(path), device="cpu").get_potential_energy(atoms())
    bad = tmp_path / "damaged.pt"
    bad.write_bytes(path.read_bytes())
    flip_bit(bad)
    with pytest.raises(ModelFormatError, match=r"damaged.pt: .*corrupt"):
        load(bad)  # torch.load (2.x) reads the archive without noticing: the checksum does
    with pytest.raises(ModelFormatError, match="damaged.pt.*corrupt"):
        MLPCalculator.from_file(bad, device="cpu")
    assert MLPCalculator(load(path), device="cpu").get_potential_energy(atoms()) == e0


def test_every_tensor_record_is_covered(tmp_path, rng):
    d = Bispectrum(["W", "Be"], 4, 4.8, [0.5, 0.42], [1.0, 0.96])
    torch.manual_seed(0)  # test-local: module init only
    path = tmp_path / "nn.pt"
    NNSNAP(d, hidden=[4]).save(path)
    for k in range(len(tensor_records(path))):
        bad = tmp_path / f"bad{k}.pt"
        bad.write_bytes(path.read_bytes())
        flip_bit(bad, record=k, byte=0, bit=0)
        with pytest.raises(ModelFormatError, match="corrupt"):
            load(bad)


def test_files_without_checksum_still_load(tmp_path, rng):
    model = make_model(rng)
    path = tmp_path / "old.pt"
    model.save(path)
    data = torch.load(path, weights_only=True)
    del data["checksum"]  # as written before checksums existed
    torch.save(data, path)
    again = load(path)
    assert again.source_file == str(path.resolve())
    e = MLPCalculator(model, device="cpu").get_potential_energy(atoms())
    assert MLPCalculator(again, device="cpu").get_potential_energy(atoms()) == e


def test_checksum_is_a_pure_function_of_the_values():
    from ase_mlp.models.serialization import checksum, verify_checksum, with_checksum

    t = torch.arange(12, dtype=torch.float64).reshape(3, 4)
    base = {"a": t, "b": [1, 2.5, "x", None, True], "c": {"n": torch.tensor(3)}}
    same = {"c": {"n": torch.tensor(3)}, "b": (1, 2.5, "x", None, True), "a": t.T.contiguous().T}
    assert checksum(base) == checksum(same)
    assert len(checksum(base)) == 64
    changed = dict(base, a=t.clone())
    changed["a"][1, 2] = np.nextafter(6.0, 7.0)  # one ulp
    assert checksum(changed) != checksum(base)
    assert checksum(dict(base, a=t.float())) != checksum(base)  # dtype counts
    assert checksum(dict(base, a=t.reshape(4, 3))) != checksum(base)  # shape counts
    assert checksum(dict(base, b=[1, 2.5, "x", None, 1])) != checksum(base)  # bool is not int
    sealed = with_checksum(base)
    assert verify_checksum(sealed, "f.pt") == sealed["checksum"]["digest"]
    assert verify_checksum(base, "f.pt") is None
    with pytest.raises(ModelFormatError, match="f.pt: .* has no checksum"):
        verify_checksum(base, "f.pt", required=True)
    sealed["b"] = [1, 2.5, "y", None, True]
    with pytest.raises(ModelFormatError, match="f.pt: checkpoint is corrupt"):
        verify_checksum(sealed, "f.pt", "checkpoint")


def test_model_checksum_is_the_stored_digest(tmp_path, rng):
    from ase_mlp.models.serialization import model_checksum

    model = make_model(rng)
    model.save(tmp_path / "m.pt")
    stored = torch.load(tmp_path / "m.pt", weights_only=True)["checksum"]
    assert stored["of"] == "model" and stored["digest"] == model_checksum(model)
    assert model_checksum(load(tmp_path / "m.pt")) == stored["digest"]


def test_nan_weight_is_refused_at_load(tmp_path, rng):
    model = make_model(rng)
    with torch.no_grad():
        model.models[1].coefficients[0, 2] = float("inf")
    model.save(tmp_path / "inf.pt")  # saving is allowed (e.g. to inspect a diverged fit)
    with pytest.raises(ModelFormatError, match=r"inf.pt: SumModel parameter "
                       r"'models.1.coefficients' \(shape \(2, \d+\)\) holds 1 non-finite"):
        load(tmp_path / "inf.pt")
