"""A batched i-PI socket driver for ase_mlp models and ASE calculators.

One :class:`IPIDriver` process serves one or several connections (unix or TCP) to one or
several i-PI servers. Structures arrive one per message (plain mode) or ``N`` per message
(i-PI's batched mode, announced in the INIT string); all structures that are waiting on
all connections are evaluated together: in one ``calculate_batch`` call for calculators
that have it (:class:`~ase_mlp.calculators.MLPCalculator`), one by one for any other ASE
calculator.
"""

from __future__ import annotations

import select
import socket
import time
from dataclasses import dataclass, field

import numpy as np
from ase import Atoms

from ase_mlp.ipi.evaluate import Evaluator
from ase_mlp.ipi.protocol import (
    EXIT,
    GETFORCE,
    HAVEDATA,
    HDRLEN,
    INIT,
    NEEDINIT,
    POSDATA,
    READY,
    STATUS,
    IPIProtocolError,
    IPITimeout,
    ServerDisconnected,
    connect,
    pack_results,
    parse_init,
    read_init,
    read_posdata,
    recv_exact,
    to_ase,
)


@dataclass
class DriverStats:
    """Counters and timings of a driver run (seconds).

    ``structures`` counts every structure received, i-PI's padding of partial batches
    included; ``evaluated`` the distinct ones that were computed (repeats are answered
    from the same evaluation, see :class:`~ase_mlp.ipi.evaluate.Evaluator`).
    """

    messages: int = 0
    structures: int = 0
    evaluated: int = 0
    model_calls: int = 0
    compute_s: float = 0.0
    wait_s: float = 0.0
    io_s: float = 0.0
    reconnects: int = 0
    batch_sizes: set = field(default_factory=set)


def parse_address(spec: str):
    """Address string to ``(kind, address)``.

    ``"unix:NAME"`` gives ``("unix", NAME)``; ``"HOST:PORT"`` or ``"inet:HOST:PORT"`` gives
    ``("inet", (HOST, PORT))``.
    """
    if spec.startswith("unix:"):
        return "unix", spec[5:]
    if spec.startswith("inet:"):
        spec = spec[5:]
    host, sep, port = spec.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"bad i-PI address {spec!r}: use unix:NAME or HOST:PORT")
    return "inet", (host, int(port))


class _Conn:
    def __init__(self, kind, address, sock):
        self.kind, self.address, self.sock = kind, address, sock
        self.reset()
        self.exited = False

    def reset(self):
        self.initialized = False
        self.batch = 1
        self.params: dict = {}
        self.pending = None       # (cells, positions) in Å, not evaluated yet
        self.results = None       # packed GETFORCE answer
        self.deferred: list = []  # headers that wait for the results

    @property
    def where(self) -> str:
        return (f"unix:{self.address}" if self.kind == "unix"
                else f"{self.address[0]}:{self.address[1]}")


class IPIDriver:
    """Serve i-PI force requests with an ASE calculator, batching all beads of a step.

    Parameters
    ----------
    calc : ase.calculators.calculator.Calculator
        Any ASE calculator. Calculators with ``calculate_batch(images, properties)``
        (``MLPCalculator``) evaluate all waiting structures in one call.
    atoms : ase.Atoms or None
        The structure i-PI simulates: its symbols (in i-PI's atom order) and ``pbc``; the
        positions and cell come from the server. i-PI sends no atom names, so this is
        how the driver knows them. ``None`` is allowed for a one-element model (all
        atoms are that element, periodic).
    unix, inet : str or list of str, optional
        Unix socket name(s) (i-PI's ``<address>``; the file is ``sockets_prefix + name``)
        and/or TCP address(es) ``"HOST:PORT"``. At least one address is needed.
    connections : int
        Connections opened to each address (one process, several i-PI clients: with
        ``batch_size`` 1 in i-PI, the beads sent to all of them are evaluated together).
    batched : bool
        Evaluate all waiting structures in one model call (default). ``False``: one call
        per structure, whatever the wire mode.
    max_batch : int, optional
        At most this many structures per model call (GPU memory); default: no limit.
    use_stress : bool, optional
        Send the virial; default: when ``atoms`` is periodic in 3D and the calculator
        implements ``stress``.
    sockets_prefix : str
        Prefix of unix socket files (i-PI's ``<simulation sockets_prefix>``).
    connect_timeout : float
        Seconds to keep retrying the first connection (the server may start later).
    idle_timeout : float, optional
        Give up when no message arrives for this long (default: wait forever; a killed
        server on the same machine is seen at once as a closed connection).
    reconnect : float
        When a server closes a connection without ``EXIT``, keep trying to connect again
        for this many seconds (e.g. while i-PI is restarted from its RESTART file);
        0 (default) raises :class:`ServerDisconnected` at once.
    io_timeout : float
        Seconds allowed for the rest of a message once its header has arrived.
    log : callable, optional
        Called with one string per event (connections, INIT, EXIT).
    """

    def __init__(self, calc, atoms: Atoms, unix=None, inet=None, *, connections: int = 1,
                 batched: bool = True, max_batch: int | None = None, use_stress=None,
                 sockets_prefix: str = "/tmp/ipi_", connect_timeout: float = 60.0,
                 idle_timeout: float | None = None, reconnect: float = 0.0,
                 io_timeout: float = 120.0, log=None):
        self.calc = calc
        self.evaluator = Evaluator(calc, atoms, use_stress=use_stress, batched=batched,
                                   max_batch=max_batch)
        self.addresses = [("unix", str(u)) for u in _as_list(unix)]
        self.addresses += [("inet", (str(a[0]), int(a[1]))) if isinstance(a, tuple)
                           else parse_address(str(a)) for a in _as_list(inet)]
        if not self.addresses:
            raise ValueError("give at least one address: unix=NAME or inet='HOST:PORT'")
        if connections < 1:
            raise ValueError(f"connections must be >= 1, got {connections}")
        self.connections = int(connections)
        self.sockets_prefix = sockets_prefix
        self.connect_timeout = float(connect_timeout)
        self.idle_timeout = idle_timeout
        self.reconnect = float(reconnect)
        self.io_timeout = float(io_timeout)
        self.log = log or (lambda msg: None)
        self.stats = DriverStats()
        self._conns: list[_Conn] = []

    @property
    def atoms(self) -> Atoms | None:
        """The driver's structure (symbols and pbc)."""
        return self.evaluator.atoms

    # ------------------------------------------------------------ connections
    def _open(self, kind, address, timeout) -> socket.socket:
        sock = connect(kind, address, timeout=timeout, prefix=self.sockets_prefix)
        sock.settimeout(self.io_timeout)
        if kind == "inet":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        return sock

    def connect(self) -> None:
        """Open all connections (called by :meth:`serve`)."""
        for kind, address in self.addresses:
            for _ in range(self.connections):
                sock = self._open(kind, address, self.connect_timeout)
                conn = _Conn(kind, address, sock)
                self._conns.append(conn)
                self.log(f"connected to i-PI at {conn.where}")

    def close(self) -> None:
        """Close every connection."""
        for c in self._conns:
            _close(c.sock)
        self._conns = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _lost(self, conn: _Conn, err: Exception) -> None:
        """``conn`` went away without EXIT: reconnect (within ``reconnect`` s) or raise.

        Called once per lost connection: the :class:`ServerDisconnected` it raises is marked
        as final, and :meth:`_handle` passes it on instead of calling this again (a failed
        send inside a message would otherwise retry for another ``reconnect`` seconds).
        """
        if self.reconnect > 0:
            self.log(f"lost {conn.where} ({err}); reconnecting for up to {self.reconnect:g} s")
            _close(conn.sock)
            try:
                conn.sock = self._open(conn.kind, conn.address, self.reconnect)
            except IPITimeout as again:
                raise _final(ServerDisconnected(
                    f"the i-PI server at {conn.where} closed the connection without EXIT "
                    f"and did not come back within {self.reconnect:g} s ({again})")) from err
            conn.reset()
            self.stats.reconnects += 1
            self.log(f"reconnected to {conn.where}")
            return
        raise _final(ServerDisconnected(
            f"the i-PI server at {conn.where} closed the connection without EXIT "
            f"(killed, crashed, or it dropped this client after its <timeout>): {err}")) from err

    def _send(self, conn: _Conn, data: bytes) -> bool:
        """Send ``data``; ``False`` when the connection was lost and opened again (its state
        is reset: nothing more may be sent on it for the current message)."""
        try:
            conn.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError) as err:
            self._lost(conn, ServerDisconnected(f"send failed: {err}"))
            return False
        except socket.timeout as err:
            raise IPITimeout(f"sending to {conn.where} timed out") from err
        return True

    # ------------------------------------------------------------ main loop
    def serve(self) -> DriverStats:
        """Connect, then answer requests until every connection got ``EXIT``.

        Raises
        ------
        ServerDisconnected
            A server closed a connection without ``EXIT`` (and did not come back within
            ``reconnect`` seconds).
        IPITimeout
            No server at start-up within ``connect_timeout``, or nothing for
            ``idle_timeout`` seconds.
        AtomsMismatch
            The server sends another number of atoms than ``atoms`` has.
        """
        try:
            if not self._conns:
                self.connect()
            while True:
                live = [c for c in self._conns if not c.exited]
                if not live:
                    break
                t0 = time.perf_counter()
                ready, _, _ = select.select([c.sock for c in live], [], [], self.idle_timeout)
                self.stats.wait_s += time.perf_counter() - t0
                if not ready:
                    raise IPITimeout(f"no message from i-PI for {self.idle_timeout:g} s")
                for c in live:
                    # a batch computed for an earlier connection may have read this one's
                    # message already (see _drain): check that something is still there
                    if c.sock in ready and not c.exited and _readable(c.sock):
                        self._handle(c, defer=False)
        finally:
            self.close()
        self.log(f"all connections closed by EXIT: {self.stats.structures} structures received, "
                 f"{self.stats.evaluated} distinct evaluated in {self.stats.model_calls} "
                 "model calls")
        return self.stats

    def _handle(self, c: _Conn, defer: bool) -> None:
        t0, c0 = time.perf_counter(), self.stats.compute_s
        try:
            self._message(c, defer)
        except ServerDisconnected as err:
            if getattr(err, "_ipi_final", False):   # _lost has handled it (a failed send)
                raise
            self._lost(c, err)
        self.stats.io_s += time.perf_counter() - t0 - (self.stats.compute_s - c0)

    def _message(self, c: _Conn, defer: bool) -> None:
        hdr = recv_exact(c.sock, HDRLEN, "message header")
        self.stats.messages += 1
        if hdr == STATUS:
            if c.pending is not None:
                if defer:
                    c.deferred.append(hdr)
                    return
                self._compute()
            self._send(c, NEEDINIT if not c.initialized
                       else HAVEDATA if c.results is not None else READY)
        elif hdr == INIT:
            rid, text = read_init(c.sock)
            c.params = parse_init(text)
            c.batch = c.params["batch_size"]
            c.initialized = True
            self.stats.batch_sizes.add(c.batch)
            self.log(f"INIT from {c.where}: replica {rid}, batch_size {c.batch}")
        elif hdr == POSDATA:
            h, q = read_posdata(c.sock, c.batch)
            cells, pos = to_ase(h, q)
            self.evaluator.check(q.shape[1], cells[0])
            c.pending = (cells, pos)
            c.results = None
            self.stats.structures += len(q)
        elif hdr == GETFORCE:
            if c.pending is not None:
                if defer:
                    c.deferred.append(hdr)
                    return
                self._compute()
            if c.results is None:
                raise IPIProtocolError(f"GETFORCE from {c.where} before any POSDATA")
            self._send(c, c.results)
            c.results = None
        elif hdr == EXIT:
            c.exited = True
            _close(c.sock)
            self.log(f"EXIT from {c.where}")
        else:
            raise IPIProtocolError(f"unexpected message {hdr!r} from {c.where}")

    def _drain(self) -> None:
        """Read whatever else is waiting, so that all connections' beads go in one batch."""
        for _ in range(4 * len(self._conns) + 4):
            cand = [c for c in self._conns if not c.exited and not c.deferred]
            if not cand:
                return
            ready, _, _ = select.select([c.sock for c in cand], [], [], 0.0)
            if not ready:
                return
            for c in cand:
                if c.sock in ready and not c.exited:
                    self._handle(c, defer=True)

    def _compute(self) -> None:
        self._drain()
        todo = [c for c in self._conns if c.pending is not None]
        cells = np.concatenate([c.pending[0] for c in todo])
        pos = np.concatenate([c.pending[1] for c in todo])
        t0 = time.perf_counter()
        energies, forces, virials = self.evaluator(cells, pos)
        self.stats.compute_s += time.perf_counter() - t0
        self.stats.model_calls = self.evaluator.model_calls
        self.stats.evaluated = self.evaluator.evaluated
        start = 0
        for c in todo:
            n = len(c.pending[0])
            sl = slice(start, start + n)
            c.results = pack_results(energies[sl], forces[sl], virials[sl], batched=c.batch > 1)
            c.pending = None
            start += n
        for c in todo:
            deferred, c.deferred = c.deferred, []
            for hdr in deferred:
                if hdr == STATUS:
                    sent = self._send(c, HAVEDATA)
                else:
                    sent = self._send(c, c.results)
                    c.results = None
                if not sent:          # reconnected: the new connection starts afresh
                    break


def _as_list(x) -> list:
    if x is None:
        return []
    return list(x) if isinstance(x, list) else [x]


def _final(err: ServerDisconnected) -> ServerDisconnected:
    """Mark ``err`` as the driver's last word on a lost connection (see ``_lost``)."""
    err._ipi_final = True
    return err


def _readable(sock) -> bool:
    try:
        return bool(select.select([sock], [], [], 0.0)[0])
    except (OSError, ValueError):      # closed meanwhile
        return False


def _close(sock) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
