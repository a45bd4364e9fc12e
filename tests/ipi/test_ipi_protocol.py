"""The driver against a scripted server that speaks the i-PI wire format (no i-PI needed).

The server side below is written from the protocol description (i-PI 3.3.1
``ipi/interfaces/sockets.py``: plain and batched POSDATA/GETFORCE layouts); the real
server is exercised in ``test_ipi_server.py``.
"""

from __future__ import annotations

import socket
import threading
import time

import numpy as np
import pytest
from ase import Atoms, units
from ase.calculators.emt import EMT
from ase.stress import voigt_6_to_full_3x3_stress

from ase_mlp.ipi import (
    AtomsMismatch,
    IPIDriver,
    IPITimeout,
    ServerDisconnected,
    parse_address,
)
from ase_mlp.ipi.protocol import header, parse_init


def _recv(conn, n):
    buf = b""
    while len(buf) < n:
        part = conn.recv(n - len(buf))
        assert part, "driver closed the connection"
        buf += part
    return buf


class Server:
    """A scripted i-PI-like server on a unix socket (one listening socket)."""

    def __init__(self, name):
        self.path = f"/tmp/ipi_{name}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(4)
        self.sock.settimeout(10)

    def accept(self):
        conn, _ = self.sock.accept()
        conn.settimeout(10)
        return conn

    def close(self):
        self.sock.close()

    @staticmethod
    def status(conn):
        conn.sendall(header("STATUS"))
        return _recv(conn, 12).strip().decode()

    @staticmethod
    def init(conn, text=" "):
        b = text.encode()
        conn.sendall(header("INIT") + np.int32(0).tobytes() + np.int32(len(b)).tobytes() + b)

    @staticmethod
    def posdata(conn, cells, positions, batch):
        """cells (n, 3, 3) rows in Å, positions (n, nat, 3) Å, converted to i-PI's layout."""
        h = [np.ascontiguousarray(c.T / units.Bohr) for c in cells]
        q = [np.ascontiguousarray(p / units.Bohr) for p in positions]
        nat = np.int32(len(positions[0])).tobytes()
        if batch == 1:
            msg = (header("POSDATA") + h[0].tobytes() + np.linalg.inv(h[0]).tobytes() + nat
                   + q[0].tobytes())
        else:
            msg = header("POSDATA") + nat
            msg += b"".join(hh.tobytes() + np.linalg.inv(hh).tobytes() for hh in h)
            msg += b"".join(qq.tobytes() for qq in q)
        conn.sendall(msg)

    @staticmethod
    def getforce(conn, batch, nat):
        """Results in ASE units: energies (n,), forces (n, nat, 3), virials (n, 3, 3)."""
        conn.sendall(header("GETFORCE"))
        assert _recv(conn, 12) == header("FORCEREADY")
        f8 = lambda n: np.frombuffer(_recv(conn, 8 * n), "<f8")  # noqa: E731
        i4 = lambda: int(np.frombuffer(_recv(conn, 4), "<i4")[0])  # noqa: E731
        e = f8(batch)
        assert i4() == nat
        if batch == 1:
            f = f8(3 * nat)
            w = f8(9)
            _recv(conn, i4())
        else:
            f = f8(3 * nat * batch)
            w = f8(9 * batch)
            for _ in range(batch):
                _recv(conn, i4())
        return (e * units.Hartree, f.reshape(batch, nat, 3) * units.Hartree / units.Bohr,
                np.swapaxes(w.reshape(batch, 3, 3), 1, 2) * units.Hartree)


def _serve(driver):
    out = {}

    def target():
        try:
            out["stats"] = driver.serve()
        except BaseException as err:
            out["error"] = err

    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t, out


def _frames(atoms, n, rng):
    cells = np.stack([atoms.cell.array * (1 + 0.01 * k) for k in range(n)])
    pos = np.stack([atoms.positions * (1 + 0.01 * k) + rng.normal(0, 0.05, atoms.positions.shape)
                    for k in range(n)])
    return cells, pos


def _direct(calc, atoms, cells, pos):
    imgs = []
    for c, p in zip(cells, pos, strict=True):
        a = atoms.copy()
        a.cell[:] = c
        a.positions[:] = p
        imgs.append(a)
    res = calc.calculate_batch(imgs)
    e = np.array([r["energy"] for r in res])
    f = np.stack([r["forces"] for r in res])
    w = np.stack([-voigt_6_to_full_3x3_stress(r["stress"]) * a.get_volume()
                  for r, a in zip(res, imgs, strict=True)])
    return e, f, w


@pytest.mark.parametrize("batch", [1, 3])
def test_roundtrip_plain_and_batched(sock_name, gan_calc, gan_atoms, rng, batch):
    srv = Server(sock_name)
    drv = IPIDriver(gan_calc, gan_atoms, unix=sock_name, connect_timeout=5)
    t, out = _serve(drv)
    try:
        conn = srv.accept()
        assert Server.status(conn) == "NEEDINIT"
        Server.init(conn, f" foo : 1 ,  batch_size:{batch}" if batch > 1 else " ")
        assert Server.status(conn) == "READY"
        cells, pos = _frames(gan_atoms, batch, rng)
        if batch > 1:              # i-PI pads a batch by repeating the last structure
            cells[-1], pos[-1] = cells[-2], pos[-2]
        Server.posdata(conn, cells, pos, batch)
        assert Server.status(conn) == "HAVEDATA"
        e, f, w = Server.getforce(conn, batch, len(gan_atoms))
        assert Server.status(conn) == "READY"
        conn.sendall(header("EXIT"))
        t.join(10)
    finally:
        srv.close()
    assert "error" not in out, out.get("error")
    e0, f0, w0 = _direct(gan_calc, gan_atoms, cells, pos)
    np.testing.assert_allclose(e, e0, rtol=1e-12)
    np.testing.assert_allclose(f, f0, rtol=0, atol=1e-10 * np.abs(f0).max())
    np.testing.assert_allclose(w, w0, rtol=0, atol=1e-10 * np.abs(w0).max())
    assert np.abs(w0).max() > 1e-3            # the virial is really sent
    st = out["stats"]
    assert st.batch_sizes == {batch} and st.structures == batch
    assert st.model_calls == 1 and st.evaluated == (1 if batch == 1 else batch - 1)


def test_connections_are_batched_together(sock_name, gan_calc, gan_atoms, rng):
    """Two connections of one process (plain protocol): both beads in one model call."""
    srv = Server(sock_name)
    drv = IPIDriver(gan_calc, gan_atoms, unix=sock_name, connections=2, connect_timeout=5)
    t, out = _serve(drv)
    try:
        conns = [srv.accept(), srv.accept()]
        cells, pos = _frames(gan_atoms, 2, rng)
        for k, c in enumerate(conns):
            Server.init(c)
            Server.posdata(c, cells[k:k + 1], pos[k:k + 1], 1)
        time.sleep(0.2)                       # both requests are waiting
        res = [Server.getforce(c, 1, len(gan_atoms)) for c in conns]
        for c in conns:
            c.sendall(header("EXIT"))
        t.join(10)
    finally:
        srv.close()
    assert "error" not in out, out.get("error")
    e0, f0, _ = _direct(gan_calc, gan_atoms, cells, pos)
    np.testing.assert_allclose([r[0][0] for r in res], e0, rtol=1e-12)
    np.testing.assert_allclose(res[1][1][0], f0[1], atol=1e-10)
    assert out["stats"].model_calls == 1 and out["stats"].structures == 2


def test_plain_ase_calculator_one_at_a_time(sock_name, rng):
    """Any ASE calculator (EMT here): one call per distinct structure, same numbers."""
    from ase.build import bulk

    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    srv = Server(sock_name)
    drv = IPIDriver(EMT(), atoms, unix=sock_name, connect_timeout=5)
    assert drv.evaluator.use_stress
    t, out = _serve(drv)
    try:
        conn = srv.accept()
        Server.init(conn, "batch_size:4")
        cells, pos = _frames(atoms, 4, rng)
        Server.posdata(conn, cells, pos, 4)
        e, f, w = Server.getforce(conn, 4, len(atoms))
        conn.sendall(header("EXIT"))
        t.join(10)
    finally:
        srv.close()
    assert "error" not in out, out.get("error")
    for k in range(4):
        a = atoms.copy()
        a.cell[:] = cells[k]
        a.positions[:] = pos[k]
        a.calc = EMT()
        assert e[k] == pytest.approx(a.get_potential_energy(), rel=1e-12)
        np.testing.assert_allclose(f[k], a.get_forces(), atol=1e-12)
        np.testing.assert_allclose(w[k], -a.get_volume() * a.get_stress(voigt=False),
                                   atol=1e-10)
    assert out["stats"].model_calls == 4


def test_atom_count_mismatch_is_reported(sock_name, gan_calc, gan_atoms, rng):
    srv = Server(sock_name)
    drv = IPIDriver(gan_calc, gan_atoms[:8], unix=sock_name, connect_timeout=5)
    t, out = _serve(drv)
    try:
        conn = srv.accept()
        Server.init(conn)
        cells, pos = _frames(gan_atoms, 1, rng)
        Server.posdata(conn, cells, pos, 1)
        t.join(10)
        assert conn.recv(12) == b""           # the driver hung up
    finally:
        srv.close()
    err = out["error"]
    assert isinstance(err, AtomsMismatch)
    assert "32 atoms" in str(err) and "has 8" in str(err)


def test_unknown_elements_are_rejected(gan_calc):
    atoms = Atoms("GaNCu", positions=np.eye(3), cell=5 * np.eye(3), pbc=True)
    with pytest.raises(AtomsMismatch, match=r"\['Cu'\].*model elements: \['Ga', 'N'\]"):
        IPIDriver(gan_calc, atoms, unix="x")
    with pytest.raises(ValueError, match="no atom names"):
        IPIDriver(gan_calc, None, unix="x")


def test_server_gone_without_exit(sock_name, gan_calc, gan_atoms):
    srv = Server(sock_name)
    drv = IPIDriver(gan_calc, gan_atoms, unix=sock_name, connect_timeout=5)
    t, out = _serve(drv)
    conn = srv.accept()
    Server.init(conn)
    conn.close()
    srv.close()
    t.join(10)
    assert not t.is_alive()
    assert isinstance(out["error"], ServerDisconnected)
    assert "closed the connection without EXIT" in str(out["error"])


def test_reconnects_to_a_restarted_server(sock_name, gan_calc, gan_atoms, rng):
    import os

    srv = Server(sock_name)
    drv = IPIDriver(gan_calc, gan_atoms, unix=sock_name, connect_timeout=5, reconnect=10)
    t, out = _serve(drv)
    conn = srv.accept()
    Server.init(conn)
    # stop listening before hanging up: otherwise the driver's first reconnect can land in
    # the old socket's backlog and be dropped by its close (a second, legitimate reconnect)
    srv.close()
    os.unlink(srv.path)
    conn.close()
    time.sleep(0.3)
    srv = Server(sock_name)                   # "restarted" server
    try:
        conn = srv.accept()
        assert Server.status(conn) == "NEEDINIT"
        Server.init(conn)
        cells, pos = _frames(gan_atoms, 1, rng)
        Server.posdata(conn, cells, pos, 1)
        e, _, _ = Server.getforce(conn, 1, len(gan_atoms))
        conn.sendall(header("EXIT"))
        t.join(10)
    finally:
        srv.close()
    assert "error" not in out, out.get("error")
    assert out["stats"].reconnects == 1
    assert e[0] == pytest.approx(_direct(gan_calc, gan_atoms, cells, pos)[0][0], rel=1e-12)


def test_failed_send_gives_up_after_reconnect_time_once(sock_name, gan_calc, gan_atoms,
                                                        monkeypatch):
    """The server drops the connection (and stays away) while the driver is about to answer
    its STATUS: the failed send tries to reconnect for ``reconnect`` s once, not twice."""
    import os

    import ase_mlp.ipi.driver as driver_mod

    closed = threading.Event()
    real_recv = driver_mod.recv_exact

    def recv_after_drop(sock, n, what="data"):
        closed.wait(10)               # read STATUS only once the server has hung up, so
        return real_recv(sock, n, what)   # that the answer goes to a closed socket

    monkeypatch.setattr(driver_mod, "recv_exact", recv_after_drop)
    srv = Server(sock_name)
    reconnect = 1.5
    drv = IPIDriver(gan_calc, gan_atoms, unix=sock_name, connect_timeout=5,
                    reconnect=reconnect)
    lost = []
    real_lost = drv._lost

    def count_lost(conn, err):
        lost.append(err)
        return real_lost(conn, err)

    drv._lost = count_lost
    t, out = _serve(drv)
    conn = srv.accept()
    srv.close()
    os.unlink(srv.path)                       # gone: no reconnection possible
    conn.sendall(header("STATUS"))
    conn.close()
    t0 = time.monotonic()
    closed.set()
    t.join(10)
    elapsed = time.monotonic() - t0
    assert not t.is_alive()
    err = out["error"]
    assert isinstance(err, ServerDisconnected), err
    assert 0.9 * reconnect < elapsed < 1.5 * reconnect, elapsed    # was 2 x reconnect
    assert len(lost) == 1, [str(e) for e in lost]
    assert "did not come back within 1.5 s" in str(err) and "send failed" in str(err.__cause__)


def test_repeated_structures_evaluated_once(sock_name, gan_calc, gan_atoms, rng):
    """Repeats anywhere in a batch (not only next to each other) and across connections are
    computed once; every request still gets its own, correct answer."""
    srv = Server(sock_name)
    drv = IPIDriver(gan_calc, gan_atoms, unix=sock_name, connections=2, connect_timeout=5)
    t, out = _serve(drv)
    try:
        conns = [srv.accept(), srv.accept()]
        cells, pos = _frames(gan_atoms, 3, rng)
        order = [[0, 1, 0, 2, 1], [2, 1, 0, 0, 2]]   # 3 distinct among 10 requests
        for c, o in zip(conns, order, strict=True):
            Server.init(c, " batch_size:5")
            Server.posdata(c, cells[o], pos[o], 5)
        time.sleep(0.2)                       # both requests are waiting
        res = [Server.getforce(c, 5, len(gan_atoms)) for c in conns]
        for c in conns:
            c.sendall(header("EXIT"))
        t.join(10)
    finally:
        srv.close()
    assert "error" not in out, out.get("error")
    st = out["stats"]
    assert st.structures == 10 and st.evaluated == 3 and st.model_calls == 1
    e0, f0, w0 = _direct(gan_calc, gan_atoms, cells, pos)
    for (e, f, w), o in zip(res, order, strict=True):
        np.testing.assert_allclose(e, e0[o], rtol=1e-12)
        np.testing.assert_allclose(f, f0[o], rtol=0, atol=1e-10 * np.abs(f0).max())
        np.testing.assert_allclose(w, w0[o], rtol=0, atol=1e-10 * np.abs(w0).max())
    assert np.ptp(e0) > 1e-3                  # the three structures really differ


def test_distinct_structures_exact_comparison():
    from ase_mlp.ipi.evaluate import distinct_structures

    cells = np.stack([np.eye(3) * 5.0] * 4)
    pos = np.zeros((4, 2, 3))
    pos[1, 0, 0] = 1e-300                     # differs in the last bits only: kept apart
    cells[3, 2, 2] = np.nextafter(5.0, 6.0)   # another cell: kept apart
    uniq, which = distinct_structures(cells, pos)
    assert uniq == [0, 1, 3] and which.tolist() == [0, 1, 0, 2]


def test_timeouts(sock_name, gan_calc, gan_atoms):
    t0 = time.monotonic()
    with pytest.raises(IPITimeout, match="no i-PI server answered"):
        IPIDriver(gan_calc, gan_atoms, unix=sock_name, connect_timeout=0.3).serve()
    srv = Server(sock_name)
    drv = IPIDriver(gan_calc, gan_atoms, unix=sock_name, connect_timeout=5, idle_timeout=0.3)
    t, out = _serve(drv)
    try:
        conn = srv.accept()                   # connected, but the server says nothing
        t.join(10)
        conn.close()
    finally:
        srv.close()
    assert isinstance(out["error"], IPITimeout) and "for 0.3 s" in str(out["error"])
    assert time.monotonic() - t0 < 8


def test_parsers():
    assert parse_init(" a : 1 , b : x ,  batch_size:16") == {"a": "1", "b": "x",
                                                             "batch_size": 16}
    assert parse_init(" ")["batch_size"] == 1
    assert parse_address("unix:abc") == ("unix", "abc")
    assert parse_address("node1:31415") == ("inet", ("node1", 31415))
    assert parse_address("inet:127.0.0.1:5") == ("inet", ("127.0.0.1", 5))
    with pytest.raises(ValueError):
        parse_address("nohost")


def test_cli_errors(tmp_path, sock_name, capsys, gan_atoms):
    from ase.build import bulk
    from ase.io import write

    from ase_mlp.cli import main

    write(tmp_path / "cu.xyz", bulk("Cu"))
    write(tmp_path / "gan.xyz", gan_atoms)
    assert main(["ipi-driver", "--unix", sock_name, "--structure", str(tmp_path / "cu.xyz"),
                 "--device", "cpu"]) == 2
    assert "['Cu'] that the model does not know" in capsys.readouterr().err
    assert main(["ipi-driver", "--unix", sock_name, "--device", "cpu"]) == 2
    assert "give the structure" in capsys.readouterr().err
    assert main(["ipi-driver", "--unix", sock_name, "--structure", str(tmp_path / "gan.xyz"),
                 "--device", "cpu", "--connect-timeout", "0.2", "--quiet"]) == 1
    assert "no i-PI server answered" in capsys.readouterr().err
