"""The model-format plugin API (docs/plugins.md): a third-party package registers a format
under the ``ase_mlp.model_formats`` entry-point group, and ``MLPCalculator.from_file`` opens
its files with no change to ase_mlp. The package here is real: a module and a
``.dist-info`` folder with ``entry_points.txt`` on ``sys.path``, found by
``importlib.metadata`` exactly as an installed wheel is."""

from __future__ import annotations

import json
import sys
import textwrap

import numpy as np
import pytest
from ase import Atoms

from ase_mlp.calculators import MLPCalculator, model_formats
from ase_mlp.models.zbl import ZBL
from ase_mlp.testing import check_forces


PLUGIN = '''
"""A third-party format: a ZBL core described by a small JSON file (*.zbl.json)."""
import json
import pathlib

from ase_mlp.models.zbl import ZBL


class ZBLJson:
    name = "zbl_json"

    @staticmethod
    def can_load(paths):
        return len(paths) == 1 and pathlib.Path(paths[0]).name.endswith(".zbl.json")

    @staticmethod
    def load(paths):
        path = pathlib.Path(paths[0])
        try:
            d = json.loads(path.read_text())
            return ZBL(d["elements"], d["inner"], d["outer"])
        except (KeyError, ValueError) as err:
            raise ValueError(f"{path}: not a valid ZBL description: {err}") from err
'''


def _install(site, name, module_text, entry):
    """Write ``name``'s module and its dist-info (the files a wheel install leaves)."""
    (site / f"{name}.py").write_text(module_text)
    info = site / f"{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        textwrap.dedent(f"""\
            [ase_mlp.model_formats]
            {entry}
            """))


@pytest.fixture
def site(tmp_path, monkeypatch):
    d = tmp_path / "site"
    d.mkdir()
    monkeypatch.syspath_prepend(str(d))
    yield d
    for mod in ("thirdparty_zbl", "broken_plugin"):
        sys.modules.pop(mod, None)


def test_third_party_format_loads_through_from_file(site, tmp_path):
    _install(site, "thirdparty_zbl", PLUGIN, "zbl_json = thirdparty_zbl:ZBLJson")
    assert "zbl_json" in model_formats()
    f = tmp_path / "core.zbl.json"
    f.write_text(json.dumps({"elements": ["Ta"], "inner": 4.0, "outer": 4.8}))
    calc = MLPCalculator.from_file(f)
    atoms = Atoms("Ta2", positions=[[0, 0, 0], [0, 0, 1.3]])
    atoms.calc = calc
    ref = MLPCalculator(ZBL(["Ta"], 4.0, 4.8))
    assert atoms.get_potential_energy() == ref.get_potential_energy(atoms.copy())
    assert atoms.get_potential_energy() > 10      # the repulsive core at 1.3 Å
    check_forces(atoms, calc)
    assert calc.parameters["model_file"] == str(f.resolve())
    bad = tmp_path / "bad.zbl.json"
    bad.write_text(json.dumps({"elements": ["Ta"]}))
    with pytest.raises(ValueError, match="bad.zbl.json: not a valid ZBL description"):
        MLPCalculator.from_file(bad)


def test_a_broken_plugin_does_not_hide_the_others(site, tmp_path):
    """A plugin whose module fails to import is reported, and the other formats work."""
    _install(site, "broken_plugin", "raise ImportError('needs libfoo')\n",
             "broken = broken_plugin:Fmt")
    _install(site, "thirdparty_zbl", PLUGIN, "zbl_json = thirdparty_zbl:ZBLJson")
    f = tmp_path / "core.zbl.json"
    f.write_text(json.dumps({"elements": ["W"], "inner": 1.0, "outer": 2.0}))
    assert np.isfinite(MLPCalculator.from_file(f).get_potential_energy(
        Atoms("W2", positions=[[0, 0, 0], [0, 0, 1.5]])))
    other = tmp_path / "x.unknown"
    other.write_text("?")
    with pytest.raises(ValueError, match=r"cannot recognise.*failed to import.*needs libfoo"):
        MLPCalculator.from_file(other)
