"""``auditor run``, ``auditor demo``, ``auditor produce`` and ``auditor topics``: the Kafka side."""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

from auditor.cli.boundary import SkipBad, non_negative_int, note, positive_int
from auditor.config import Config, load_config
from auditor.errors import ConfigError
from auditor.exitcodes import daemon_exit_status
from auditor.logging import get_logger

if TYPE_CHECKING:
    pass

RUN_HELP = """\
Run the auditor daemon: consume events from Kafka, judge each against its policy pack, and
write one audit record per event (and per rejected input) to the audit topic, violations to
the violations topic and undecodable input to the dead-letter topic, exactly once, in Kafka
transactions together with the consumed offsets.

Configuration comes from --config FILE (YAML, see deploy/auditor.example.yaml) and AUDITOR_*
environment variables, which win. Metrics, /healthz and /readyz are served on http.port.
SIGTERM or Ctrl-C finishes the current batch, commits, leaves the group and exits 0.

examples:
  auditor run --config /etc/auditor/auditor.yaml
  AUDITOR_KAFKA_BOOTSTRAP_SERVERS=kafka:9092 AUDITOR_KEYS=/etc/auditor/keys auditor run
  auditor run --config auditor.yaml --instance-id auditor-1 --trail /var/lib/auditor/trail
  auditor run --config auditor.yaml --instance-id node-7 --processes 2    # one per core

--processes N starts N daemons in one consumer group on this machine, sharing nothing but the
config: instance ids <instance-id>-0 .. -(N-1), HTTP ports http.port + i, file copies in
<trail>/<instance-id>-i. SIGTERM stops them all; if one ends on its own, the others are stopped
and its exit status is returned, so the orchestrator restarts the group.

""" + textwrap.fill(daemon_exit_status(), 96) + "\n"

DEMO_HELP = """\
Everything on one machine: start a local Apache Kafka broker (jars fetched with Maven on first
use), create the topics, generate keys, produce a realistic mixed stream for the five seed
policies (mostly compliant, some violations of each kind, a few malformed messages), run the
daemon with a live summary, then verify the trail and tell you where to look next.

examples:
  auditor demo                       # about 20,000 events
  auditor demo --events 200000       # a longer run
  auditor demo --keep-running        # leave broker and daemon up; Ctrl-C to stop
"""


PRODUCE_HELP = """\
Send events to a Kafka topic, Avro-encoded, for testing your own packs and producers. Input is
JSON lines or Avro container files (as 'auditor check' reads them); a malformed line is reported
and skipped. The brokers and client properties (TLS, SASL) come from --config and AUDITOR_*
variables, like every Kafka command's.

examples:
  auditor produce --bootstrap-servers localhost:9092 --topic privacy-events events.jsonl
  auditor produce --config auditor.yaml events.avro
  zcat events.jsonl.gz | auditor produce --config auditor.yaml -
  AUDITOR_KAFKA_PROPERTIES__SASL_PASSWORD=... auditor produce --config sasl.yaml events.jsonl
  auditor produce --config auditor.yaml --facts facts.jsonl   # subject facts to topics.facts

--facts sends subject facts (JSON lines, schemas/subject_fact.avsc: consent granted/withdrawn,
opt-outs, birth dates, account closures, ...) instead of events, to the config's facts topic.
Events and facts are keyed by subject id and partitioned with murmur2 (as Java clients do), so the
facts topic is co-partitioned with the event topics when both have the same partition count.

exit status: 0 sent, 2 usage, configuration or input error, 3 broker, network or authentication error.
"""


TOPICS_HELP = """\
Create the topics the config names, those that do not exist yet (an existing topic is never
changed):

  topics.events, topics.violations, topics.dead_letter
      --partitions partitions, the broker's defaults otherwise (retention included).
  topics.audit (the trail) and <topics.audit>.checkpoints (its signed checkpoints)
      kept forever: retention.ms=-1 and retention.bytes=-1 (cleanup.policy delete), replication
      factor min(3, brokers), and min.insync.replicas=2 when the cluster has 3 or more brokers, so
      a committed record is on two brokers before the daemon moves on.

Then it reads the configuration of both trail topics, old ones too. The daemon refuses to run on
a trail topic Kafka would delete (finite retention.ms or retention.bytes, or compaction), so this
command fails the same way (exit 2), with the command that fixes each topic:

  kafka-configs.sh --bootstrap-server HOST:PORT --alter --entity-type topics \\
      --entity-name AUDIT_TOPIC --add-config retention.ms=-1,retention.bytes=-1
  (the same for AUDIT_TOPIC.checkpoints; add cleanup.policy=delete to a compacted topic)

A checkpoint topic missing next to an existing audit topic (a trail written by an auditor before
signed checkpoints) is created here; the daemon then refuses the unsigned chains it finds until
you adopt them explicitly (trail.adopt_unsigned_chains, see README "Upgrading a trail without
checkpoints"). trail.accept_finite_retention: true accepts finite retention (the daemon then raises
the TrailRetentionFinite alert); with it this command only warns.

examples:
  auditor topics create --config auditor.yaml --partitions 6
  auditor topics create --bootstrap-servers localhost:9092      # the default topic names

exit status: 0 the topics exist and keep the trail, 2 a trail topic would be deleted by Kafka
(or a usage or configuration error), 3 the broker could not be reached.
"""


def register(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", help="run the auditor daemon on Kafka", description=RUN_HELP,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("--config", type=Path, metavar="FILE", help="YAML config file")
    run.add_argument("--bootstrap-servers", metavar="HOST:PORT", help="overrides kafka.bootstrap_servers")
    run.add_argument("--keys", type=Path, metavar="DIR", help="key directory (default: $AUDITOR_KEYS)")
    run.add_argument("--trail", type=Path, metavar="DIR", help="also keep a file copy of the trail here")
    run.add_argument("--instance-id", help="stable id of this instance (its transactional id derives from it)")
    run.add_argument("--http-port", type=int, help="port for /metrics, /healthz, /readyz (default 9400)")
    run.add_argument("--create-topics", type=int, metavar="PARTITIONS",
                     help="create missing topics with this many partitions before starting")
    run.add_argument("--processes", type=positive_int, default=1, metavar="N",
                     help="run N daemons in one consumer group, one per core (default 1)")
    run.set_defaults(func=cmd_run)

    demo = sub.add_parser("demo", help="local broker + demo stream + daemon, end to end", description=DEMO_HELP,
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    demo.add_argument("--events", type=int, default=20_000, help="events to produce (default 20000)")
    demo.add_argument("--workdir", type=Path, default=Path(".auditor-demo"),
                      help="keys and trail go here (default ./.auditor-demo)")
    demo.add_argument("--bootstrap-servers", metavar="HOST:PORT",
                      help="use this broker instead of starting a local one")
    demo.add_argument("--http-port", type=int, default=9400, help="metrics port (default 9400; 0 = any free)")
    demo.add_argument("--keep-running", action="store_true", help="keep broker and daemon up until Ctrl-C")
    demo.add_argument("--seed", type=int, default=7, help="random seed of the demo stream")
    demo.set_defaults(func=cmd_demo)

    prod = sub.add_parser("produce", help="send JSON-lines or Avro events to a topic as Avro",
                          description=PRODUCE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    prod.add_argument("files", nargs="+", metavar="FILE",
                      help="JSON-lines or Avro container files of events; - reads standard input")
    prod.add_argument("--config", type=Path, metavar="FILE",
                      help="config file: kafka.bootstrap_servers and kafka.properties (TLS, SASL)")
    prod.add_argument("--bootstrap-servers", metavar="HOST:PORT", help="overrides kafka.bootstrap_servers")
    prod.add_argument("--topic", help="default: the config's first event topic (privacy-events); with --facts, "
                                      "topics.facts (subject-facts)")
    prod.add_argument("--facts", action="store_true",
                      help="the files hold subject facts (JSON lines), not events")
    prod.add_argument("--framing", choices=["single-object", "confluent"], default="single-object",
                      help="Avro single-object encoding (default) or Confluent wire format")
    prod.add_argument("--schema-id", type=non_negative_int, help="schema id for --framing confluent")
    prod.set_defaults(func=cmd_produce)

    topics = sub.add_parser("topics", help="create the auditor's topics (the trail's kept forever)",
                            description=TOPICS_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    topics.add_argument("action", choices=["create"], help="create: make the missing topics, check the trail's")
    topics.add_argument("--config", type=Path, metavar="FILE", help="YAML config file (topic names, kafka.*)")
    topics.add_argument("--bootstrap-servers", metavar="HOST:PORT", help="overrides kafka.bootstrap_servers")
    topics.add_argument("--partitions", type=positive_int, default=3,
                        help="partitions of each topic created (default 3)")
    topics.set_defaults(func=cmd_topics)


def _config(args: argparse.Namespace) -> Config:
    cfg = load_config(getattr(args, "config", None), overrides={
        "kafka.bootstrap_servers": getattr(args, "bootstrap_servers", None),
        "keys_dir": str(args.keys) if getattr(args, "keys", None) else None,
        "trail_dir": str(args.trail) if getattr(args, "trail", None) else None,
        "instance_id": getattr(args, "instance_id", None),
        "http.port": getattr(args, "http_port", None),
    })
    note(bootstrap=cfg.kafka.bootstrap_servers, http_port=cfg.http_port, http_host=cfg.http_host)
    return cfg


def cmd_run(args: argparse.Namespace) -> int:
    from auditor.stream.app import build_daemon, create_topics
    from auditor.stream.intake import settle_heap

    cfg = _config(args)
    if cfg.instance_id_generated:
        get_logger("auditor.config").warning(
            f"instance_id is not set: using {cfg.instance_id}, which changes at every start, so a restarted "
            "daemon does not fence a zombie of its previous run (Kafka transactional fencing). Set instance_id "
            "(config file, AUDITOR_INSTANCE_ID or --instance-id) to a stable name such as the pod name")
    if args.create_topics:
        create_topics(cfg, args.create_topics)
    if args.processes > 1:
        from auditor.stream.supervisor import run_processes

        return run_processes(args.processes, cfg.instance_id, cfg.http_port, cfg.trail_dir, cfg.shutdown_timeout_s)
    daemon = build_daemon(cfg)
    settle_heap()  # what is built lives as long as the process: no garbage collection traverses it again
    daemon.install_signal_handlers()
    return daemon.run()


def cmd_topics(args: argparse.Namespace) -> int:
    from auditor.stream.app import create_topics
    from auditor.stream.topics import check_created

    cfg = _config(args)
    made = create_topics(cfg, args.partitions)
    print(f"created: {', '.join(made) if made else 'nothing (all topics exist)'}")
    for line in check_created(cfg):  # raises ConfigError (exit 2) on a trail topic Kafka would delete
        print(line)
    return 0


def cmd_produce(args: argparse.Namespace) -> int:
    from auditor.events.codec import iter_event_file
    from auditor.stream.produce import produce

    if args.framing == "confluent" and args.schema_id is None:
        raise ConfigError("--framing confluent needs --schema-id")
    cfg = _config(args)
    if args.facts:
        return _produce_facts(args, cfg)
    topic = args.topic or cfg.topics.events[0]
    events = SkipBad((row for path in args.files for row in iter_event_file(path)), "event")
    n = produce(cfg.kafka.bootstrap_servers, topic, events, framing=args.framing, schema_id=args.schema_id,
                properties=cfg.kafka.properties)
    print(f"produced {n} events to {topic}" + (f" ({events.bad} malformed lines skipped)" if events.bad else ""))
    return 0


def _produce_facts(args: argparse.Namespace, cfg: Config) -> int:
    from auditor.ledger.codec import iter_fact_lines
    from auditor.stream.produce import produce

    if args.framing != "single-object":
        raise ConfigError("--facts are sent single-object encoded (drop --framing)")
    if "-" in args.files:
        raise ConfigError("--facts reads files, not standard input")
    for path in args.files:
        if not Path(path).is_file():
            raise ConfigError(f"no such facts file: {path}")
    topic = args.topic or cfg.topics.facts
    facts = SkipBad((row for path in args.files for row in iter_fact_lines(Path(path))), "fact")
    n = produce(cfg.kafka.bootstrap_servers, topic, facts, properties=cfg.kafka.properties)
    print(f"produced {n} facts to {topic}" + (f" ({facts.bad} malformed lines skipped)" if facts.bad else ""))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from auditor.stream.demo import run_demo

    note(http_port=args.http_port, bootstrap=args.bootstrap_servers)
    return run_demo(args)
