"""Send the daemon's checkpoints to witnesses without blocking the hot path.

The main loop only calls :meth:`WitnessPusher.offer` after a transaction committed: a bounded
queue (``trail.witness_queue`` checkpoints and :data:`MAX_QUEUE_BYTES`; when it is full the oldest
entry is dropped and counted as ``auditor_witness_failures_total{reason="dropped"}``). One side
thread drains the queue, keeps per chain what it needs to prove consistency from any size a
witness may hold (the compact range at the oldest size some witness has not moved past, plus the record hashes since; at
most :data:`MAX_LEAF_BYTES`), and sends each chain's latest checkpoint to every witness
(:class:`~auditor.witness.client.WitnessClient`; a witness answering 409 with its size gets a
proof from there). Cosignatures go to the checkpoint topic as ``cosigned`` messages (a plain
idempotent producer: they are verified with the witness key, not trusted for where they are).

A witness holding a size older than that (after a restart, or a partition that moved between
instances) gets a proof from its size built from the topics: the compact range stored with the
checkpoint of that size and the record hashes since (:func:`auditor.stream.chainrestore.history_since`).

Failures (unreachable, refused, an invalid answer) are counted per witness and reason and
retried with the next checkpoint; they never slow the daemon down. ``auditor_witness_behind_seconds``
says, per witness, how long the oldest checkpoint it has not cosigned has waited (over every chain:
a witness refusing one chain while cosigning the others is behind too). When the topics no longer
hold that history (records deleted), ``auditor witness push`` on the daemon's file copy
(``trail_dir``) proves from its records; the daemon carries on from the size the witness holds.
"""

from __future__ import annotations

import functools
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from auditor.config import Config
from auditor.errors import AuditorError, ConfigError
from auditor.logging import get_logger
from auditor.metrics import Metrics
from auditor.trail.chainlog import checkpoint_message
from auditor.trail.checkpoint import Checkpoint, StoredCheckpoint
from auditor.trail.merkle import MerkleRange, RangeNodes, consistency_proof, root_from_range
from auditor.trail.note import CosignatureVerifier, Note, parse_vkey
from auditor.witness.client import WitnessClient, WitnessError

if TYPE_CHECKING:
    from confluent_kafka import Producer

    from auditor.stream.checkpointing import Pending

log = get_logger("auditor.witness")

History = Callable[[str, int, int], tuple[tuple[bytes, ...], list[bytes]]]

#: memory for the record hashes kept per chain for proofs while a witness lags (about 420,000 records)
MAX_LEAF_BYTES = 32 * 1024 * 1024
#: bound of the checkpoints queued for the side thread, in estimated bytes (a frozen witness must not
#: make the queue hold trail.witness_queue whole batches of record hashes: 10,000 x 500 x 74 B = 370 MB)
MAX_QUEUE_BYTES = 64 * 1024 * 1024
#: what one queued record hash keeps alive (a 32-byte bytes object and its slot: 74 B measured)
LEAF_COST = 80


def queued_bytes(p: Pending) -> int:
    """The estimated memory one queued checkpoint keeps alive."""
    return 400 + LEAF_COST * len(p.leaves) + 40 * len(p.prev_roots) + len(p.stored.note)


@dataclass
class _Chain:
    """What the thread can prove from: the compact range at ``base`` and the leaves after it."""

    base: int
    roots: tuple[bytes, ...]
    leaves: list[bytes] = field(default_factory=list)
    latest: StoredCheckpoint | None = None
    partition: int = 0
    sent: dict[str, int] = field(default_factory=dict)  # witness url -> size it holds (as far as we know)

    @property
    def size(self) -> int:
        return self.base + len(self.leaves)

    def add(self, p: Pending) -> bool:
        """Take in one checkpoint; False when it does not continue what is known (a drop)."""
        joined = p.stored.prev_size == self.size
        if not joined:
            self.base, self.roots, self.leaves = p.stored.prev_size, p.prev_roots, []
        self.leaves.extend(p.leaves)
        self.latest, self.partition = p.stored, p.partition
        # keep the newest; older witness sizes become unprovable (each hash costs LEAF_COST, not 32 B)
        if len(self.leaves) * LEAF_COST > MAX_LEAF_BYTES:
            self.rebase(self.size - MAX_LEAF_BYTES // (2 * LEAF_COST))
        return joined

    def extend_back(self, old: int, roots: tuple[bytes, ...], leaves: list[bytes]) -> None:
        _extend_back(self, old, roots, leaves)

    def rebase(self, size: int) -> None:
        """Forget the leaves before ``size`` (no witness needs a proof from before it)."""
        if size <= self.base:
            return
        rng = _range_at(self.base, self.roots)
        rng.extend(self.leaves[:size - self.base])
        self.base, self.roots, self.leaves = size, rng.subtree_roots, self.leaves[size - self.base:]

    def proof_from(self, old: int, new: int, history: History | None = None, chain_id: str = "") -> list[bytes]:
        if old < self.base and history is not None and self.base > 0:
            self.extend_back(old, *history(chain_id, old, self.base))
        if old < self.base:
            raise WitnessError(f"the witness holds size {old}, older than the {self.base} this daemon can prove "
                               "from: advance it with auditor witness push")
        rng = _range_at(self.base, self.roots)
        rng.extend(self.leaves[:old - self.base])
        since = self.leaves[old - self.base:new - self.base]
        return consistency_proof(old, new, RangeNodes(old, rng.subtree_roots, since))


def _extend_back(chain: _Chain, old: int, roots: tuple[bytes, ...], leaves: list[bytes]) -> None:
    """Take in the history ``old`` .. ``chain.base`` read from the topics, if it leads to what is known."""
    rng = _range_at(old, roots)
    rng.extend(leaves)
    if rng.subtree_roots != chain.roots or rng.size != chain.base:
        raise WitnessError(f"the records from size {old} in the audit topic do not lead to the signed checkpoint "
                           f"of size {chain.base}")
    chain.base, chain.roots, chain.leaves = old, roots, list(leaves) + chain.leaves


def _range_at(size: int, roots: tuple[bytes, ...]) -> MerkleRange:
    root = root_from_range(size, roots) if size else None
    return MerkleRange.restore(size, roots, root) if root is not None else MerkleRange()


class WitnessPusher:
    def __init__(self, clients: list[WitnessClient], metrics: Metrics, producer: Producer | None, topic: str,
                 max_queue: int, max_queue_bytes: int = MAX_QUEUE_BYTES) -> None:
        self.clients = clients
        self.metrics = metrics
        self.producer = producer
        self.topic = topic
        self.queue: deque[Pending] = deque()
        self.max_queue = max_queue
        self.max_queue_bytes = max_queue_bytes
        #: how long close() waits for the queue to drain (build_pusher: a quarter of shutdown_timeout_s)
        self.close_timeout = 10.0
        self.queue_bytes = 0
        self.chains: dict[str, _Chain] = {}
        self.cond = threading.Condition()
        #: witness url -> chain -> when the oldest checkpoint that witness has not cosigned was offered
        self.since: dict[str, dict[str, float]] = {c.url: {} for c in clients}
        self._offered: dict[int, float] = {}   # id(Pending) -> when offered, for the queued ones
        for c in clients:
            metrics.witness_behind.labels(c.url).set_function(functools.partial(self.behind, c.url))
        self.stopping = False
        self.busy = False
        #: (chain, old size, known size) -> (compact range at old, record hashes old..known), from the topics
        self.history: History | None = None
        self.thread = threading.Thread(target=self._run, name="auditor-witness", daemon=True)
        self.thread.start()

    def offer(self, p: Pending) -> None:
        """From the main loop: never blocks on a witness."""
        now = time.monotonic()
        size = queued_bytes(p)
        with self.cond:
            while self.queue and (len(self.queue) >= self.max_queue
                                  or self.queue_bytes + size > self.max_queue_bytes):
                old = self.queue.popleft()
                self.queue_bytes -= queued_bytes(old)
                self._offered.pop(id(old), None)
                for c in self.clients:
                    self.metrics.witness_failures.labels(c.url, "dropped").inc()
            self.queue.append(p)
            self.queue_bytes += size
            self._offered[id(p)] = now
            for chains in self.since.values():
                chains.setdefault(p.chain_id, now)
            self.cond.notify()

    def behind(self, url: str) -> float:
        """Seconds since the oldest checkpoint witness ``url`` has not cosigned was offered (0: none)."""
        with self.cond:
            oldest = min(self.since[url].values(), default=None)
        return 0.0 if oldest is None else max(0.0, time.monotonic() - oldest)

    def forget(self, chain_ids: list[str]) -> None:
        """Chains this instance no longer owns: their witnessing is the new owner's to report."""
        with self.cond:
            for chains in self.since.values():
                for c in chain_ids:
                    chains.pop(c, None)

    def _cosigned(self, url: str, chain_id: str) -> None:
        """``url`` cosigned the latest checkpoint of ``chain_id`` taken in: behind from the next queued one."""
        with self.cond:
            queued = [self._offered.get(id(p), 0.0) for p in self.queue if p.chain_id == chain_id]
            if queued:
                self.since[url][chain_id] = min(queued)
            else:
                self.since[url].pop(chain_id, None)

    def close(self, timeout: float | None = None) -> None:
        """Send what is queued (bounded by ``timeout``, default :attr:`close_timeout`), then stop the
        thread. A frozen witness must not stretch the daemon's shutdown: what is not sent now is sent
        on the next start, from the size the witness holds."""
        deadline = time.monotonic() + (self.close_timeout if timeout is None else timeout)
        with self.cond:
            while (self.queue or self.busy) and time.monotonic() < deadline:
                self.cond.wait(0.05)
            self.stopping = True
            self.cond.notify_all()
        self.thread.join(max(0.1, deadline - time.monotonic()))
        if self.producer is not None:
            self.producer.flush(max(0.5, deadline - time.monotonic()))

    # ------------------------------------------------------------------ the side thread
    def _run(self) -> None:
        while True:
            with self.cond:
                while not self.queue and not self.stopping:
                    self.cond.wait(1.0)
                if self.stopping:
                    return
                items = list(self.queue)
                self.queue.clear()
                self.queue_bytes = 0
                self._offered.clear()
                self.busy = True
            try:
                self._push(items)
            except Exception as exc:  # noqa: BLE001 - the side thread must outlive any bug in one push
                log.error("witness thread error", error=f"{type(exc).__name__}: {exc}")
                for c in self.clients:
                    self.metrics.witness_failures.labels(c.url, "error").inc()
            finally:
                with self.cond:
                    self.busy = False
                    self.cond.notify_all()

    def _push(self, items: list[Pending]) -> None:
        touched: list[str] = []
        for p in items:
            chain = self.chains.get(p.chain_id)
            if chain is None:
                chain = self.chains[p.chain_id] = _Chain(p.stored.prev_size, p.prev_roots)
            chain.add(p)
            if p.chain_id not in touched:
                touched.append(p.chain_id)
        for chain_id in touched:
            self._send(chain_id, self.chains[chain_id])

    def _send(self, chain_id: str, chain: _Chain) -> None:
        stored = chain.latest
        assert stored is not None
        note = Note.parse(stored.note)
        cp = Checkpoint.parse(note.text)
        sigs = []
        for client in self.clients:
            if chain.sent.get(client.url) is not None:
                client.known[cp.origin] = chain.sent[client.url]
            else:
                client.known.setdefault(cp.origin, stored.prev_size)
            try:
                got = client.cosign(stored.note, cp.origin, cp.size,
                                    lambda old: chain.proof_from(old, cp.size, self.history, chain_id))
            except (WitnessError, AuditorError) as exc:
                status = getattr(exc, "status", None)
                reason = "unreachable" if status is None and "unreachable" in str(exc) else "refused"
                self.metrics.witness_failures.labels(client.url, reason).inc()
                log.warning("witness did not cosign", witness=client.url, chain=chain_id, size=cp.size,
                            error=str(exc))
                continue
            except Exception as exc:  # noqa: BLE001 - one witness's fault never keeps the others from cosigning
                self.metrics.witness_failures.labels(client.url, "error").inc()
                log.error("witness push error", witness=client.url, chain=chain_id, size=cp.size,
                          error=f"{type(exc).__name__}: {exc}")
                continue
            chain.sent[client.url] = cp.size
            sigs.extend(got)
            self.metrics.witness_cosigned.labels(client.url).inc()
            self._cosigned(client.url, chain_id)
        if len(chain.sent) == len(self.clients):
            chain.rebase(min(chain.sent.values()))
        if sigs and self.producer is not None:
            cosigned = StoredCheckpoint(note.with_signatures(sigs).to_bytes())
            key, value, headers = checkpoint_message(cosigned, cosigned=True)
            self.producer.produce(self.topic, value, key, chain.partition, headers=list(headers))
            self.producer.poll(0)


def build_pusher(cfg: Config, metrics: Metrics) -> WitnessPusher | None:
    """The witness thread for ``trail.witnesses`` (None when there are none)."""
    if not cfg.trail.witnesses:
        return None
    from confluent_kafka import Producer

    keys = [_witness_key(p) for p in cfg.trail.witness_keys]
    clients = [WitnessClient(url, key) for url, key in zip(cfg.trail.witnesses, keys, strict=True)]
    conf: dict[str, Any] = {**cfg.client_conf(), "client.id": f"auditor-{cfg.instance_id}-witness",
                            "enable.idempotence": True, "acks": "all", "linger.ms": 50}
    pusher = WitnessPusher(clients, metrics, Producer(conf), cfg.checkpoint_topic, cfg.trail.witness_queue)
    pusher.close_timeout = min(10.0, cfg.shutdown_timeout_s / 4)
    return pusher


def _witness_key(path: Path) -> CosignatureVerifier:
    """The witness public key in a vkey file (its first line that is not a comment)."""
    try:
        lines = [ln for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
        v = parse_vkey(lines[0])
    except (OSError, IndexError, ValueError) as exc:
        raise ConfigError(f"trail.witness_keys: {path} is not a readable witness vkey file ({exc})") from exc
    return v if isinstance(v, CosignatureVerifier) else CosignatureVerifier(v.name, v.public)
