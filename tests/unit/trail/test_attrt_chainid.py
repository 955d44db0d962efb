"""attrt: ways of computing a chain id or an audit partition that test_chainid's line regexes miss.

test_chainid.py reads the package's Python lines for an f-string ``{...topic}/{...partition}``,
a ``partition %`` and ``% ...audit_partitions``. It does not read the compiled code (the memo's
shadow built ``"<topic>/<partition>"`` itself in native/src/shadow.rs), nor a chain id taken apart
again by hand (ledgerfeed's ``_chain_key``: ``rpartition("/")`` and ``int()``, which reads
``"t/-1"`` or ``"t/ 3"`` as partitions that chainid.source_partition refuses), nor other spellings
of the same computation (``'...'`` quotes, ``%``-formatting, ``str.format``, ``(x.partition() or 0) %
n``). These guards read the syntax tree (and the Rust sources' ``format!`` strings) instead."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
PACKAGE = ROOT / "auditor"
NATIVE = ROOT / "native" / "src"
MADE_HERE = PACKAGE / "trail" / "chainid.py"
#: the subject's partition of the ledger (murmur2 of the subject id, as Kafka's partitioner): not a chain's
SUBJECT_PARTITIONING = PACKAGE / "ledger" / "partitioning.py"


def _logging(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    """Inside a call of ``log.<level>(...)`` (a log line names a partition, not a chain)."""
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                isinstance(node.func.value, ast.Name) and node.func.value.id in ("log", "logger", "logging"):
            return True
    return False


def _mentions(node: ast.AST, *words: str) -> bool:
    text = ast.unparse(node).lower()
    return any(w in text for w in words)


def offenders_in(source: str, name: str) -> list[str]:
    """Lines of ``source`` that build ``<topic>/<partition>``, map a partition by ``%``, or take a chain id apart."""
    tree = ast.parse(source)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found = []
    for node in ast.walk(tree):
        bad = False
        if isinstance(node, ast.JoinedStr):  # the whole string f"{topic}/{partition}", f'{t.topic}/{p}'
            parts = node.values
            bad = len(parts) == 3 and isinstance(parts[0], ast.FormattedValue) and \
                isinstance(parts[2], ast.FormattedValue) and isinstance(parts[1], ast.Constant) and \
                parts[1].value == "/" and re.search(r"topic(\(\))?$", ast.unparse(parts[0].value)) is not None
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod):
            if isinstance(node.left, ast.Constant) and isinstance(node.left.value, str):
                bad = "/" in node.left.value and _mentions(node.right, "topic")  # "%s/%s" % (topic, partition)
            else:
                bad = _mentions(node, "partition")  # (m.partition() or 0) % n, p % self.routing.audit_partitions
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            bad = _mentions(node, "topic") and _mentions(node, "partition") and "'/'" in ast.unparse(node)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            method, args = node.func.attr, node.args
            slash = bool(args) and isinstance(args[0], ast.Constant) and args[0].value == "/"
            if method == "format" and isinstance(node.func.value, ast.Constant):
                bad = "}/{" in str(node.func.value.value)  # "{}/{}".format(topic, partition)
            elif method in ("rpartition", "rsplit", "split", "partition") and slash:
                bad = _mentions(node.func.value, "chain")  # a chain id taken apart by hand
        if bad and not _logging(node, parents):
            found.append(f"{name}:{getattr(node, 'lineno', 0)}: {ast.unparse(node)[:120]}")
    return found


def test_the_guard_finds_the_spellings_the_line_regexes_miss():
    for line in ["c = f'{topic}/{partition}'", "c = f'{t.topic}/{p}'", "c = '%s/%d' % (topic, partition)",
                 "c = '{}/{}'.format(topic, partition)", "a = (msg.partition() or 0) % n",
                 "c = topic + '/' + str(partition)", "t, _, p = chain.rpartition('/')",
                 "p = int(item.chain_id.rsplit('/', 1)[1])", "a = part % self.routing.audit_partitions"]:
        assert offenders_in(line, "x.py"), line
    for line in ["log.info('revoked', partitions=[f'{tp.topic}/{tp.partition}' for tp in tps])",
                 "path = f'{root}/{name}'", "where = f'{self.cfg.topics.audit}/{audit_partition}'",
                 "each, extra = divmod(left, n)", "x = topic.split('.')"]:
        assert offenders_in(line, "x.py") == [], line


def test_no_module_but_chainid_builds_maps_or_parses_chain_ids():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path in (MADE_HERE, SUBJECT_PARTITIONING):
            continue
        offenders += offenders_in(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    assert offenders == []


#: a Rust format string joining two values with '/' (a chain id's shape)
#: (a source's text, "{topic}/{partition}@{offset}" as SourceRef.__str__ writes it, is not a chain id: rust2)
RUST_CHAIN = re.compile(r'format!\(\s*"[^"]*\{[^}"]*\}/\{[^}"]*\}(?!@)[^"]*"')


def test_the_compiled_code_builds_no_chain_id_of_its_own():
    """The shadow's hits take their chain id from chainid.chain_id (asked once per source partition)."""
    offenders = []
    for path in sorted(NATIVE.rglob("*.rs")):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if RUST_CHAIN.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert offenders == []
