"""attx: the broker comes back at another address while the daemon runs, and the daemon reaches the
cluster through a bootstrap address that stays the same (a load balancer or a Kubernetes Service in
front of the brokers; here a TCP forwarder the test points at the broker's new port).

c7d6312 (txnwake) set the producer's ``metadata.recovery.strategy`` to ``none``: with it, a producer
whose every known broker is gone never asks the bootstrap address again (librdkafka >= 2.10 forgets the
bootstrap brokers once it has learnt the cluster's). The consumer and the admin clients keep the default
(re-bootstrap). The audit must move again within a bound: recovered, or after an exit with the daemon's
own code and a restart."""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
import time

import pytest
from daemonkit import Feeder, PacedFeeder, make_setup
from faultkit import (
    Expect,
    Supervisor,
    assert_trail_intact,
    committed_count,
    configure,
    drain_and_stop,
    endless,
    wait_audited,
)

from auditor.localkafka.net import _free_port, _properties_text

pytestmark = [pytest.mark.faults, pytest.mark.kafka]

RECOVERY_S = 150


class Forwarder:
    """A TCP forwarder on a port of its own to ``target_port`` (which the test may move): new
    connections go to the current target, and moving it drops the connections to the old one."""

    def __init__(self, host: str, target_port: int) -> None:
        self.host, self.target_port = host, target_port
        self.listener = socket.create_server((host, 0))
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]
        self._moved = threading.Event()
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, name="forwarder", daemon=True)

    def start(self) -> Forwarder:
        self._thread.start()
        return self

    def move(self, target_port: int) -> None:
        self.target_port = target_port
        self._moved.set()

    def close(self) -> None:
        self._halt.set()
        self._thread.join(5)
        self.listener.close()

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self.listener, selectors.EVENT_READ)
        peers: dict[socket.socket, socket.socket] = {}

        def drop(*socks: socket.socket) -> None:
            for x in socks:
                peers.pop(x, None)
                with contextlib.suppress(KeyError, ValueError):
                    sel.unregister(x)
                x.close()

        while not self._halt.is_set():
            if self._moved.is_set():
                self._moved.clear()
                drop(*list(peers))
            for key, _ in sel.select(0.2):
                s = key.fileobj
                assert isinstance(s, socket.socket)
                if s is self.listener:
                    try:
                        client, _ = s.accept()
                    except OSError:
                        continue
                    try:
                        upstream = socket.create_connection((self.host, self.target_port), timeout=2)
                    except OSError:
                        client.close()  # nothing listens there now: the client sees the connection closed
                        continue
                    peers[client], peers[upstream] = upstream, client
                    sel.register(client, selectors.EVENT_READ)
                    sel.register(upstream, selectors.EVENT_READ)
                    continue
                other = peers.get(s)
                if other is None:
                    continue
                try:
                    data = s.recv(65536)
                    if data:
                        other.sendall(data)  # blocking: a slow peer slows this forwarder down, nothing is lost
                except OSError:
                    data = b""
                if not data:
                    drop(s, other)
        drop(*list(peers))
        sel.close()


def test_broker_back_at_another_port_behind_the_same_bootstrap_address(own_broker, tmp_path):
    fwd = Forwarder(own_broker.host, own_broker.broker_port).start()
    bootstrap = f"{own_broker.host}:{fwd.port}"  # every client of the test and the daemon goes through it
    setup = make_setup(tmp_path, bootstrap, partitions=3, trail=True, batch_max_events=200)
    configure(setup, {"watchdog": {"stall_timeout_s": 60}})
    feed = PacedFeeder(Feeder(bootstrap, setup.events), iter(endless(46)), rate=200)
    sup = Supervisor(setup, "broker-moved")
    try:
        sup.current.wait_ready(90)
        feed.start()
        wait_audited(setup, 600, 90, "before the fault", describe=sup.describe)
        own_broker.kill()
        assert own_broker.work_dir is not None
        own_broker.broker_port = _free_port(own_broker.host)  # the same node, data and controller, a new port
        (own_broker.work_dir / "server.properties").write_text(_properties_text(own_broker.server_properties()))
        own_broker.restart()
        fwd.move(own_broker.broker_port)
        back = time.monotonic()
        before = committed_count(bootstrap, setup.audit)
        wait_audited(setup, before + 400, RECOVERY_S, "after the broker came back at another port",
                     describe=sup.describe)
        print(f"audit moved again {time.monotonic() - back:.1f} s after the broker was back; exits {sup.exits}",
              flush=True)
        assert feed.flowing, "the feeder stopped before the audit moved again"
        sent = drain_and_stop(setup, feed, sup, RECOVERY_S)
        sup.assert_exits_documented()
    finally:
        feed.halt.set()
        sup.kill_all()
    try:
        assert sup.trail_dir is not None
        assert_trail_intact(setup, Expect(sent, setup.events), file_copies=[sup.trail_dir])
    finally:
        fwd.close()
