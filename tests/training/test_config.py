"""Fit configuration files: schema, strict validation, clear errors before any work."""

from __future__ import annotations

import inspect
import pathlib
import shutil
import sys

import pytest

from ase_mlp.training.config import (
    MANAGED_NN_OPTIONS,
    NN_OPTIONS,
    ConfigError,
    FitConfig,
    config_from_dict,
    load_config,
    run_fit,
)


DATA = pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "data"
BCC = DATA / "ta-fitsnap" / "Displaced_BCC.xyz"

BASE = """\
seed = 3
output = "run"

[data]
train = ["data/*.xyz"]
split = [0.6, 0.2, 0.2]

[data.labels]
stress_unit = "bar"
stress_sign = "compressive"

[model]
type = "linear"
elements = ["Ta"]

[model.descriptor]
twojmax = 2
rcutfac = 4.67637
radii = {Ta = 0.5}
weights = {Ta = 1.0}
bzeroflag = false

[fit]
stress_weight = 0.01
"""


@pytest.fixture
def workdir(tmp_path):
    """A directory with data/one.xyz (a tiny labelled file) and no output yet."""
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    (tmp_path / "data").mkdir()
    a = Atoms("Ta2", positions=[[0, 0, 0], [1.6, 1.6, 1.6]], cell=[3.3] * 3, pbc=True)
    a.calc = SinglePointCalculator(a, energy=-23.0, forces=[[0, 0, 0]] * 2, stress=[0.0] * 6)
    write(tmp_path / "data" / "one.xyz", [a, a, a])
    return tmp_path


def _write(path: pathlib.Path, text: str, name="fit.toml") -> pathlib.Path:
    f = path / name
    f.write_text(text)
    return f


def _error(path, text, name="fit.toml") -> str:
    cfg = _write(path, text, name)
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    assert not (path / "run").exists(), "no output may be created for a bad configuration"
    return str(info.value)


def test_valid_config_resolves_paths_and_defaults(workdir):
    cfg = load_config(_write(workdir, BASE))
    assert isinstance(cfg, FitConfig)
    assert cfg.seed == 3
    assert cfg.output == workdir / "run"
    assert cfg.data.train == [workdir / "data" / "one.xyz"]
    assert cfg.data.validation == [] and cfg.data.test == []
    assert cfg.data.split == (0.6, 0.2, 0.2) and cfg.data.split_by_group
    assert cfg.data.labels.stress_unit == "bar" and cfg.data.labels.stress_sign == "compressive"
    assert cfg.model.type == "linear" and cfg.model.committee == 0
    assert cfg.model.hidden is None and cfg.model.zbl is None
    assert cfg.fit.energy_weight == 1.0 and cfg.fit.stress_weight == 0.01
    assert cfg.fit.regularization == "auto" and cfg.fit.nn == {}
    assert cfg.export.lammps is False
    model = cfg.model.build()
    assert type(model).__name__ == "LinearSNAP" and model.descriptor.twojmax == 2
    assert not (workdir / "run").exists()


def test_explicit_sets_renormalise_the_split(workdir):
    text = BASE.replace('split = [0.6, 0.2, 0.2]',
                        'split = [0.6, 0.2, 0.2]\nvalidation = ["data/one.xyz"]')
    cfg = load_config(_write(workdir, text))
    assert cfg.data.validation == [workdir / "data" / "one.xyz"]
    assert cfg.data.fractions() == pytest.approx((0.75, 0.0, 0.25))


def test_nn_zbl_committee_config(workdir):
    text = BASE.replace('type = "linear"', 'type = "nn"\nhidden = [4, 4]\ncommittee = 2\n'
                        'committee_method = "seed"') + """
[model.zbl]
inner = 4.0
outer = 4.8

[fit.nn]
epochs = 2
dtype = "float32"
lr = 1e-3

[export]
lammps = true
"""
    text = text.replace("stress_weight = 0.01", "stress_weight = 0.01\n")
    cfg = load_config(_write(workdir, text))
    assert cfg.model.hidden == [4, 4] and cfg.model.committee == 2
    assert cfg.model.zbl == {"inner": 4.0, "outer": 4.8}
    import torch

    kw = cfg.fit.fit_kwargs()
    assert kw["epochs"] == 2 and kw["dtype"] is torch.float32 and kw["lr"] == 1e-3
    model = cfg.model.build()
    assert type(model).__name__ == "SumModel"
    assert [type(m).__name__ for m in model.models] == ["ZBL", "NNSNAP"]
    assert cfg.export.lammps


def test_unknown_key_suggests_the_right_one(workdir):
    msg = _error(workdir, BASE.replace("twojmax = 2", "twojmx = 2"))
    assert "model.descriptor.twojmx: unknown key; did you mean 'twojmax'?" in msg
    assert "model.descriptor.twojmax: required key missing" in msg
    msg = _error(workdir, BASE.replace("[fit]", "[fit]\nenergy_wieght = 2"))
    assert "fit.energy_wieght: unknown key; did you mean 'energy_weight'?" in msg
    msg = _error(workdir, "colour = 'blue'\n" + BASE)
    assert "colour: unknown key; allowed keys here: seed, output, data, model, fit, export" in msg
    msg = _error(workdir, BASE.replace("[data.labels]", "[data.label]"))
    assert "data.label: unknown key; did you mean 'labels'?" in msg


@pytest.mark.parametrize("old, new, expected", [
    ("twojmax = 2", 'twojmax = "2"', "model.descriptor.twojmax: expected an integer >= 0, "
                                     "got str '2'"),
    ("twojmax = 2", "twojmax = 2.0", "model.descriptor.twojmax: expected an integer"),
    ("seed = 3", "seed = true", "seed: expected an integer >= 0, got bool True"),
    ("stress_weight = 0.01", 'stress_weight = "x"', "fit.stress_weight: expected a number >= 0"),
    ("stress_weight = 0.01", "stress_weight = -1", "fit.stress_weight: expected a finite number "
                                                   ">= 0, got -1.0"),
    ('elements = ["Ta"]', 'elements = "Ta"', "model.elements: expected a list"),
    ('elements = ["Ta"]', 'elements = ["Tx"]', "model.elements: unknown chemical element 'Tx'"),
    ("radii = {Ta = 0.5}", 'radii = "big"', "model.descriptor.radii: expected a table of "
                                            "element = number, or a list of numbers"),
    ("radii = {Ta = 0.5}", "radii = {Ta = 0.5, Nb = 0.4}",
     "model.descriptor.radii.Nb: 'Nb' is not in model.elements ['Ta']"),
    ("split = [0.6, 0.2, 0.2]", "split = [0.6, 0.2]", "data.split: expected 3 entries, got 2"),
    ("split = [0.6, 0.2, 0.2]", "split = [0.6, 0.2, 0.3]", "data.split: fractions must sum to 1"),
    ('stress_sign = "compressive"', 'stress_sign = "tensile"',
     "data.labels.stress_sign: 'tensile' is not one of 'ase', 'compressive'"),
    ('stress_unit = "bar"', 'stress_unit = "Pa"', "data.labels: stress_unit='Pa' is not one of"),
    ('output = "run"', "output = 1", "output: expected a string, got int 1"),
    ("[fit]", "[fit]\nregularization = 'sometimes'",
     "fit.regularization: 'sometimes' is not one of 'auto'"),
    ("[fit]", "[fit]\nelement_force_weights = 'even'",
     "fit.element_force_weights: 'even' is not one of 'balanced'"),
    ("[fit]", "[fit]\ngroup_weights = {Liquid = {energi = 2}}",
     "fit.group_weights.Liquid.energi: unknown key; did you mean 'energy'?"),
    ("[fit]", "[fit]\nreference_energies = {W = -1.0}",
     "fit.reference_energies.W: 'W' is not in model.elements"),
])
def test_wrong_types_and_values(workdir, old, new, expected):
    text = BASE.replace(old, new)
    assert text != BASE
    assert expected in _error(workdir, text)


def test_missing_required(workdir):
    msg = _error(workdir, BASE.replace('elements = ["Ta"]\n', ""))
    assert "model.elements: required key missing" in msg
    head, _, _ = BASE.partition("[model]")
    msg = _error(workdir, head)
    assert "model: required section missing" in msg
    msg = _error(workdir, BASE.replace('train = ["data/*.xyz"]\n', ""))
    assert "data.train: required key missing" in msg


def test_missing_data_files(workdir):
    msg = _error(workdir, BASE.replace('"data/*.xyz"', '"data/nope.extxyz"'))
    assert "data.train[0]: file not found: 'data/nope.extxyz'" in msg
    msg = _error(workdir, BASE.replace('"data/*.xyz"', '"data/*.extxyz"'))
    assert "data.train[0]: no file matches 'data/*.extxyz'" in msg
    msg = _error(workdir, BASE.replace('split = [0.6, 0.2, 0.2]', 'test = ["gone.xyz"]'))
    assert "data.test[0]: file not found" in msg
    with pytest.raises(FileNotFoundError, match="configuration file not found"):
        load_config(workdir / "absent.toml")


def test_bad_model_type(workdir):
    msg = _error(workdir, BASE.replace('type = "linear"', 'type = "linaer"'))
    assert "model.type: 'linaer' is not one of 'linear', 'quadratic', 'nn'; did you mean " \
           "'linear'?" in msg
    msg = _error(workdir, BASE.replace('type = "linear"', 'type = "gap"'))
    assert "model.type: 'gap' is not one of" in msg


def test_cross_checks(workdir):
    msg = _error(workdir, BASE.replace('type = "linear"', 'type = "linear"\nhidden = [8]'))
    assert "model.hidden: only for model.type = 'nn'" in msg
    msg = _error(workdir, BASE.replace('type = "linear"', 'type = "linear"\ncommittee = 1'))
    assert "model.committee: a committee needs >= 2 members" in msg
    msg = _error(workdir, BASE + "\n[fit.nn]\nepochs = 3\n")
    assert "fit.nn: only for model.type = 'nn'" in msg
    nn = BASE.replace('type = "linear"', 'type = "nn"\nhidden = [4]')
    msg = _error(workdir, nn + "\n[fit.nn]\ncheckpoint = 'x.pt'\n")
    assert "fit.nn.checkpoint: not allowed here: set by ase-mlp fit" in msg
    msg = _error(workdir, nn + "\n[fit.nn]\nepoch = 3\n")
    assert "fit.nn.epoch: unknown key; did you mean 'epochs'?" in msg
    msg = _error(workdir, nn.replace("hidden = [4]", 'hidden = [4]\nactivations = ["tanh"]'))
    assert "model.activations: need 2 entries" in msg
    msg = _error(workdir, BASE.replace("twojmax = 2", "twojmax = 2\nelements = ['Ta']"))
    assert "model.descriptor.elements: not allowed here" in msg
    msg = _error(workdir, BASE.replace("bzeroflag = false", "bzeroflag = false\nrmin0 = 9.0"))
    assert msg.count("model: rmin0=9.0 must be below the smallest cutoff") == 1
    msg = _error(workdir, BASE + "\n[model.zbl]\ninner = 5.0\nouter = 4.0\n")
    assert "model.zbl: need inner <= outer" in msg


def test_all_problems_are_reported_together(workdir):
    text = BASE.replace("twojmax = 2", "twojmx = 2").replace("seed = 3", "seed = 'x'")
    msg = _error(workdir, text)
    assert "problems:" in msg and "seed: expected" in msg and "twojmx: unknown key" in msg


def test_invalid_toml_and_unknown_suffix(workdir):
    msg = _error(workdir, "seed = = 1\n")
    assert "invalid TOML" in msg
    msg = _error(workdir, BASE, name="fit.ini")
    assert "unknown configuration format '.ini'" in msg


def test_yaml_without_pyyaml_is_a_clear_error(workdir, monkeypatch):
    monkeypatch.setitem(sys.modules, "yaml", None)  # import yaml -> ImportError
    msg = _error(workdir, "seed: 0\n", name="fit.yaml")
    assert "needs PyYAML" in msg and "pip install pyyaml" in msg and "TOML" in msg


def test_yaml_and_json_match_toml(workdir):
    yaml = pytest.importorskip("yaml")
    import json

    import tomllib

    raw = tomllib.loads(BASE)
    a = load_config(_write(workdir, BASE))
    b = load_config(_write(workdir, yaml.safe_dump(raw), name="fit.yml"))
    c = load_config(_write(workdir, json.dumps(raw), name="fit.json"))
    da, db, dc = (x.to_dict() for x in (a, b, c))
    for d in (da, db, dc):
        d.pop("source")
    assert da == db == dc


def test_config_from_dict_and_yaml_null_labels(workdir):
    import tomllib

    raw = tomllib.loads(BASE)
    raw["data"]["labels"]["stress"] = None  # YAML null / TOML false: read no stress
    cfg = config_from_dict(raw, base_dir=workdir)
    assert cfg.data.labels.stress is None and cfg.source is None
    raw["data"]["labels"]["stress"] = False
    assert config_from_dict(raw, base_dir=workdir).data.labels.stress is None


def test_schema_follows_the_library():
    from ase_mlp.descriptors.bispectrum import Bispectrum
    from ase_mlp.training.config import _DESCRIPTOR
    from ase_mlp.training.data import LabelSpec
    from ase_mlp.training.fit import _NN_OPTIONS

    assert set(NN_OPTIONS) | set(MANAGED_NN_OPTIONS) == _NN_OPTIONS
    params = set(inspect.signature(Bispectrum.__init__).parameters) - {"self", "elements"}
    assert set(_DESCRIPTOR.keys) == params
    from ase_mlp.training.config import _LABELS

    assert set(_LABELS.keys) == set(LabelSpec.__dataclass_fields__)


def test_data_errors_stop_before_the_output_directory(workdir):
    """Problems only visible in the data (groups, elements) fail before anything is written."""
    text = BASE.replace("[fit]", "[fit]\ngroup_weights = {Liquid = 2.0}")
    with pytest.raises(ConfigError, match=r"fit.group_weights: .*\['Liquid'\]"):
        run_fit(load_config(_write(workdir, text)), progress=False, echo=False)
    assert not (workdir / "run").exists()
    from ase_mlp.training.data import DataError

    text = BASE.replace('elements = ["Ta"]', 'elements = ["Nb"]').replace("Ta =", "Nb =")
    with pytest.raises(DataError, match=r"element\(s\) \['Ta'\] not in elements \['Nb'\]"):
        run_fit(load_config(_write(workdir, text)), progress=False, echo=False)
    assert not (workdir / "run").exists()


def test_real_data_config_reads_and_splits(tmp_path):
    if not BCC.exists():
        pytest.skip(f"shared data not available: {BCC}")
    from ase_mlp.training.workflow import read_splits

    (tmp_path / "data").mkdir()
    shutil.copy(BCC, tmp_path / "data" / BCC.name)
    cfg = load_config(_write(tmp_path, BASE))
    splits = read_splits(cfg)
    assert [len(splits[k]) for k in ("train", "validation", "test")] == [5, 2, 2]
    again = read_splits(cfg)
    assert [a.positions.tolist() for a in again["test"]] == \
        [a.positions.tolist() for a in splits["test"]]
    # stress in bar, compressive -> ASE eV/Å^3, tensile positive
    s = splits["train"][0].get_stress()
    assert abs(s).max() < 1.0


def _reference_blocks():
    import re
    import textwrap

    import ase_mlp.training.config as module

    doc = module.__doc__.split("must be given)::")[1].split("The NN options")[0]
    blocks = [("docstring", textwrap.dedent(doc))]
    md = pathlib.Path(__file__).resolve().parents[2] / "docs" / "training.md"
    if md.exists():
        toml = [b for lang, b in re.findall(r"```(\w*)\n(.*?)```", md.read_text(), re.S)
                if lang == "toml"]
        blocks += [(f"training.md block {k}", b) for k, b in enumerate(toml)]
    return blocks


def test_documented_configurations_are_valid(workdir):
    """The schema in the module docstring and every TOML block of docs/training.md load."""
    import re

    for name, text in _reference_blocks():
        # point every data entry at the fixture's file
        text = re.sub(r'^(train|validation|test) = \[.*?\]', r'\1 = ["data/one.xyz"]', text,
                      flags=re.M)
        try:
            cfg = load_config(_write(workdir, text))
        except ConfigError as err:  # pragma: no cover - the message is the point
            pytest.fail(f"{name}: {err}")
        assert cfg.model.elements, name
