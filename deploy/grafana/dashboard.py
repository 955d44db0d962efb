"""The auditor's Grafana dashboard, generated with grafanalib.

Run ``python deploy/grafana/dashboard.py`` to rewrite ``deploy/grafana/auditor.json``, or
``python deploy/grafana/dashboard.py --check`` to fail when the committed file is stale.

The panels are plain data (:data:`ROWS`) so that their PromQL can be listed without grafanalib:
:func:`all_queries` returns every expression, with Grafana's macros replaced by fixed values,
ready to be evaluated against a real Prometheus. grafanalib is imported only to build the JSON.
"""

import argparse
import io
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUTPUT = Path(__file__).with_name("auditor.json")

#: Grafana macros in the expressions and the values :func:`all_queries` substitutes for them.
RATE = "$__rate_interval"
MACROS = {RATE: "5m"}

DATASOURCE = "${datasource}"


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""
    instant: bool = False


@dataclass(frozen=True)
class Panel:
    title: str
    description: str
    queries: tuple[Query, ...]
    kind: str = "timeseries"  # timeseries | stat | table
    unit: str = "short"
    width: int = 8
    height: int = 8
    stacked: bool = False
    thresholds: tuple[tuple[float, str], ...] = field(default=())


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...]


def _q(expr: str, legend: str = "", instant: bool = False) -> Query:
    return Query(" ".join(expr.split()), legend, instant)


ROWS: tuple[Row, ...] = (
    Row("Health", (
        Panel("Instances up", "Auditor targets Prometheus scrapes successfully.",
              (_q('sum(up{job="auditor"})', "up"),), kind="stat", width=4, height=5,
              thresholds=((0, "red"), (1, "green"))),
        Panel("Instances ready", "Instances that report ready (consuming and auditing).",
              (_q('sum(auditor_ready{job="auditor"})', "ready"),), kind="stat", width=4, height=5,
              thresholds=((0, "red"), (1, "green"))),
        Panel("Per-instance health", "up (scrape succeeds) and ready, per instance: 1 is healthy.",
              (_q('up{job="auditor"}', "up {{instance}}"),
               _q('auditor_ready{job="auditor"}', "ready {{instance}}")),
              width=16, height=5),
    )),
    Row("Throughput", (
        Panel("Events consumed", "Events read from Kafka per second, per topic.",
              (_q(f"sum by (topic) (rate(auditor_events_consumed_total[{RATE}]))", "{{topic}}"),),
              unit="ops"),
        Panel("Verdicts", "Audited events per second by verdict.",
              (_q(f"sum by (verdict) (rate(auditor_events_audited_total[{RATE}]))", "{{verdict}}"),),
              unit="ops", stacked=True),
        Panel("Violation share per pack", "Share of audited events that violate their pack.",
              (_q(f"""sum by (pack) (rate(auditor_events_audited_total{{verdict="VIOLATION"}}[{RATE}]))
                      / sum by (pack) (rate(auditor_events_audited_total[{RATE}]))""", "{{pack}}"),),
              unit="percentunit"),
    )),
    Row("Violations", (
        Panel("Violations by rule", "Violations per second, per pack and rule.",
              (_q(f"sum by (pack, rule) (rate(auditor_violations_total[{RATE}]))", "{{rule}}"),),
              unit="ops", width=12),
        Panel("Violations by severity", "Violations per second by rule severity.",
              (_q(f"sum by (severity) (rate(auditor_violations_total[{RATE}]))", "{{severity}}"),),
              unit="ops", width=12, stacked=True),
        Panel("Violations by recipient type", "Violating disclosures per second by recipient type "
              "(\"none\" for accesses and uses).",
              (_q(f"sum by (recipient_type) (rate(auditor_violations_total[{RATE}]))",
                  "{{recipient_type}}"),),
              unit="ops", width=12),
        Panel("Violations by purpose", "Violations per second by the purpose the event declared.",
              (_q(f"sum by (purpose) (rate(auditor_violations_total[{RATE}]))", "{{purpose}}"),),
              unit="ops", width=12),
    )),
    Row("Pipeline", (
        Panel("Dead letters", "Events sent to the dead-letter topic per second, by reason: not audited.",
              (_q(f"sum by (reason) (rate(auditor_dead_letters_total[{RATE}]))", "{{reason}}"),),
              unit="ops"),
        Panel("Consumer lag", "Messages behind the end of each partition.",
              (_q("max by (topic, partition) (auditor_consumer_lag)", "{{topic}}/{{partition}}"),),
              unit="short"),
        Panel("Transactions", "Kafka transactions per second by outcome.",
              (_q(f"sum by (outcome) (rate(auditor_transactions_total[{RATE}]))", "{{outcome}}"),),
              unit="ops", stacked=True),
        Panel("End-to-end latency", "Event time to audit commit, p50 and p99.",
              (_q(f"histogram_quantile(0.5, sum by (le) "
                  f"(rate(auditor_end_to_end_latency_seconds_bucket[{RATE}])))", "p50"),
               _q(f"histogram_quantile(0.99, sum by (le) "
                  f"(rate(auditor_end_to_end_latency_seconds_bucket[{RATE}])))", "p99")),
              unit="s", thresholds=((0, "green"), (60, "red"))),
        Panel("Decision latency", "Policy evaluation time per event, p50 and p99.",
              (_q(f"histogram_quantile(0.5, sum by (le) "
                  f"(rate(auditor_decision_latency_seconds_bucket[{RATE}])))", "p50"),
               _q(f"histogram_quantile(0.99, sum by (le) "
                  f"(rate(auditor_decision_latency_seconds_bucket[{RATE}])))", "p99")),
              unit="s"),
        Panel("Time since last audit", "Age of the newest audited event, per topic.",
              (_q("time() - max by (topic) (auditor_last_audit_timestamp_seconds > 0)", "{{topic}}"),),
              unit="s", thresholds=((0, "green"), (1800, "red"))),
    )),
    Row("Subject ledger", (
        Panel("Facts applied", "Subject facts applied to the instances' ledgers per second (ledger.dir set).",
              (_q(f"sum(rate(auditor_ledger_facts_total[{RATE}]))", "facts"),
               _q(f"sum by (reason) (rate(auditor_ledger_facts_rejected_total[{RATE}]))", "rejected {{reason}}")),
              unit="ops"),
        Panel("Corrections", "CORRECTION records per second after late facts, by pack and whether the verdict "
              "changed.",
              (_q(f"sum by (pack, verdict_changed) (rate(auditor_ledger_corrections_total[{RATE}]))",
                  "{{pack}} changed={{verdict_changed}}"),),
              unit="ops", stacked=True),
        Panel("Late facts", "Facts that arrived after events they precede; beyond the window: uncorrected.",
              (_q(f"sum(rate(auditor_ledger_late_facts_total[{RATE}]))", "late"),
               _q(f"sum(rate(auditor_ledger_late_beyond_window_total[{RATE}]))", "beyond window")),
              unit="ops"),
    )),
    Row("Trail", (
        Panel("Checkpoint age", "Age of the newest signed checkpoint, per hash chain.",
              (_q("max by (chain) (auditor_trail_checkpoint_age_seconds)", "{{chain}}"),),
              unit="s", width=24, thresholds=((0, "green"), (1800, "red"))),
    )),
    Row("Versions", (
        Panel("Builds", "Version and Python of each instance.",
              (_q("auditor_build_info", instant=True),), kind="table", width=12, height=6),
        Panel("Policy packs", "Hash of each pack each instance runs: one hash per pack is expected.",
              (_q("auditor_pack_info", instant=True),), kind="table", width=12, height=6),
    )),
)


def panels() -> list[Panel]:
    return [panel for row in ROWS for panel in row.panels]


def all_queries() -> list[str]:
    """Every PromQL expression of the dashboard, macros replaced, ready for a real Prometheus."""
    out = []
    for panel in panels():
        for query in panel.queries:
            expr = query.expr
            for macro, value in MACROS.items():
                expr = expr.replace(macro, value)
            out.append(expr)
    return out


def _threshold_steps(panel: Panel) -> list[dict[str, Any]]:
    return [{"value": None if i == 0 else value, "color": color}
            for i, (value, color) in enumerate(panel.thresholds or ((0, "green"),))]


def _grafana_panel(panel: Panel, x: int, y: int) -> Any:
    from grafanalib import core as g

    targets = [
        g.Target(expr=q.expr, legendFormat=q.legend, refId=chr(ord("A") + i), instant=q.instant,
                 format="table" if panel.kind == "table" else "time_series",
                 datasource={"type": "prometheus", "uid": DATASOURCE})
        for i, q in enumerate(panel.queries)
    ]
    common: dict[str, Any] = dict(
        title=panel.title, description=panel.description, dataSource=DATASOURCE,
        targets=targets, gridPos=g.GridPos(h=panel.height, w=panel.width, x=x, y=y),
        thresholds=_threshold_steps(panel),
    )
    if panel.kind == "stat":
        return g.Stat(format=panel.unit, reduceCalc="lastNotNull", **common)
    if panel.kind == "table":
        hide = {"Time": True, "Value": True, "__name__": True}
        return g.Table(transformations=[{"id": "organize", "options": {"excludeByName": hide}}],
                       **common)
    return g.TimeSeries(
        unit=panel.unit, fillOpacity=20 if panel.stacked else 0,
        stacking={"mode": "normal", "group": "A"} if panel.stacked else {"mode": "none"},
        legendDisplayMode="table", legendCalcs=["lastNotNull", "max"], tooltipMode="multi",
        thresholdsStyleMode="line" if panel.thresholds else "off",
        **common,
    )


def build_dashboard() -> Any:
    """The dashboard as a grafanalib object (panel ids assigned)."""
    from grafanalib import core as g

    out: list[Any] = []
    y = 0
    for row in ROWS:
        out.append(g.RowPanel(title=row.title, gridPos=g.GridPos(h=1, w=24, x=0, y=y)))
        y += 1
        x, row_height = 0, 0
        for panel in row.panels:
            if x + panel.width > 24:
                x, y, row_height = 0, y + row_height, 0
            out.append(_grafana_panel(panel, x, y))
            x += panel.width
            row_height = max(row_height, panel.height)
        y += row_height
    datasource = g.Template(name="datasource", label="Data source", query="prometheus",
                            type="datasource", default="Prometheus")
    return g.Dashboard(
        title="Auditor", uid="auditor", description="Privacy audit daemon: throughput, verdicts, "
        "violations, dead letters, lag, latency, trail checkpoints and instance health.",
        tags=["auditor", "privacy"], timezone="utc", refresh="30s",
        time=g.Time("now-6h", "now"), graphTooltip=1,
        templating=g.Templating(list=[datasource]), panels=out,
    ).auto_panel_ids()


def render() -> str:
    """The dashboard JSON exactly as committed in auditor.json."""
    from grafanalib._gen import write_dashboard

    stream = io.StringIO()
    write_dashboard(build_dashboard(), stream)
    return stream.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if auditor.json is stale")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is out of date: run python {Path(__file__).as_posix()}",
                  file=sys.stderr)
            return 1
        return 0
    args.output.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
