"""``ase-mlp``: one-line errors and exit statuses, ``--model`` pairs, ``--version``, defaults
and units in ``--help``, and ``convert`` choosing its writer by the output suffixes (issue 18).
"""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.io import write

import ase_mlp.cli as cli
from ase_mlp import __version__
from ase_mlp.calculators import MLPCalculator, load_model
from ase_mlp.cli import build_parser, main


# the bare Ta06A SNAP pair (without the ZBL of its wrapper) is what these tests want
pytestmark = pytest.mark.filterwarnings("ignore:.*were read as a bare SNAP model")

@pytest.fixture(scope="module")
def snap_pair(ta06a_path):
    """The linear Ta06A SNAP as its LAMMPS pair (no ZBL): (.snapcoeff, .snapparam)."""
    return ta06a_path.with_suffix(".snapcoeff"), ta06a_path.with_suffix(".snapparam")


@pytest.fixture
def cell_file(tmp_path):
    path = tmp_path / "ta.xyz"
    ta = bulk("Ta", "bcc", a=3.3, cubic=True).repeat(2)
    ta.rattle(0.02, seed=1)
    write(path, ta)
    return path


def _one_line_error(capsys, command: str) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err                     # no traceback
    assert lines[0].startswith(f"ase-mlp {command}: error: "), err
    return lines[0]


# ----------------------------------------------------------------------------- errors


def test_output_dir_that_is_a_file(tmp_path, cell_file, capsys):
    blocker = tmp_path / "results"
    blocker.write_text("not a directory\n")
    traj = tmp_path / "two.traj"
    write(traj, [bulk("Ta", "bcc", a=3.3, cubic=True)] * 2)
    assert main(["analyze", str(traj), "--rdf", "--output", str(blocker)]) == 2
    line = _one_line_error(capsys, "analyze")
    assert str(blocker) in line and "--output" in line and "not a directory" in line
    # md checks before loading the model or starting the run
    assert main(["md", str(cell_file), "--output", str(blocker / "sub"), "--steps", "1"]) == 2
    line = _one_line_error(capsys, "md")
    assert str(blocker) in line and "--output" in line


def test_unknown_structure_format_names_the_file(tmp_path, capsys):
    odd = tmp_path / "cell.unknownext"
    odd.write_text("1\n\nTa 0 0 0\n")
    assert main(["eval", str(odd)]) == 2
    line = _one_line_error(capsys, "eval")
    assert str(odd) in line and "unknownext" in line


def test_missing_or_empty_file_is_one_line(tmp_path, capsys):
    assert main(["analyze", str(tmp_path / "absent.traj")]) == 2
    line = _one_line_error(capsys, "analyze")
    assert "absent.traj" in line
    (tmp_path / "empty.xyz").write_text("")
    assert main(["eval", str(tmp_path / "empty.xyz")]) == 2
    assert _one_line_error(capsys, "eval").endswith("empty.xyz: the file is empty")


@pytest.mark.parametrize("exc, status, words", [
    (AssertionError(), 1, ["AssertionError", "internal check", "--traceback"]),
    (OverflowError("math range error"), 1, ["OverflowError: math range error",
                                            "--traceback"]),
    (RuntimeError("CUDA error: out of memory"), 1, ["error: CUDA error: out of memory"]),
    (StopIteration(), 1, ["StopIteration"]),
    (FileExistsError(17, "File exists", "/x/out"), 2, ["/x/out", "already exists",
                                                        "--output"]),
])
def test_any_exception_is_one_line(monkeypatch, capsys, exc, status, words):
    def boom(args):
        raise exc

    monkeypatch.setattr(cli, "cmd_info", boom)
    assert main(["info"]) == status
    line = _one_line_error(capsys, "info")
    for w in words:
        assert w in line


def test_traceback_flag_and_interrupt(monkeypatch, capsys):
    def boom(args):
        raise OverflowError("math range error")

    monkeypatch.setattr(cli, "cmd_info", boom)
    for argv in (["--traceback", "info"], ["info", "--traceback"]):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert "Traceback (most recent call last)" in err and "in boom" in err
        assert err.rstrip().endswith("ase-mlp info: error: OverflowError: math range error; "
                                     "run with --traceback to see where")

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_info", interrupted)
    assert main(["info"]) == 130
    assert capsys.readouterr().err.strip() == "ase-mlp info: interrupted"


def test_device_errors(cell_file, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["eval", str(cell_file), "--device", "gpu0"])
    assert exc.value.code == 2
    assert "unknown device 'gpu0'" in capsys.readouterr().err
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    assert main(["eval", str(cell_file), "--device", "cuda"]) == 1
    line = _one_line_error(capsys, "eval")
    assert "cuda" in line and "device='cpu'" in line


# ----------------------------------------------------------------------------- --model


def test_model_does_not_swallow_the_structure(snap_pair, cell_file, capsys):
    coeff, param = snap_pair
    ns = build_parser().parse_args(["md", "--model", "m.pt", "cell.xyz"])
    assert ns.model == ["m.pt"] and ns.structure == "cell.xyz"
    ns = build_parser().parse_args(["neb", "--model", str(param), str(coeff), "a.xyz", "b.xyz"])
    assert ns.model == [str(param), str(coeff)] and ns.endpoints == ["a.xyz", "b.xyz"]
    ns = build_parser().parse_args(["phonons", "--model=x.model", "x.descriptor", "cell.xyz",
                                    "--supercell", "2"])
    assert ns.model == ["x.model", "x.descriptor"] and ns.structure == "cell.xyz"
    # the command line: a pair then the structure, evaluated like the API does
    assert main(["eval", "--model", str(param), str(coeff), str(cell_file), "--device",
                 "cpu"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    assert len(rows) == 1 and rows[0][1] == "16"
    calc = MLPCalculator.from_file(coeff, param, device="cpu")
    from ase.io import read

    atoms = read(cell_file)
    atoms.calc = calc
    assert float(rows[0][2]) == pytest.approx(atoms.get_potential_energy(), abs=1e-7)


# ----------------------------------------------------------------------------- help


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"ase-mlp {__version__}"


def _help(capsys, command: str) -> str:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    return " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("command, expected", [
    ("md", ["MD steps (with --restart: further steps) (default: 1000)",
            "MD timestep (fs) (default: 1.0)", "temperature (K) (default: 300.0)",
            "bussi time constant (fs) (default: 100.0)"]),
    ("demo", ["MD timestep (fs) (default: 2.0)", "pressure (GPa) (default: 0.0)",
              "(default: 3 2 2)"]),
    ("analyze", ["RDF range (Å) (default: 6.0)", "frames to discard at the start (default: 0)",
                 "MD timestep (fs), with --interval"]),
    ("neb", ["convergence threshold on the NEB forces (eV/Å) (default: 0.05)",
             "spring constant (eV/Å²) (default: 0.1)", "(default: FIRE)"]),
    ("phonons", ["displacement (Å) (default: 0.01)", "(default: 0 100 200 300 500 1000)",
                 "pressure (GPa) of the --relax (default: 0.0)",
                 "force threshold (eV/Å) of the --relax (default: 0.0001)"]),
    ("ipi-driver", ["time (s) to wait for the server at start-up (default: 60.0)"]),
])
def test_help_shows_defaults_and_units(capsys, command, expected):
    text = _help(capsys, command)
    for e in expected:
        assert e in text
    assert "(default: None)" not in text and "(default: False)" not in text


def test_unit_options_one_scheme(tmp_path, capsys):
    """analyze takes --dt and --timestep (fs) like md; the old -fs spellings still work."""
    text = _help(capsys, "analyze")
    assert "--dt FS" in text and "--timestep FS" in text
    assert "--dt-fs" not in text and "--timestep-fs" not in text        # hidden aliases
    ta = bulk("Ta", "bcc", a=3.31, cubic=True).repeat(2)
    frames = []
    for k in range(6):
        a = ta.copy()
        a.rattle(0.05, seed=k)
        frames.append(a)
    traj = tmp_path / "f.traj"
    write(traj, frames)
    out = str(tmp_path / "o")
    assert main(["analyze", str(traj), "--msd", "--timestep", "0.5", "--interval", "4",
                 "--output", out]) == 0
    assert "2 fs apart (from --timestep x --interval)" in capsys.readouterr().out
    assert main(["analyze", str(traj), "--msd", "--dt", "3", "--output", out]) == 0
    assert "3 fs apart (from --dt)" in capsys.readouterr().out
    assert main(["analyze", str(traj), "--msd", "--timestep-fs", "1", "--interval", "2",
                 "--output", out]) == 0
    res = capsys.readouterr()
    assert "2 fs apart (from --timestep-fs x --interval)" in res.out
    assert "--timestep-fs is deprecated, use --timestep" in res.err
    assert main(["analyze", str(traj), "--msd", "--dt", "-1", "--output", out]) == 2
    assert "--dt must be > 0 fs" in capsys.readouterr().err


# ----------------------------------------------------------------------------- convert


def _energy(model, atoms) -> float:
    a = atoms.copy()
    a.calc = MLPCalculator(model, device="cpu")
    return a.get_potential_energy()


def test_convert_by_output_suffix(tmp_path, snap_pair, capsys):
    coeff, param = snap_pair
    ta = bulk("Ta", "bcc", a=3.3, cubic=True).repeat(2)
    ta.rattle(0.05, seed=3)
    e_ref = _energy(load_model(coeff, param), ta)
    # ours
    assert main(["convert", "--inputs", str(coeff), str(param), "--outputs",
                 str(tmp_path / "ta.pt")]) == 0
    assert zipfile.is_zipfile(tmp_path / "ta.pt")
    # SNAP pair (either order) and ML-IAP pair, from our file
    assert main(["convert", "--inputs", str(tmp_path / "ta.pt"), "--outputs",
                 str(tmp_path / "s.snapparam"), str(tmp_path / "s.snapcoeff")]) == 0
    assert main(["convert", "--inputs", str(tmp_path / "ta.pt"), "--outputs",
                 str(tmp_path / "m.descriptor"), str(tmp_path / "sub" / "m.model")]) == 0
    for files in ([tmp_path / "s.snapcoeff", tmp_path / "s.snapparam"],
                  [tmp_path / "sub" / "m.model", tmp_path / "m.descriptor"]):
        for f in files:
            assert not zipfile.is_zipfile(f)
            assert f.read_text().startswith("#")
        assert _energy(load_model(*files), ta) == pytest.approx(e_ref, abs=1e-9)
    capsys.readouterr()


@pytest.mark.parametrize("outputs, words", [
    (["x.snapcoeff"], ["x.snapcoeff", "pair of files", ".snapparam", "--outputs"]),
    (["x.descriptor"], ["x.descriptor", "pair of files", "x.model"]),
    (["x.txt"], ["x.txt", "unknown output suffix '.txt'", ".pt", ".snapcoeff", ".model"]),
    (["x.snapparam", "y.txt"], ["y.txt", "unknown output suffix"]),
    (["x.snapcoeff", "x.descriptor"], ["not a pair of one format"]),
    (["x.pt", "x.snapcoeff"], [".pt file is a complete model"]),
    (["a.model", "b.model"], ["two .model files"]),
])
def test_convert_refuses_bad_outputs(tmp_path, snap_pair, capsys, outputs, words):
    coeff, param = snap_pair
    outs = [str(tmp_path / o) for o in outputs]
    assert main(["convert", "--inputs", str(coeff), str(param), "--outputs", *outs]) == 2
    line = _one_line_error(capsys, "convert")
    for w in words:
        assert w in line
    assert not any((tmp_path / o).exists() for o in outputs)


def test_convert_nn_snap_to_snap_pair_is_one_line(tmp_path, capsys):
    """NN-SNAP has no SNAP-pair form: the writer's refusal is a one-line error."""
    out = [str(tmp_path / "g.snapcoeff"), str(tmp_path / "g.snapparam")]
    assert main(["convert", "--inputs", str(cli.default_model_path()), "--outputs", *out]) == 2
    line = _one_line_error(capsys, "convert")
    assert "NNSNAP" in line and "write_mliap" in line
    assert np.all([not (tmp_path / n).exists() for n in ("g.snapcoeff", "g.snapparam")])
