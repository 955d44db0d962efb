"""``auditor demo``: broker, topics, keys, a realistic stream, the daemon and a live summary."""

from __future__ import annotations

import argparse
import itertools
import logging
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import TextIO

from prometheus_client import CollectorRegistry

from auditor.config import load_config
from auditor.errors import ConfigError
from auditor.events.model import Event
from auditor.ledger.model import FactType
from auditor.policy import CompiledPack, Verdict
from auditor.stream.processor import BatchResult
from auditor.stream.runner import Daemon
from auditor.trail.record import LedgerRead


class LiveSummary:
    """Counts what the daemon committed and prints a status line (in place on a terminal)."""

    def __init__(self, total: int, out: TextIO = sys.stdout, packs: dict[str, CompiledPack] | None = None) -> None:
        self.total, self.out = total, out
        #: the packs, to judge ledger-read violations again without the ledger (what only it caught)
        self.packs = packs or {}
        self.ledger_only: Counter[str] = Counter()
        self.corrections: dict[str, int] = {}
        self.audited = 0
        self.verdicts: Counter[str] = Counter()
        self.rules: Counter[str] = Counter()
        self.dead: Counter[str] = Counter()
        self.started = time.monotonic()
        self.last_print = 0.0
        self.tty = out.isatty()
        self.done = threading.Event()

    @property
    def processed(self) -> int:
        return self.audited + sum(self.dead.values())

    def on_batch(self, r: BatchResult) -> None:
        self.audited += len(r.audited)
        self.verdicts.update(v for _, _, v in r.audited)
        self.rules.update(rule for _, rule, _, _, _ in r.violations)
        self.dead.update(r.dead_letters)
        if self.packs:
            self._ledger_only(r)
        now = time.monotonic()
        if self.processed >= self.total:
            self.done.set()
        if now - self.last_print >= (0.5 if self.tty else 3.0) or self.done.is_set():
            self.last_print = now
            self.print_line()

    def _ledger_only(self, r: BatchResult) -> None:
        """Violations whose event, judged on its own claims, is allowed: only the ledger caught them."""
        from auditor.policy import evaluate
        from auditor.trail.record import record_to_event

        for record, *_ in r.sealed:
            if record.ledger is None or not record.ledger.reads or record.decision is None \
                    or record.decision.verdict is not Verdict.VIOLATION:
                continue
            pack = self.packs.get(record.decision.pack_id)
            if pack is None or evaluate(record_to_event(record), pack).verdict is not Verdict.ALLOW:
                continue
            self.ledger_only[_why(record.ledger.reads)] += 1

    def rate(self) -> float:
        return self.processed / max(1e-9, time.monotonic() - self.started)

    def print_line(self) -> None:
        top = ", ".join(f"{r.split('.', 1)[-1]}={n}" for r, n in self.rules.most_common(3))
        line = (f"{self.processed:>8}/{self.total} events  {self.rate():>8.0f} ev/s  "
                f"ALLOW {self.verdicts['ALLOW']}  VIOLATION {self.verdicts['VIOLATION']}  "
                f"dead letters {sum(self.dead.values())}  top rules: {top}")
        if self.tty:
            self.out.write("\r" + line[:160].ljust(160))
        else:
            self.out.write(line + "\n")
        self.out.flush()

    def report(self) -> str:
        lines = [f"audited {self.audited} events in {time.monotonic() - self.started:.1f}s "
                 f"({self.rate():.0f} events/s): {self.verdicts['ALLOW']} ALLOW, "
                 f"{self.verdicts['VIOLATION']} VIOLATION; {sum(self.dead.values())} dead letters "
                 f"({', '.join(f'{k} {v}' for k, v in self.dead.most_common()) or 'none'})",
                 "violations by rule:"]
        lines += [f"  {n:>7}  {rule}" for rule, n in self.rules.most_common(12)]
        if len(self.rules) > 12:
            lines.append(f"  ... and {len(self.rules) - 12} more rules (auditor replay --stats shows all)")
        if self.packs:
            lines.append(f"violations only the subject ledger could catch (the events' own claims said yes): "
                         f"{sum(self.ledger_only.values())}")
            lines += [f"  {n:>7}  {why}" for why, n in self.ledger_only.most_common()]
            changed, same = self.corrections.get("true", 0), self.corrections.get("false", 0)
            lines.append(f"late facts (produced after the events were audited): {changed + same} CORRECTION "
                         f"record(s), {changed} of them changed the verdict")
        return "\n".join(lines)


_WHY: dict[tuple[str, object], str] = {
    ("consent", False): "consent withdrawn before the event", ("opt_out", True): "opted out of marketing",
    ("account_closed", True): "account closed", ("deletion_requested", True): "deletion requested",
    ("guardian_consent", False): "guardian consent withdrawn", ("service_active", False): "service ended"}


def _why(reads: tuple[LedgerRead, ...]) -> str:
    for r in reads:
        why = _WHY.get((r.question, r.value))
        if why is not None:
            return why
    return "a recorded birth date (minor)"


def run_demo(args: argparse.Namespace) -> int:
    from auditor.localkafka.broker import LocalKafka
    from auditor.policy import load_pack
    from auditor.stream.app import build_daemon, create_topics
    from auditor.stream.generate import ledger_stream, stream
    from auditor.stream.produce import produce
    from auditor.stream.topics import set_config
    from auditor.trail.keys import KeyRing

    if args.events < 1:
        raise ConfigError("--events must be at least 1")
    # A fresh broker makes librdkafka warn while its coordinator loads; harmless, and noise here.
    logging.getLogger("librdkafka").setLevel(logging.ERROR)
    say = lambda msg: print(f"[demo] {msg}", flush=True)  # noqa: E731
    work = args.workdir.absolute()
    keys_dir = work / "keys"
    if not (keys_dir / "keys.json").exists():
        KeyRing.generate(keys_dir)
        say(f"generated keys in {keys_dir}")
    run_dir = work / datetime.now(UTC).strftime("run-%Y%m%dT%H%M%SZ")
    trail_dir = run_dir / "trail"
    broker = None
    daemon = None
    try:
        if args.bootstrap_servers:
            bootstrap = args.bootstrap_servers
        else:
            say("starting a local Apache Kafka broker (the first run fetches its jars with Maven)...")
            broker = LocalKafka(progress=lambda m: say(m)).start()
            bootstrap = broker.bootstrap_servers
            say(f"broker up at {bootstrap} in {broker.startup_seconds:.1f}s")
        suffix = run_dir.name.removeprefix("run-").lower()
        cfg = load_config(overrides={
            "kafka.bootstrap_servers": bootstrap, "kafka.group_id": f"auditor-demo-{suffix}",
            "topics.events": [f"demo.privacy-events.{suffix}"], "topics.audit": f"demo.audit.{suffix}",
            "topics.violations": f"demo.violations.{suffix}", "topics.dead_letter": f"demo.dead-letter.{suffix}",
            "keys_dir": str(keys_dir), "trail_dir": str(trail_dir), "http.port": args.http_port,
            "instance_id": "demo-1", "checkpoint.every": 5000, "checkpoint.seconds": 5,
            "topics.facts": f"demo.subject-facts.{suffix}", "ledger.dir": str(run_dir / "ledger"),
        })
        create_topics(cfg, 3)
        # the demo's facts are a made-up history produced now: taken on their recorded_at (CreateTime), not
        # from when the broker logged them (what `auditor topics create` sets: LogAppendTime)
        set_config(cfg.admin_conf(), cfg.topics.facts, {"message.timestamp.type": "CreateTime"})
        say(f"topics: {cfg.topics.events[0]} -> {cfg.topics.audit}, {cfg.topics.violations}, "
            f"{cfg.topics.dead_letter} (3 partitions)")
        packs = [load_pack(p) for p in cfg.packs]
        summary = LiveSummary(args.events, packs={p.id: p for p in packs})
        # a fifth of the events concern customers whose consent, opt-outs and accounts the systems of
        # record publish as subject facts; a third of the withdrawals, opt-outs and closures arrive late
        n_ledger = args.events // 5
        ledger_events, facts = ledger_stream(seed=args.seed, events=n_ledger, subjects=max(20, n_ledger // 8),
                                             subject_prefix="cust-", step=timedelta(seconds=10),
                                             start=datetime.now(UTC) - timedelta(seconds=10 * n_ledger))
        late = [f for i, f in enumerate(facts) if f.type is not FactType.CONSENT_GRANTED and i % 3 == 0]
        on_time = [f for f in facts if f not in late]
        items: list[Event | bytes] = []
        more = iter(ledger_events)
        for i, item in enumerate(itertools.islice(stream(packs, seed=args.seed), args.events - n_ledger)):
            items.append(item)
            if i % 4 == 3:
                items.extend(itertools.islice(more, 1))
        items.extend(more)
        produce(bootstrap, cfg.topics.facts, on_time, properties=cfg.kafka.properties)
        say(f"subject facts: {len(on_time)} to {cfg.topics.facts} now (consent granted and withdrawn, "
            f"marketing opt-outs, accounts closed), {len(late)} late, once their events are audited")
        producer = threading.Thread(target=produce, args=(bootstrap, cfg.topics.events[0], items),
                                    kwargs={"properties": cfg.kafka.properties}, daemon=True)
        producer.start()
        say(f"producing {len(items)} events for {', '.join(p.id for p in packs)} "
            "(mostly compliant, some violations of each kind, a few malformed)")
        daemon = running = build_daemon(cfg, on_batch=summary.on_batch)
        registry = daemon.metrics.registry

        def stop(signum: int, frame: FrameType | None) -> None:
            running.request_stop(signum)

        def stop_when_done() -> None:
            summary.done.wait()
            produce(bootstrap, cfg.topics.facts, late, properties=cfg.kafka.properties)
            settle_corrections(registry, len(facts), summary)
            running.request_stop()

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        if not args.keep_running:
            threading.Thread(target=stop_when_done, daemon=True).start()
        def started(d: Daemon) -> None:
            port = d.http.port if d.http is not None else args.http_port
            say(f"daemon running; metrics on http://localhost:{port}/metrics"
                + ("  (Ctrl-C to stop)" if args.keep_running else ""))

        daemon.on_started = started
        code = daemon.run()
        if summary.tty:
            print()
        print(summary.report())
        if code != 0:
            return code
        return _verify_and_point(trail_dir, keys_dir, cfg.topics.audit, say, args.http_port)
    finally:
        if daemon is not None:
            daemon.close()
        if broker is not None:
            broker.stop()
            say("local broker stopped and removed")


def settle_corrections(registry: CollectorRegistry, facts: int, summary: LiveSummary, timeout: float = 60.0) -> None:
    """Wait until the daemon has applied every fact and its corrections stop changing."""
    def sample(name: str, labels: dict[str, str] | None = None) -> float:
        return registry.get_sample_value(name, labels or {}) or 0.0

    deadline = time.monotonic() + timeout
    last, quiet_since = None, time.monotonic()
    while time.monotonic() < deadline:
        counts = {changed: int(sum(s.value for m in registry.collect() if m.name == "auditor_ledger_corrections"
                                   for s in m.samples if s.name.endswith("_total")
                                   and s.labels.get("verdict_changed") == changed))
                  for changed in ("true", "false")}
        if counts != last:
            last, quiet_since = counts, time.monotonic()
        summary.corrections = counts
        if sample("auditor_ledger_facts_total") >= facts and time.monotonic() - quiet_since > 2.0:
            return
        time.sleep(0.2)


def _keep_running_hint(http_port: int) -> str:
    if http_port == 0:
        return "auditor demo --keep-running      then open the metrics URL it prints (Prometheus scrape target)"
    flag = "" if http_port == 9400 else f" --http-port {http_port}"
    return (f"auditor demo --keep-running{flag}      then open http://localhost:{http_port}/metrics "
            "(Prometheus scrape target)")


def _verify_and_point(trail_dir: Path, keys_dir: Path, audit_topic: str, say: Callable[[str], None],
                      http_port: int = 9400) -> int:
    from auditor.trail.keys import KeyRing
    from auditor.trail.verify import verify_trail

    report = verify_trail(trail_dir, KeyRing.load(keys_dir).verifier)
    status = "intact" if report.ok else f"NOT intact: {len(report.issues)} issues"
    say(f"trail copy {trail_dir}: {report.records} records in {len(report.chains)} chains, "
        f"{report.checkpoints} signed checkpoints, {status}")
    print(f"""
where to look next:
  auditor verify {trail_dir} --pubkey {keys_dir}/signing.pub
  auditor replay {trail_dir} --keys {keys_dir} --stats
  auditor replay {trail_dir} --keys {keys_dir} --verdict VIOLATION --format table | head
  auditor replay {trail_dir} --keys {keys_dir} --reevaluate --policy ./my-pack.yaml
  auditor evidence {trail_dir} --event-id EVENT_ID --keys {keys_dir} --out evidence.zip
  auditor verify-evidence evidence.zip --pubkey {keys_dir}/signing.pub      # offline, nothing else needed
  {_keep_running_hint(http_port)}
  docs: README.md sections 'Policy language', 'Operating auditor'; alerts: deploy/RUNBOOK.md""")
    return 0 if report.ok else 1
