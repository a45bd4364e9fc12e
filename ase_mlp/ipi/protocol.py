"""The i-PI socket protocol, client side: message framing, batching and units.

Messages are 12-byte upper-case ASCII headers, padded with spaces, followed by raw
little-endian (native) binary payloads. The exchange, as the client sees it:

``STATUS``
    answer ``NEEDINIT`` (before ``INIT``), ``HAVEDATA`` (results waiting) or ``READY``.
``INIT``
    ``int32 rid, int32 n, n bytes``: a parameter string ``" k : v , ..."``. i-PI 3.x
    appends ``batch_size:N`` when the forcefield has ``<batch_size> N``; from then on
    positions and results travel ``N`` structures per message (*batched mode*).
``POSDATA``
    plain: ``h (9 f64), h^-1 (9 f64), int32 nat, q (3 nat f64)``;
    batched: ``int32 nat``, then ``N`` times ``(h, h^-1)``, then ``N`` times ``q``.
    ``h`` holds the cell vectors as *columns* (bohr), ``q`` the positions (bohr).
``GETFORCE``
    answer ``FORCEREADY`` then, plain: ``f64 V, int32 nat, F (3 nat f64), W (9 f64),
    int32 len, extra``; batched: ``N f64 V, int32 nat, N x F, N x W, N x (int32 len,
    extra)``. Energies in hartree, forces in hartree/bohr, virial ``-sigma V`` in hartree.
``EXIT``
    the server is done: close.

i-PI pads an incomplete batch by repeating the last structure. Unit conversion uses
``ase.units`` (``Bohr``, ``Hartree``), as ASE's own socket client does.
"""

from __future__ import annotations

import socket
import time

import numpy as np
from ase import units


HDRLEN = 12


def header(name: str) -> bytes:
    """The 12-byte header of message ``name``."""
    return name.upper().ljust(HDRLEN).encode("ascii")


STATUS, READY, NEEDINIT, HAVEDATA = (header(m) for m in ("STATUS", "READY", "NEEDINIT",
                                                         "HAVEDATA"))
INIT, POSDATA, GETFORCE, FORCEREADY, EXIT = (header(m) for m in (
    "INIT", "POSDATA", "GETFORCE", "FORCEREADY", "EXIT"))

_F64 = np.dtype("<f8")
_I32 = np.dtype("<i4")


class IPIProtocolError(RuntimeError):
    """The server sent something the protocol does not allow."""


class ServerDisconnected(ConnectionError):
    """The server closed the connection without sending ``EXIT``."""


class IPITimeout(TimeoutError):
    """Nothing arrived from the server within the allowed time."""


def recv_exact(sock: socket.socket, nbytes: int, what: str = "data") -> bytes:
    """Read exactly ``nbytes`` from ``sock`` (the socket's own timeout applies).

    Raises
    ------
    ServerDisconnected
        The peer closed the connection (or reset it) before all bytes arrived.
    IPITimeout
        The socket timed out in the middle of a message.
    """
    buf = bytearray(nbytes)
    view = memoryview(buf)
    got = 0
    while got < nbytes:
        try:
            n = sock.recv_into(view[got:], nbytes - got)
        except socket.timeout as err:
            raise IPITimeout(f"timed out after {got}/{nbytes} bytes of {what}") from err
        except (ConnectionResetError, BrokenPipeError) as err:
            raise ServerDisconnected(f"connection reset while reading {what}") from err
        if n == 0:
            raise ServerDisconnected(
                f"connection closed by the server while reading {what} ({got}/{nbytes} bytes)")
        got += n
    return bytes(buf)


def parse_init(text: str) -> dict:
    """Parse an INIT parameter string (``" k : v , k2 : v2 , batch_size:4"``).

    Returns a dict of strings, with ``batch_size`` as an int (1 when absent).
    """
    out: dict = {}
    for token in text.split(","):
        key, sep, value = token.partition(":")
        if sep and key.strip():
            out[key.strip()] = value.strip()
    try:
        out["batch_size"] = max(1, int(out.get("batch_size", 1)))
    except ValueError as err:
        raise IPIProtocolError(f"bad batch_size in the INIT string {text!r}") from err
    return out


def read_init(sock: socket.socket) -> tuple[int, str]:
    """Body of an INIT message: ``(replica id, parameter string)``."""
    rid, n = np.frombuffer(recv_exact(sock, 8, "INIT"), _I32)
    if n < 0 or n > 1 << 20:
        raise IPIProtocolError(f"INIT string of {n} bytes")
    text = recv_exact(sock, int(n), "INIT string").decode("utf-8", errors="replace")
    return int(rid), text


def read_posdata(sock: socket.socket, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """Body of a POSDATA message in i-PI units.

    Returns ``h`` (``(batch, 3, 3)``, cell vectors as columns, bohr) and ``q``
    (``(batch, nat, 3)``, bohr).
    """
    if batch <= 1:
        raw = recv_exact(sock, 18 * 8 + 4, "POSDATA cell")
        h = np.frombuffer(raw[:72], _F64).reshape(1, 3, 3)
        nat = int(np.frombuffer(raw[144:148], _I32)[0])
        _check_nat(nat)
        q = np.frombuffer(recv_exact(sock, 24 * nat, "POSDATA positions"), _F64)
        return h.astype(float), q.reshape(1, nat, 3).astype(float)
    nat = int(np.frombuffer(recv_exact(sock, 4, "POSDATA atom count"), _I32)[0])
    _check_nat(nat)
    cells = np.frombuffer(recv_exact(sock, 144 * batch, "POSDATA cells"), _F64)
    h = cells.reshape(batch, 2, 3, 3)[:, 0]
    q = np.frombuffer(recv_exact(sock, 24 * nat * batch, "POSDATA positions"), _F64)
    return h.astype(float), q.reshape(batch, nat, 3).astype(float)


def _check_nat(nat: int) -> None:
    if nat < 0 or nat > 100_000_000:
        raise IPIProtocolError(f"POSDATA announces {nat} atoms")


def to_ase(h: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """i-PI cell (columns, bohr) and positions (bohr) to ASE cell rows and positions (Å)."""
    return np.swapaxes(h, -1, -2) * units.Bohr, q * units.Bohr


def from_ase(energies, forces, virials):
    """ASE-unit results (eV, eV/Å, virial in eV) to i-PI's (hartree, hartree/bohr, hartree).

    The virial goes out transposed, as i-PI reads it (it is symmetric for our models).
    """
    e = np.asarray(energies, dtype=float).reshape(-1) / units.Hartree
    f = np.asarray(forces, dtype=float) * (units.Bohr / units.Hartree)
    w = np.swapaxes(np.asarray(virials, dtype=float), -1, -2) / units.Hartree
    return e, f, w


def pack_results(energies, forces, virials, batched: bool, extras=None) -> bytes:
    """The GETFORCE answer (``FORCEREADY`` included) from ASE-unit results.

    Parameters
    ----------
    energies : sequence of float
        eV, one per structure (exactly one in plain mode).
    forces : array (n, nat, 3)
        eV/Å.
    virials : array (n, 3, 3)
        ``-stress * volume`` in eV (zeros without stress).
    batched : bool
        Batched layout (all structures of the message) or plain (one structure).
    extras : sequence of str, optional
        Per-structure extra strings (JSON is parsed by i-PI); default empty.
    """
    e, f, w = from_ase(energies, forces, virials)
    n, nat = f.shape[0], f.shape[1]
    if not (len(e) == n == len(w)):
        raise ValueError(f"{len(e)} energies, {n} force arrays and {len(w)} virials")
    if not batched and n != 1:
        raise ValueError(f"plain mode answers one structure, got {n}")
    extras = [""] * n if extras is None else list(extras)
    xb = [x.encode("utf-8") for x in extras]
    parts = [FORCEREADY]
    if batched:
        parts += [e.astype(_F64).tobytes(), np.int32(nat).tobytes(),
                  np.ascontiguousarray(f, _F64).tobytes(),
                  np.ascontiguousarray(w, _F64).tobytes()]
        for x in xb:
            parts += [np.int32(len(x)).tobytes(), x]
    else:
        parts += [e.astype(_F64).tobytes(), np.int32(nat).tobytes(),
                  np.ascontiguousarray(f[0], _F64).tobytes(),
                  np.ascontiguousarray(w[0], _F64).tobytes(),
                  np.int32(len(xb[0])).tobytes(), xb[0]]
    return b"".join(parts)


def unix_path(name: str, prefix: str = "/tmp/ipi_") -> str:
    """The file of i-PI's unix socket ``name`` (i-PI binds ``prefix + name``)."""
    path = prefix + name
    if len(path.encode()) > 107:
        raise ValueError(f"unix socket path {path!r} is longer than the 107 bytes allowed")
    return path


def connect(kind: str, address, *, timeout: float = 60.0, prefix: str = "/tmp/ipi_",
            poll: float = 0.05) -> socket.socket:
    """Connect to an i-PI server, retrying until it listens or ``timeout`` seconds pass.

    Parameters
    ----------
    kind : ``"unix"`` or ``"inet"``
    address : str or (host, port)
        The unix socket name (``prefix`` is prepended, as i-PI does) or the TCP address.
    """
    if kind not in ("unix", "inet"):
        raise ValueError(f"socket kind must be 'unix' or 'inet', got {kind!r}")
    deadline = time.monotonic() + max(0.0, timeout)
    target = unix_path(address, prefix) if kind == "unix" else (address[0], int(address[1]))
    last = None
    while True:
        fam = socket.AF_UNIX if kind == "unix" else socket.AF_INET
        sock = socket.socket(fam, socket.SOCK_STREAM)
        try:
            if kind == "inet":
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(max(1.0, min(10.0, timeout)))
            sock.connect(target)
            return sock
        except (FileNotFoundError, ConnectionRefusedError, socket.timeout, OSError) as err:
            sock.close()
            last = err
            if time.monotonic() >= deadline:
                break
            time.sleep(poll)
    where = f"unix socket {target}" if kind == "unix" else f"{target[0]}:{target[1]}"
    raise IPITimeout(f"no i-PI server answered at {where} within {timeout:g} s "
                     f"({type(last).__name__}: {last})")
