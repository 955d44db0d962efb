"""The daemon's signed checkpoints: every transaction that carries audit records carries the
signed checkpoint that covers them, produced to the checkpoint topic (``<audit>.checkpoints``).

:class:`Checkpointer` keeps a :class:`~auditor.trail.chainlog.ChainLog` per chain the instance
owns. It follows the records the processor sealed (their hashes and seqs must continue the
chain exactly), and returns one checkpoint message per chain the batch touched, for the same
transaction. When the transaction commits the logs are kept (and the checkpoints handed to the
witness thread, if any); when it aborts they go back to what the topic holds.

Restoring a chain on assignment (:func:`judge`, pure; the reads are in
:mod:`auditor.stream.chainrestore`) starts from the chain's last **valid signed checkpoint**,
never from an unsigned record: the last record of the chain in the audit topic must be the one
the checkpoint signs (its ``head``). A record beyond it, correctly linked or not, was appended
outside the auditor's transactions: it is reported as forged (log line, metric
``auditor_trail_forged_total``) and the chain continues from the checkpoint, so the forged
record is never extended, back-filled or signed over (``auditor verify`` names it). A chain
whose records are gone (retention, deletion) continues from its checkpoint, never from a new
genesis; only a chain with neither a checkpoint nor a record starts at genesis.

A chain with records but no signed checkpoint at all is **unsigned**: written by an auditor from
before signed checkpoints (a trail to upgrade), or appended by someone else. The daemon cannot
tell which, and continuing it or starting a second genesis next to it would both be wrong, so it
refuses to run (exit 2, :class:`UnsignedChains`) unless ``trail.adopt_unsigned_chains`` is set:
then it reads the chain from its first record, checks every hash and link from genesis, and
signs it in its next transaction (metric ``auditor_trail_adopted_unsigned_total``, an alert).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import groupby
from operator import attrgetter
from typing import TYPE_CHECKING

from auditor.config import Config
from auditor.errors import ConfigError, TrailCorruption
from auditor.metrics import Metrics
from auditor.stream.processor import BatchResult, Outgoing
from auditor.trail import chainid
from auditor.trail.chainlog import ChainLog, checkpoint_message
from auditor.trail.checkpoint import SignedCheckpoint, StoredCheckpoint
from auditor.trail.keys import KeyRing, Signer, Verifier
from auditor.trail.record import AuditRecord

if TYPE_CHECKING:
    from auditor.stream.witnessing import WitnessPusher


_CHAIN_ID = attrgetter("chain_id")


def audit_partition_of(chain_id: str, audit_partitions: int) -> int:
    """The audit partition of a chain ``<topic>/<partition>`` (:mod:`auditor.trail.chainid`)."""
    return chainid.audit_partition_of_chain(chain_id, audit_partitions)


@dataclass(frozen=True)
class Pending:
    """A checkpoint made for the current transaction, and what a witness push needs from before it."""

    chain_id: str
    stored: StoredCheckpoint
    prev_roots: tuple[bytes, ...]
    leaves: tuple[bytes, ...]
    partition: int = 0


class Checkpointer:
    """Chain logs of the chains this instance owns; checkpoint messages for each transaction."""

    def __init__(self, signer: Signer, verifier: Verifier, topic: str, *, audit_partitions: int = 1,
                 partitions: int = 1, clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 witness: WitnessPusher | None = None) -> None:
        self.signer = signer
        self.verifier = verifier
        self.topic = topic
        self.audit_partitions = audit_partitions
        self.partitions = partitions
        self.clock = clock
        self.witness = witness
        self.logs: dict[str, ChainLog] = {}
        self._saved: dict[str, ChainLog] = {}
        self._pending: list[Pending] = []
        #: adopted chains no checkpoint signs yet: signed in the next transaction, whatever it carries
        self.unsigned: set[str] = set()

    # ------------------------------------------------------------------ chains
    def adopt(self, log: ChainLog) -> None:
        self.logs[log.chain_id] = log

    def forget(self, chain_ids: Iterable[str]) -> None:
        chain_ids = list(chain_ids)
        for c in chain_ids:
            self.logs.pop(c, None)
            self._saved.pop(c, None)
            self.unsigned.discard(c)
        if self.witness is not None:
            self.witness.forget(chain_ids)

    def partition_of(self, chain_id: str) -> int:
        return chainid.checkpoint_partition(audit_partition_of(chain_id, self.audit_partitions), self.partitions)

    # ------------------------------------------------------------------ one transaction
    def seal(self, result: BatchResult) -> list[Outgoing]:
        """Follow the batch's sealed records; the checkpoint messages that cover them."""
        touched = self._follow(result.sealed)
        for chain in sorted(self.unsigned - touched.keys()):
            if chain in self.logs:
                self._saved[chain] = self.logs[chain].copy()
                touched[chain] = self.logs[chain]
        now = self.clock()
        out = []
        for chain, log in touched.items():
            prev_roots, leaves = log.cp_roots, tuple(log.since)
            stored = log.checkpoint(now, self.signer)
            if self.witness is not None:
                self._pending.append(Pending(chain, stored, prev_roots, leaves, self.partition_of(chain)))
            key, value, headers = checkpoint_message(stored)
            out.append(Outgoing(self.topic, self.partition_of(chain), key, value, tuple(headers)))
        return out

    def _follow(self, sealed: Sequence[tuple[AuditRecord, int, bytes, bytes]]) -> dict[str, ChainLog]:
        """Check that the sealed records continue their chains exactly (each record's seq the next one,
        its prev hash the hash before it), then extend each chain's log by them; returns the logs touched,
        in the order the batch first touches them. The checks run per run of one chain's records (a batch
        comes a partition at a time) over columns of the batch, with no Python code per record; a batch
        that fails them is followed record by record (:meth:`_follow_each`) to name the first record wrong."""
        if not sealed:
            return {}
        records, seqs, prevs, digests = zip(*sealed, strict=True)
        logs = self.logs
        fresh: dict[str, ChainLog] = {}
        #: per chain touched: (next seq, head hash) as the batch goes, and where its runs are
        heads: dict[str, tuple[int, bytes]] = {}
        runs: dict[str, list[tuple[int, int]]] = {}
        i = 0
        for chain, run in groupby(map(_CHAIN_ID, records)):
            j = i + len(list(run))
            head = heads.get(chain)
            if head is None:
                log = logs.get(chain) or fresh.setdefault(chain, ChainLog.genesis(chain))
                head = (log.head.size, log.head.head_hash)
                runs[chain] = []
            seq = head[0]
            if prevs[i] != head[1] or prevs[i + 1:j] != digests[i:j - 1] or seqs[i:j] != tuple(range(seq, seq + j - i)):
                return self._follow_each(sealed)  # raises TrailCorruption, naming the record
            heads[chain] = (seq + j - i, digests[j - 1])
            runs[chain].append((i, j))
            i = j
        touched: dict[str, ChainLog] = {}
        for chain, spans in runs.items():
            log = logs.get(chain) or fresh[chain]
            self._saved[chain] = log.copy()
            logs[chain] = touched[chain] = log
            hashes = list(digests[spans[0][0]:spans[0][1]])
            for a, b in spans[1:]:
                hashes += digests[a:b]
            log.extend_many(log.head.size, hashes)  # the Merkle range of each chain in one step
        return touched

    def _follow_each(self, sealed: Sequence[tuple[AuditRecord, int, bytes, bytes]]) -> dict[str, ChainLog]:
        """:meth:`_follow`, one record at a time: the first record that does not continue its chain raises."""
        touched: dict[str, ChainLog] = {}
        #: per chain touched: (next seq, head hash) as the batch goes, and the batch's record hashes
        heads: dict[str, tuple[int, bytes]] = {}
        added: dict[str, list[bytes]] = {}
        for record, seq, prev, digest in sealed:
            chain = record.chain_id
            head = heads.get(chain)
            if head is None:
                log = self.logs.get(chain) or ChainLog.genesis(chain)
                self._saved[chain] = log.copy()
                self.logs[chain] = touched[chain] = log
                head, added[chain] = (log.head.size, log.head.head_hash), []
            if prev != head[1]:
                raise TrailCorruption(f"chain {chain}: record seq {seq} links to {prev.hex()[:16]}, not to the "
                                      "signed head", chain=chain, seq=seq)
            if seq != head[0]:
                raise TrailCorruption(f"chain {chain}: seq {seq} does not follow {head[0] - 1}", chain=chain, seq=seq)
            heads[chain] = (seq + 1, digest)
            added[chain].append(digest)
        for chain, hashes in added.items():  # the Merkle range of each chain in one step
            log = touched[chain]
            log.extend_many(log.head.size, hashes)
        return touched

    def commit(self) -> None:
        """The transaction committed: keep the logs, hand the checkpoints to the witness thread."""
        self.unsigned -= self._saved.keys()
        self._saved.clear()
        if self.witness is not None:
            for p in self._pending:
                self.witness.offer(p)
        self._pending.clear()

    def discard(self) -> None:
        """The transaction aborted: the chains are what the topic holds again."""
        self.logs.update(self._saved)
        self._saved.clear()
        self._pending.clear()

    def close(self) -> None:
        if self.witness is not None:
            self.witness.close()


# ---------------------------------------------------------------- restore (pure)

@dataclass(frozen=True)
class LastRecord:
    """The last record of a chain in the audit topic (by offset), and where it is."""

    seq: int
    record_hash: bytes
    where: str


@dataclass(frozen=True)
class Restored:
    """How a chain continues, and what was wrong with the topic (None: nothing)."""

    log: ChainLog
    problem: str | None = None
    forged: bool = False
    #: the source offset of the record the checkpoint signs as head (None: no record, or it is gone),
    #: for checking the head against the group's committed offset
    source_offset: int | None = None
    #: the chain has records but no signed checkpoint (``log`` is genesis): legacy or forged
    unsigned: bool = False
    #: records of an unsigned chain checked from genesis and adopted (trail.adopt_unsigned_chains)
    adopted: int = 0


class UnsignedChains(ConfigError):
    """A chain has records but no signed checkpoint, and trail.adopt_unsigned_chains is off (exit 2)."""

    def __init__(self, chain_id: str, problem: str, *, detail: str | None = None) -> None:
        super().__init__(detail or (
            f"{problem}. An auditor from before signed checkpoints wrote them (a trail to upgrade), or someone "
            "appended them outside the auditor (forged); the daemon cannot tell which, and neither continues "
            "them nor starts a second genesis next to them. Check them with `auditor verify kafka://HOST:PORT/"
            "AUDIT_TOPIC --config ...` (they show as unsigned). To adopt them, start once with "
            "trail.adopt_unsigned_chains: true (AUDITOR_TRAIL_ADOPT_UNSIGNED_CHAINS=true): the daemon checks "
            "every hash and link from genesis, signs the chain in its next transaction, counts the records "
            "(auditor_trail_adopted_unsigned_total, alert AuditorTrailAdoptedUnsigned); then remove the setting"))
        self.chain = chain_id


def judge(chain_id: str, checkpoint: tuple[SignedCheckpoint, StoredCheckpoint] | None,
          last: LastRecord | None, restore: Callable[[StoredCheckpoint], ChainLog]) -> Restored:
    """Continue ``chain_id`` from its last signed checkpoint, whatever the audit topic's tail says."""
    if checkpoint is None:
        log = ChainLog.genesis(chain_id)
        if last is None:
            return Restored(log)
        return Restored(log, f"chain {chain_id}: records up to seq {last.seq} (last at {last.where}) are covered by "
                             "no signed checkpoint", unsigned=True)
    signed, stored = checkpoint
    log = restore(stored)
    if last is None:
        if signed.size == 0:
            return Restored(log)
        return Restored(log, f"chain {chain_id}: no record left in the audit topic (retention or deletion); "
                             f"continuing from the signed checkpoint at size {signed.size}")
    if last.seq + 1 == signed.size and last.record_hash == signed.head.head_hash:
        return Restored(log)
    return Restored(log, f"chain {chain_id}: the last record in the audit topic (seq {last.seq} at {last.where}) is "
                         f"not the head of the last signed checkpoint (size {signed.size}): it was appended outside "
                         "the auditor's transactions (forged); continuing from the signed checkpoint, never from "
                         "the forged record", forged=True)


def build_checkpointer(cfg: Config, keys: KeyRing, metrics: Metrics) -> Checkpointer:
    """The daemon's checkpointer (and witness thread, when witnesses are configured)."""
    from auditor.stream.witnessing import build_pusher

    pusher = build_pusher(cfg, metrics)
    checkpointer = Checkpointer(keys.signer, keys.verifier, cfg.checkpoint_topic, witness=pusher)
    if pusher is not None:
        def history(chain: str, old: int, new: int) -> tuple[tuple[bytes, ...], list[bytes]]:
            from auditor.stream.chainrestore import history_since

            audit_partition = audit_partition_of(chain, checkpointer.audit_partitions)
            return history_since(cfg.admin_conf(), cfg.topics.audit, audit_partition, cfg.checkpoint_topic,
                                 chainid.checkpoint_partition(audit_partition, checkpointer.partitions), chain,
                                 keys.signer.name,
                                 keys.verifier, old, new)

        pusher.history = history
    return checkpointer
