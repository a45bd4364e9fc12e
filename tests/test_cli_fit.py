"""``ase-mlp fit CONFIG`` and ``ase-mlp eval --data``: a tiny SNAP and NN-SNAP end to end."""

from __future__ import annotations

import json
import math
import pathlib
import shutil
import sys

import numpy as np
import pytest

from ase_mlp.cli import main


DATA = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"
BCC = DATA / "ta-fitsnap" / "Displaced_BCC.xyz"

LINEAR = """\
seed = 0
output = "{output}"

[data]
train = ["data/*.xyz"]
split = [0.6, 0.2, 0.2]

[data.labels]
stress_unit = "bar"
stress_sign = "compressive"

[model]
type = "{type}"
elements = ["Ta"]
{model_extra}

[model.descriptor]
twojmax = 2
rcutfac = 4.67637
radii = {{Ta = 0.5}}
weights = {{Ta = 1.0}}
bzeroflag = false

[model.zbl]
inner = 4.0
outer = 4.8

[fit]
energy_weight = 1.0
force_weight = 1.0
stress_weight = 0.01
{fit_extra}

[export]
lammps = true
"""


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    if not BCC.exists():
        pytest.skip(f"shared data not available: {BCC}")
    d = tmp_path_factory.mktemp("fit")
    (d / "data").mkdir()
    shutil.copy(BCC, d / "data" / BCC.name)
    return d


def _config(workdir, name, **kw):
    kw.setdefault("type", "linear")
    kw.setdefault("model_extra", "")
    kw.setdefault("fit_extra", "")
    kw.setdefault("output", name)
    path = workdir / f"{name}.toml"
    path.write_text(LINEAR.format(**kw))
    return path


def _finite_numbers(obj):
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _finite_numbers(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _finite_numbers(v)
    elif isinstance(obj, float):
        yield obj


@pytest.fixture(scope="module")
def linear_run(workdir):
    import io
    from contextlib import redirect_stdout

    cfg = _config(workdir, "lin")
    buf = io.StringIO()
    with redirect_stdout(buf):
        rc = main(["fit", str(cfg), "--quiet"])
    assert rc == 0
    return cfg, workdir / "lin", buf.getvalue()


def test_fit_writes_outputs_and_prints_the_table(linear_run):
    cfg, out, stdout = linear_run
    for name in ("model.pt", "metrics.json", "metrics.txt", "config.json", "parity_energy.png",
                 "parity_forces.png", "model.snapcoeff", "model.snapparam", "model.lammps"):
        assert (out / name).is_file(), name
    assert not (out / "learning_curve.png").exists()  # linear: no learning curve
    assert any((out / "cache").iterdir())
    for row in ("train ", "validation ", "test ", "  train:Displaced_BCC", "units: E meV/atom"):
        assert row in stdout
    assert "descriptors" not in stdout  # --quiet: no progress messages
    assert (out / "metrics.txt").read_text().count("validation:Displaced_BCC") == 1


def test_metrics_json_is_finite_and_matches_compute_metrics(linear_run):
    from ase_mlp.calculators import load_model
    from ase_mlp.training import compute_metrics, load_config
    from ase_mlp.training.workflow import read_splits

    cfg, out, _ = linear_run
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["n_frames"] == {"train": 5, "validation": 2, "test": 2}
    assert saved["model"]["class"] == "SumModel" and saved["fit"]["lambda"] is not None
    numbers = list(_finite_numbers(saved))
    assert numbers and all(math.isfinite(x) for x in numbers)
    model = load_model(out / "model.pt")
    splits = read_splits(load_config(cfg))  # deterministic: same split as the fit
    for name in ("train", "validation", "test"):
        ref = compute_metrics(model, splits[name])
        got = saved["metrics"][name]
        assert got["n_frames"] == ref["n_frames"]
        for kind in ("energy", "forces", "stress"):
            for stat in ("rmse", "mae"):
                assert got[kind][stat] == pytest.approx(ref[kind][stat], rel=1e-9, abs=1e-12)
        assert set(got["groups"]) == {"Displaced_BCC"}
    # a linear fit on 5 frames of one phase: small but non-zero errors
    assert 0 < saved["metrics"]["train"]["forces"]["rmse"] < 1.0


def test_lammps_export_round_trips(linear_run, workdir):
    from ase_mlp.calculators import MLPCalculator, load_model
    from ase_mlp.training import read_frames
    from ase_mlp.training.data import LabelSpec

    _, out, _ = linear_run
    frames = read_frames(workdir / "data" / BCC.name, ":3", spec=LabelSpec(stress_unit="bar"))
    ours = MLPCalculator(load_model(out / "model.pt"), device="cpu").calculate_batch(frames)
    wrapper = MLPCalculator(load_model(out / "model.lammps"), device="cpu").calculate_batch(frames)
    for a, b in zip(ours, wrapper, strict=True):
        assert a["energy"] == pytest.approx(b["energy"], rel=1e-12)
        np.testing.assert_allclose(a["forces"], b["forces"], atol=1e-10)
    text = (out / "model.lammps").read_text()
    assert "pair_style hybrid/overlay zbl 4.0 4.8 snap" in text
    assert "pair_coeff * * snap model.snapcoeff model.snapparam Ta" in text


def test_eval_with_data_prints_the_metrics_table(linear_run, workdir, capsys):
    from ase_mlp.calculators import load_model
    from ase_mlp.training import compute_metrics, read_frames
    from ase_mlp.training.data import LabelSpec

    _, out, _ = linear_run
    data = workdir / "data" / BCC.name
    rc = main(["eval", "--model", str(out / "model.pt"), "--data", str(data),
               "--stress-unit", "bar", "--stress-sign", "compressive", "--quiet",
               "--metrics", str(out / "eval.json")])
    assert rc == 0
    text = capsys.readouterr().out
    assert "Displaced_BCC.xyz" in text and "Displaced_BCC.xyz:Displaced_BCC" in text
    assert "units: E meV/atom, F eV/Å, S GPa" in text
    ref = compute_metrics(load_model(out / "model.pt"),
                          read_frames(data, spec=LabelSpec(stress_unit="bar",
                                                           stress_sign="compressive")))
    saved = json.loads((out / "eval.json").read_text())
    assert saved["forces"]["rmse"] == pytest.approx(ref["forces"]["rmse"], rel=1e-9)
    assert saved["stress"]["rmse"] == pytest.approx(ref["stress"]["rmse"], rel=1e-9)
    assert f"{ref['forces']['rmse']:.4g}" in text


def test_eval_without_data_keeps_working(linear_run, workdir, capsys):
    _, out, _ = linear_run
    rc = main(["eval", str(workdir / "data" / BCC.name), "--index", ":2", "--model",
               str(out / "model.pt")])
    assert rc == 0
    lines = capsys.readouterr().out.splitlines()
    assert "energy (eV)" in lines[0] and len(lines) == 3
    assert main(["eval", "--model", str(out / "model.pt")]) == 2
    assert "give a structure file" in capsys.readouterr().err


def test_fit_config_errors_exit_2_without_output(workdir, capsys):
    bad = _config(workdir, "bad").read_text().replace("twojmax = 2", "twojmx = 2")
    path = workdir / "bad.toml"
    path.write_text(bad)
    assert main(["fit", str(path)]) == 2
    err = capsys.readouterr().err
    assert "ase-mlp fit: error:" in err
    assert "model.descriptor.twojmx: unknown key; did you mean 'twojmax'?" in err
    assert not (workdir / "bad").exists()
    assert main(["fit", str(workdir / "missing.toml")]) == 2
    assert "configuration file not found" in capsys.readouterr().err


def test_fit_refuses_stress_labels_in_the_wrong_unit(workdir, capsys):
    """The file's stress is in bar; declared as eV/A^3 it would be ~1e4 times too large and
    ruin the model: refused, naming the file, the frame and the likely unit."""
    text = _config(workdir, "unit").read_text().replace('stress_unit = "bar"',
                                                        'stress_unit = "eV/A^3"')
    path = workdir / "unit.toml"
    path.write_text(text)
    assert main(["fit", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "Displaced_BCC.xyz: frame 0: stress component" in err
    assert "is implausible" in err and 'stress_unit = "bar"' in err
    assert "check_magnitudes = false" in err
    assert not (workdir / "unit").exists()


NN = dict(type="nn", model_extra="hidden = [4]",
          fit_extra="\n[fit.nn]\nepochs = {epochs}\nbatch_size = 5\ncheckpoint_every = 1\n")


def _nn_config(workdir, name, epochs):
    return _config(workdir, name, type=NN["type"], model_extra=NN["model_extra"],
                   fit_extra=NN["fit_extra"].format(epochs=epochs))


def test_nn_checkpoint_and_resume(workdir, capsys, monkeypatch):
    import torch

    from ase_mlp.calculators import load_model

    # 2 epochs, then --resume with 3 epochs in all: continues from the checkpoint ...
    cfg = _nn_config(workdir, "nn", epochs=2)
    assert main(["fit", str(cfg), "--quiet", "--no-plots"]) == 0
    out = workdir / "nn"
    assert (out / "checkpoint.pt").is_file() and (out / "model.pt").is_file()
    assert not (out / "parity_energy.png").exists()  # --no-plots
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ckpt["state"]["epoch"] == 2
    cfg = _nn_config(workdir, "nn", epochs=3)
    assert main(["fit", str(cfg), "--resume"]) == 0
    text = capsys.readouterr().out
    assert "resume: continuing from" in text and "learning_curve.png" in text
    assert (out / "learning_curve.png").is_file()
    saved = json.loads((out / "metrics.json").read_text())
    assert [h["epoch"] for h in saved["fit"]["history"]] == [1, 2, 3]
    assert all(math.isfinite(x) for x in _finite_numbers(saved))
    assert (out / "model.mliap.model").is_file() and (out / "model.lammps").is_file()

    # ... and gives the model a fresh 3-epoch run gives (without matplotlib: no plots)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    fresh = _nn_config(workdir, "nn_fresh", epochs=3)
    assert main(["fit", str(fresh), "--quiet"]) == 0
    assert "plots skipped: matplotlib is not installed" in capsys.readouterr().out
    assert not (workdir / "nn_fresh" / "parity_energy.png").exists()
    a = load_model(out / "model.pt").state_dict()
    b = load_model(workdir / "nn_fresh" / "model.pt").state_dict()
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_export_of_a_linear_committee_is_its_exact_mean(tmp_path):
    """LAMMPS has no committee: a linear one is exported as its mean (exact)."""
    import torch
    from ase.build import bulk

    from ase_mlp.calculators import MLPCalculator, load_model
    from ase_mlp.descriptors.bispectrum import Bispectrum
    from ase_mlp.models.committee import Committee
    from ase_mlp.models.snap import LinearSNAP
    from ase_mlp.training.workflow import export_lammps

    desc = dict(elements=["Ta"], twojmax=2, rcutfac=4.67637, radii=[0.5], bzeroflag=False)
    gen = torch.Generator().manual_seed(0)
    members = [LinearSNAP(Bispectrum(**desc),
                          torch.randn((1, 6), generator=gen, dtype=torch.float64))
               for _ in range(3)]
    committee = Committee(*members)
    files = export_lammps(committee, tmp_path, stem="c")
    assert sorted(p.name for p in files.values()) == ["c.lammps", "c.snapcoeff", "c.snapparam"]
    atoms = bulk("Ta", "bcc", a=3.3, cubic=True).repeat(2)
    atoms.rattle(0.05, seed=1)
    a = MLPCalculator(committee, device="cpu").calculate_batch([atoms])[0]
    b = MLPCalculator(load_model(tmp_path / "c.lammps"), device="cpu").calculate_batch([atoms])[0]
    assert a["energy"] == pytest.approx(b["energy"], rel=1e-12)
    np.testing.assert_allclose(a["forces"], b["forces"], atol=1e-10)


def test_eval_model_data_positional_form(tmp_path, capsys):
    """``ase-mlp eval MODEL DATA`` (the issue's form) prints the metrics table."""
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    from ase_mlp.cli import default_model_path, main
    from ase_mlp.workflows.phases import wurtzite

    frames = []
    for k in range(2):
        a = wurtzite(orthohexagonal=True)
        a.rattle(0.02, seed=k)
        a.calc = SinglePointCalculator(a, energy=-36.0, forces=a.positions * 0.0)
        frames.append(a)
    write(tmp_path / "d.extxyz", frames)
    assert main(["eval", str(default_model_path()), str(tmp_path / "d.extxyz"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "E rmse" in out and "F[Ga] rmse" in out
