"""Device-resident molecular dynamics of one or many systems: :class:`ResidentMD`.

ASE's integrators call the calculator every step with numpy arrays: positions go to the
device, forces come back, and a neighbour list is built on the host. For large systems on a
GPU, or for many small systems at once, those copies and calls dominate. ``ResidentMD``
keeps positions, velocities and forces in torch tensors on the model's device for the whole
run and integrates all systems of a batch in one loop:

* one batched graph for all systems (any sizes, compositions, cells), one model call per
  step;
* a Verlet-skin neighbour list: the edge list (built with ``cutoff + skin``) stays on the
  device and is rebuilt only when an atom has moved more than ``skin / 2`` since the last
  build (the only per-step host transfer is that one scalar); the models select the edges
  within their own cutoffs (:func:`ase_mlp.neighbors.edges_within`), so the result equals a
  fresh list;
* velocity Verlet (NVE) or Langevin BAOAB (NVT, per-atom friction, noise from a torch
  generator on the device seeded from ``rng``);
* ASE sees the atoms only when asked: :meth:`ResidentMD.get_images` returns copies with
  positions, momenta, energies and forces;
* :meth:`ResidentMD.save_state` / :meth:`ResidentMD.load_state` checkpoint and restart bit
  for bit.

Cells are fixed (NVE/NVT). Units are ASE's (Å, amu, eV, ASE time).
"""

from __future__ import annotations

import json
import math
import pathlib

import numpy as np
import torch
from ase import Atoms, units
from ase.calculators.singlepoint import SinglePointCalculator

from ase_mlp._util import check_checkpoint_meta, save_npz_atomic
from ase_mlp.neighbors import (
    Graph,
    batch_neighbor_list,
    device_batch_neighbors,
    graph_from_neighbors,
)
from ase_mlp.neighbors.device import choose_neighbors


__all__ = ["ResidentMD"]


class ResidentMD:
    """Velocity Verlet or Langevin BAOAB with all state on the model's device.

    Parameters
    ----------
    calc : ase_mlp.calculators.MLPCalculator
        Supplies the model, device and dtype (the calculator itself is not called).
    images : ase.Atoms or sequence of ase.Atoms
        The systems, integrated side by side; they are not modified (see
        :meth:`get_images`). Velocities are taken from their momenta (zero if none).
    timestep : float
        ASE time units (``1 * units.fs``).
    temperature_K : float or sequence of float, optional
        With ``friction``: Langevin BAOAB at this temperature, or one temperature per
        system (replica sets, parallel tempering ladders). Without: NVE.
    friction : float, optional
        Langevin friction (1/ASE time, e.g. ``0.01 / units.fs``).
    rng : numpy.random.Generator or int, optional
        Seeds the device noise generator (Langevin only; required there).
    skin : float
        Verlet skin (Å).
    neighbors : {"auto", "host", "device"}
        Where the list is rebuilt. ``"host"``: :func:`ase_mlp.neighbors.batch_neighbor_list`
        on the CPU (any boundary conditions, per-pair cutoffs; positions are copied to the
        host at each rebuild). ``"device"``: ``vesin-torch`` on the model's device, no copy
        (fully periodic cells; ``pip install vesin-torch``). ``"auto"``: ``"device"`` on a
        GPU when vesin-torch is installed and every cell is periodic, else ``"host"``.

    Attributes
    ----------
    nsteps : int
    n_builds : int
        Neighbour-list builds so far.
    positions, velocities, forces : torch.Tensor (n_atoms, 3)
        Concatenated over systems, on the device.
    energy : torch.Tensor (n_systems,)
        Potential energy of each system at the current positions (eV).
    """

    def __init__(self, calc, images, timestep: float, *, temperature_K=None, friction=None,
                 rng=None, skin: float = 1.0, neighbors: str = "auto"):
        for attr in ("model", "device", "dtype", "elements"):
            if not hasattr(calc, attr):
                raise TypeError(f"ResidentMD needs an ase_mlp MLPCalculator, got "
                                f"{type(calc).__name__} (no {attr!r})")
        images = [images] if isinstance(images, Atoms) else list(images)
        if not images:
            raise ValueError("ResidentMD needs at least one system")
        if not (np.isfinite(timestep) and timestep > 0):
            raise ValueError(f"timestep must be a finite number > 0 (ASE time), got {timestep}")
        if not (np.isfinite(skin) and skin >= 0):
            raise ValueError(f"skin must be >= 0 Å, got {skin}")
        if (temperature_K is None) != (friction is None):
            raise ValueError("give both temperature_K and friction (Langevin) or neither "
                             "(NVE)")
        if friction is not None:
            temps = np.broadcast_to(np.asarray(temperature_K, dtype=float),
                                    (len(images),)) if np.ndim(temperature_K) == 0 else \
                np.asarray(temperature_K, dtype=float)
            if temps.shape != (len(images),):
                raise ValueError(f"temperature_K must be one value or one per system "
                                 f"({len(images)}), got {len(temps)} values")
            if not (np.isfinite(friction) and friction > 0) \
                    or not np.all(np.isfinite(temps) & (temps >= 0)):
                raise ValueError(f"need friction > 0 and temperature_K >= 0, got {friction}, "
                                 f"{temperature_K}")
            if rng is None:
                raise ValueError("Langevin needs rng= (numpy Generator or seed) for its noise")
        self.model = calc.model
        # the calculator's kernel settings (threads, backend) apply to every step
        self._kernel_threads = getattr(calc, "threads", None)
        self._kernel_backend = getattr(calc, "backend", None)
        self.device, self.dtype = calc.device, calc.dtype
        self.dt = float(timestep)
        self.skin = float(skin)
        self.temperature_K = None if temperature_K is None else temps.copy()
        self.friction = None if friction is None else float(friction)
        index = {s: k for k, s in enumerate(calc.elements)}
        species, system, masses, pos, vel = [], [], [], [], []
        for k, atoms in enumerate(images):
            unknown = sorted(set(atoms.get_chemical_symbols()) - set(index))
            if unknown:
                raise ValueError(f"system {k}: elements {unknown} are not in the model "
                                 f"({calc.elements})")
            if not np.all(np.isfinite(atoms.positions)):
                raise ValueError(f"system {k}: positions contain NaN or inf")
            species.append([index[s] for s in atoms.get_chemical_symbols()])
            system.append(np.full(len(atoms), k))
            masses.append(atoms.get_masses())
            pos.append(atoms.positions)
            vel.append(atoms.get_velocities() if atoms.has("momenta")
                       else np.zeros((len(atoms), 3)))
        self._templates = [a.copy() for a in images]
        self._sizes = [len(a) for a in images]
        self._species_np = np.concatenate(species).astype(np.int64)
        self._system_np = np.concatenate(system).astype(np.int64)
        self._cells_np = np.stack([a.cell.array for a in images])
        self._pbc_np = np.stack([a.pbc for a in images])
        self._pair_cutoffs = np.asarray(self.model.pair_cutoffs(), dtype=float)
        self.neighbors = self._choose_neighbors(neighbors)

        def tensor(x):
            return torch.as_tensor(np.ascontiguousarray(x), dtype=self.dtype, device=self.device)

        self.positions = tensor(np.concatenate(pos))
        self.velocities = tensor(np.concatenate(vel))
        self.masses = tensor(np.concatenate(masses)).unsqueeze(1)
        self._system = torch.as_tensor(self._system_np, device=self.device)
        self.n_systems = len(images)
        self.nsteps = 0
        self.n_builds = 0
        self._graph = None
        self._ref = None
        self._observers = []
        self._generator = None
        if self.friction is not None:
            seed = (rng if isinstance(rng, np.random.Generator)
                    else np.random.default_rng(rng)).integers(2**63 - 1)
            self._generator = torch.Generator(device=self.device)
            self._generator.manual_seed(int(seed))
            c1 = math.exp(-self.friction * self.dt)
            self._c1 = c1
            t_atom = torch.as_tensor(self.temperature_K[self._system_np], dtype=self.dtype,
                                     device=self.device).unsqueeze(1)
            self._sigma = math.sqrt(1.0 - c1 * c1) * torch.sqrt(
                units.kB * t_atom / self.masses)
        self._compute_forces()

    # ------------------------------------------------------------ neighbours and forces
    def _choose_neighbors(self, neighbors: str) -> str:
        return choose_neighbors(neighbors, bool(self._pbc_np.all()), self.device)

    def _rebuild_device(self) -> None:
        cells = torch.as_tensor(self._cells_np, dtype=self.dtype, device=self.device)
        edge_index, shifts = device_batch_neighbors(
            self.positions, cells, self._sizes, float(self._pair_cutoffs.max()) + self.skin)
        self._graph = Graph(positions=self.positions, cells=cells,
                            species=torch.as_tensor(self._species_np, device=self.device),
                            system=self._system, edge_index=edge_index, shifts=shifts,
                            n_systems=self.n_systems,
                            pbc=torch.as_tensor(self._pbc_np, device=self.device))
        self._ref = self.positions.clone()
        self.n_builds += 1

    def _rebuild(self) -> None:
        if self.neighbors == "device":
            self._rebuild_device()
            return
        x = self.positions.detach().cpu().numpy()
        offsets = np.concatenate([[0], np.cumsum(self._sizes)])
        systems = [(x[offsets[k]:offsets[k + 1]], self._cells_np[k], self._pbc_np[k])
                   for k in range(self.n_systems)]
        species = [self._species_np[offsets[k]:offsets[k + 1]] for k in range(self.n_systems)]
        nb = batch_neighbor_list(systems, None, species=species,
                                 pair_cutoffs=self._pair_cutoffs + self.skin)
        self._graph = graph_from_neighbors(
            x, self._cells_np, self._species_np, self._system_np, nb.i, nb.j, nb.shifts,
            dtype=self.dtype, device=self.device, pbc=self._pbc_np)
        self._ref = self.positions.clone()
        self.n_builds += 1

    def _needs_rebuild(self) -> bool:
        if self._graph is None:
            return True
        if self.skin == 0:
            return True
        moved = torch.max(torch.sum((self.positions - self._ref) ** 2, dim=1))
        return bool(moved > (0.5 * self.skin) ** 2)      # the one scalar sent to the host

    def _compute_forces(self) -> None:
        if self._needs_rebuild():
            self._rebuild()
        self._graph.positions = self.positions
        from ase_mlp.kernels import kernel_settings

        with torch.no_grad(), kernel_settings(backend=self._kernel_backend,
                                              threads=self._kernel_threads):
            out = self.model(self._graph, forces=True, stress=False)
        self.forces = out["forces"].to(self.dtype)
        self.energy = out["energy"].to(self.dtype)

    # ------------------------------------------------------------ integration
    def step(self) -> None:
        """One step: velocity Verlet, or BAOAB (B, A, O, A, force, B) with a friction."""
        dt = self.dt
        with torch.no_grad():
            self.velocities += (0.5 * dt) * self.forces / self.masses
            if self.friction is None:
                self.positions += dt * self.velocities
            else:
                self.positions += (0.5 * dt) * self.velocities
                noise = torch.randn(self.velocities.shape, generator=self._generator,
                                    dtype=self.dtype, device=self.device)
                self.velocities.mul_(self._c1).add_(self._sigma * noise)
                self.positions += (0.5 * dt) * self.velocities
            self._compute_forces()
            self.velocities += (0.5 * dt) * self.forces / self.masses
        self.nsteps += 1

    def attach(self, function, interval: int = 1, *args, **kwargs) -> None:
        """Call ``function(*args, **kwargs)`` every ``interval`` steps (as in ASE)."""
        if int(interval) < 1:
            raise ValueError(f"interval must be >= 1, got {interval}")
        self._observers.append((function, int(interval), args, kwargs))

    def run(self, steps: int) -> None:
        """Run ``steps`` steps, calling attached observers."""
        for _ in range(int(steps)):
            self.step()
            for function, interval, args, kwargs in self._observers:
                if self.nsteps % interval == 0:
                    function(*args, **kwargs)

    # ------------------------------------------------------------ restart
    def _meta(self) -> dict:
        return {"sizes": self._sizes, "species": self._species_np.tolist(),
                "timestep": self.dt, "skin": self.skin, "friction": self.friction,
                "temperature_K": None if self.temperature_K is None
                else self.temperature_K.tolist(), "neighbors": self.neighbors,
                "dtype": str(self.dtype)}

    def save_state(self, path) -> None:
        """Checkpoint (atomic ``.npz``): positions, velocities, forces, energies, the
        positions the neighbour list was built from, step and build counts and the noise
        generator. Continuing from it is bit-for-bit identical to an unsplit run."""
        def host(t):
            return t.detach().cpu().numpy()

        state = {"positions": host(self.positions), "velocities": host(self.velocities),
                 "forces": host(self.forces), "energy": host(self.energy),
                 "ref": host(self._ref), "nsteps": np.array(self.nsteps),
                 "n_builds": np.array(self.n_builds),
                 "meta": np.array(json.dumps(self._meta()))}
        if self._generator is not None:
            state["generator"] = self._generator.get_state().cpu().numpy()
        save_npz_atomic(pathlib.Path(path), state)

    def load_state(self, path) -> None:
        """Restore a :meth:`save_state` checkpoint into this (identically built) object."""
        with np.load(path, allow_pickle=False) as z:
            check_checkpoint_meta(path, json.loads(str(z["meta"])), self._meta(),
                                  "ResidentMD")

            def dev(key):
                return torch.as_tensor(z[key], dtype=self.dtype, device=self.device)

            # the list is rebuilt from the positions of its last build: the same edges
            self.positions = dev("ref")
            self._rebuild()
            self.positions = dev("positions")
            self.velocities = dev("velocities")
            self.forces = dev("forces")
            self.energy = dev("energy")
            self.nsteps = int(z["nsteps"])
            self.n_builds = int(z["n_builds"])
            if self._generator is not None:
                self._generator.set_state(torch.as_tensor(z["generator"]))

    # ------------------------------------------------------------ observables
    def kinetic_energies(self) -> torch.Tensor:
        """Kinetic energy of each system (eV), on the device."""
        ke = 0.5 * torch.sum(self.masses * self.velocities**2, dim=1)
        return torch.zeros(self.n_systems, dtype=self.dtype, device=self.device).index_add_(
            0, self._system, ke)

    def temperatures(self) -> torch.Tensor:
        """Instantaneous temperature of each system (K), 3N degrees of freedom."""
        n = torch.as_tensor(self._sizes, dtype=self.dtype, device=self.device)
        return 2.0 * self.kinetic_energies() / (3.0 * n * units.kB)

    def get_images(self) -> list[Atoms]:
        """Copies of the systems with current positions, momenta, energies and forces."""
        x = self.positions.detach().cpu().numpy().astype(float)
        v = self.velocities.detach().cpu().numpy().astype(float)
        f = self.forces.detach().cpu().numpy().astype(float)
        e = self.energy.detach().cpu().numpy().astype(float)
        out, start = [], 0
        for k, template in enumerate(self._templates):
            n = self._sizes[k]
            atoms = template.copy()
            atoms.positions = x[start:start + n]
            atoms.set_velocities(v[start:start + n])
            atoms.calc = SinglePointCalculator(atoms, energy=float(e[k]),
                                               free_energy=float(e[k]),
                                               forces=f[start:start + n].copy())
            out.append(atoms)
            start += n
        return out
