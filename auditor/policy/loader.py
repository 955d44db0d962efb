"""Parse and validate a policy pack file (language 2) into a :class:`~auditor.policy.model.Pack`.

Validation collects every finding (file, line, fault) before failing, so one run of
``auditor policy lint`` shows them all. Warnings (a rule that silently relies on an absent fact)
do not stop loading; they are kept on the pack for ``lint`` to print.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

from auditor.errors import PolicyError, PolicyLintError
from auditor.events.model import EventKind
from auditor.policy import conditions as c
from auditor.policy.decision import RuleRef
from auditor.policy.lint import check_pack
from auditor.policy.model import SEVERITIES, Effect, Pack, Rule, Scope, Term
from auditor.policy.syntax import BUILTIN_REGIONS, COUNTRY, RECIPIENT_TESTS, TestParser, Vocab
from auditor.policy.yamlsrc import STDIN, LineDict, load_yaml, shown

LANGUAGE = 2
TOP_KEYS = {"language", "pack", "title", "source", "version", "minor_age", "notes", "absent", "default",
            "vocabulary", "permits", "constraints"}
VOCAB_KEYS = {"elements", "categories", "purposes", "recipients", "roles", "regions"}
TERM_KEYS = {"clause", "quote", "maps_to"}
RULE_KEYS = {"id", "clause", "quote", "severity", "when", "require", "explain", "absent"}
CONSTRAINT_KEYS = RULE_KEYS | {"forbid"}
INDEXED = ("kinds", "recipients", "purposes")
SYNTHETIC = ("default-deny", "undeclared-category", "undeclared-purpose", "undeclared-recipient")

PACK_ID = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
RULE_ID = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9][a-z0-9_-]*){1,4}$")
MAPS_TO = re.compile(r"^(fideslang|dpv|pd|dpv-pd):[A-Za-z][A-Za-z0-9_.\-]*$")


def packs_dir() -> Path:
    return Path(str(resources.files("auditor.policy.packs")))


def bundled_pack_names() -> list[str]:
    return sorted(p.stem for p in packs_dir().glob("*.yaml"))


def resolve_pack(name_or_path: str | Path) -> Path:
    """A bundled pack by id (``ipasar``), a pack file by path, or ``-`` for standard input."""
    if str(name_or_path) == STDIN:
        return Path(STDIN)
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise PolicyError("no such pack file", path=str(path))
        return path
    bundled = packs_dir() / f"{name_or_path}.yaml"
    if bundled.is_file():
        return bundled
    raise PolicyError(f"unknown pack '{name_or_path}'; bundled packs: {', '.join(bundled_pack_names())}"
                      " (or give a path to a .yaml pack)")


def content_hash(data: Any) -> str:
    """sha256 over the canonical JSON of the parsed pack: comments and layout do not count."""
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_plain(v) for v in x]
    return x


def _specificity(scope: Scope) -> float:
    """How narrowly a scope is drawn: each restricted dimension counts 1 + 1/(number of values)."""
    score = 0.0
    if scope.kinds is not None and len(scope.kinds) < len(EventKind):
        score += 1 + 1 / len(scope.kinds)
    for values in (scope.recipients, scope.purposes, scope.categories):
        if values:
            score += 1 + 1 / len(values)
    return score + sum(1 for t in scope.tests if not isinstance(t, c.CategoriesAny))


class _Parser:
    def __init__(self, path: Path) -> None:
        self.path = shown(path)
        self.findings: list[PolicyError] = []
        self.warnings: list[PolicyError] = []

    def fail(self, message: str, line: int | None) -> None:
        self.findings.append(PolicyError(message, path=self.path, line=line))

    def warn(self, message: str, line: int | None) -> None:
        self.warnings.append(PolicyError(message, path=self.path, line=line))

    def unknown_keys(self, node: LineDict, allowed: set[str], what: str) -> None:
        for key in node:
            if key not in allowed:
                self.fail(f"unknown key '{key}' in {what}; expected one of {', '.join(sorted(allowed))}",
                          node.line_of(key))

    def text(self, node: LineDict, key: str, what: str, required: bool = True) -> str:
        value = node.get(key)
        if value is None and not required:
            return ""
        if not isinstance(value, str | int | float) or not str(value).strip():
            self.fail(f"{what} needs a non-empty '{key}'", node.line_of(key))
            return ""
        return str(value)

    def maps_to(self, body: LineDict, what: str) -> tuple[str, ...]:
        raw = body.get("maps_to")
        if raw is None:
            return ()
        values = raw if isinstance(raw, list) else [raw]
        for v in values:
            if not isinstance(v, str) or not MAPS_TO.match(v):
                self.fail(f"{what}: maps_to '{v}' is not a fideslang or W3C DPV term "
                          "(e.g. 'fideslang:user.contact.email', 'dpv:Marketing', 'pd:EmailAddress')",
                          body.line_of("maps_to"))
        return tuple(str(v) for v in values)

    # ---------------------------------------------------------------- vocabulary
    def terms(self, vocab: LineDict, key: str, extra: frozenset[str] = frozenset(),
              quoted: bool = True) -> dict[str, Term]:
        node = vocab.get(key)
        out: dict[str, Term] = {}
        if node is None:
            return out
        if isinstance(node, list) and not quoted:   # a plain list of names
            node = LineDict({str(n): None for n in node}, line=getattr(node, "line", vocab.line_of(key)))
        if not isinstance(node, LineDict):
            self.fail(f"vocabulary '{key}' must map ids to {{clause, quote}}", vocab.line_of(key))
            return out
        for term_id, body in node.items():
            line = node.line_of(term_id)
            tid = str(term_id)
            if not NAME.match(tid):
                self.fail(f"vocabulary {key} id '{tid}' is not a plain identifier (a-z, 0-9, _)", line)
            if body is None and not quoted:
                out[tid] = Term(tid, "", "")
                continue
            if not isinstance(body, LineDict):
                self.fail(f"vocabulary {key} '{tid}' needs clause and quote", line)
                continue
            self.unknown_keys(body, TERM_KEYS | extra, f"{key} '{tid}'")
            what = f"{key} '{tid}'"
            holds = tuple(str(h) for h in (body.get("holds") or []))
            countries = tuple(str(h) for h in (body.get("countries") or []))
            out[tid] = Term(tid, self.text(body, "clause", what, quoted), self.text(body, "quote", what, quoted),
                            self.maps_to(body, what), holds, countries)
        return out

    def atoms(self, categories: dict[str, Term], elements: dict[str, Term],
              vocab: LineDict) -> dict[str, frozenset[str]]:
        """Category or element -> the data elements it holds (a category without ``holds`` is its own)."""
        out: dict[str, frozenset[str]] = {e: frozenset({e}) for e in elements}
        node = vocab.get("categories") or LineDict()

        def expand(cid: str, trail: tuple[str, ...]) -> frozenset[str]:
            if cid in out:
                return out[cid]
            term = categories[cid]
            if not term.holds:
                out[cid] = frozenset({cid})
                return out[cid]
            acc: set[str] = set()
            for h in term.holds:
                if h in trail:
                    self.fail(f"category '{cid}' holds itself through {' -> '.join((*trail, h))}",
                              node.line_of(cid))
                elif h in elements:
                    acc.add(h)
                elif h in categories:
                    acc |= expand(h, (*trail, h))
                else:
                    self.fail(f"category '{cid}' holds '{h}', which is neither a category nor a declared "
                              "element (vocabulary.elements)", node.line_of(cid))
            out[cid] = frozenset(acc)
            return out[cid]

        for cid in categories:
            if cid in elements:
                self.fail(f"'{cid}' is declared both as a category and as an element", node.line_of(cid))
            expand(cid, (cid,))
        return out

    def regions(self, terms: dict[str, Term], vocab: LineDict) -> dict[str, frozenset[str]]:
        out = dict(BUILTIN_REGIONS)
        node = vocab.get("regions") or LineDict()
        for rid, term in terms.items():
            codes: set[str] = set()
            for code in term.countries:
                if code in out:
                    codes |= out[code]
                elif COUNTRY.match(code):
                    codes.add(code)
                else:
                    self.fail(f"region '{rid}': '{code}' is not an ISO 3166 code or a region", node.line_of(rid))
            if not codes:
                self.fail(f"region '{rid}' names no countries", node.line_of(rid))
            out[rid] = frozenset(codes)
        return out

    # ---------------------------------------------------------------- rules
    def absent(self, node: Any, what: str, line: int) -> tuple[tuple[str, str], ...]:
        if node is None:
            return ()
        if not isinstance(node, dict):
            self.fail(f"{what}: 'absent' maps a fact (e.g. subject.minor) to the reading of its absence", line)
            return ()
        out = []
        for fact, reading in node.items():
            fact = str(fact)
            if fact not in c.OPTIONAL_FACTS and not fact.startswith("attributes."):
                self.fail(f"{what}: absent names '{fact}', which is not an optional fact "
                          f"({', '.join(sorted(c.OPTIONAL_FACTS))}, attributes.<name>)", line)
            if not isinstance(reading, str) or not reading.strip():
                self.fail(f"{what}: absent '{fact}' needs the reading in words", line)
            out.append((fact, str(reading)))
        return tuple(out)

    def rule(self, node: Any, effect: Effect, vocab: Vocab, seen: set[str], index: int, pack_id: str,
             used: dict[str, set[str]]) -> Rule | None:
        section = "permits" if effect is Effect.PERMIT else "constraints"
        if not isinstance(node, LineDict):
            self.fail(f"{section} entry #{index + 1} must be a mapping", None)
            return None
        self.unknown_keys(node, RULE_KEYS if effect is Effect.PERMIT else CONSTRAINT_KEYS,
                          f"{section} entry '{node.get('id', index + 1)}'")
        rid = self.text(node, "id", f"{section} entry #{index + 1}")
        if rid and not RULE_ID.match(rid):
            self.fail(f"rule id '{rid}' is not a plain identifier: '<pack>.<name>[.<name>]', lower-case letters, "
                      "digits, '_' and '-'", node.line_of("id"))
        elif rid and not rid.startswith(pack_id + "."):
            self.fail(f"rule id '{rid}' must start with the pack id '{pack_id}.'", node.line_of("id"))
        elif rid.split(".", 1)[-1] in SYNTHETIC:
            self.fail(f"rule id '{rid}' is reserved for the engine", node.line_of("id"))
        if rid in seen:
            self.fail(f"duplicate rule id '{rid}'", node.line_of("id"))
        seen.add(rid)
        severity = str(node.get("severity", "medium"))
        if severity not in SEVERITIES:
            self.fail(f"rule '{rid}': severity must be one of {', '.join(SEVERITIES)}", node.line_of("severity"))
        tp = TestParser(vocab, self.fail, rid, self.warn)
        scope = self.scope(node, tp, rid)
        forbid = node.get("forbid", False)
        if forbid not in (True, False):
            self.fail(f"rule '{rid}': forbid must be true or false", node.line_of("forbid"))
        require = node.get("require")
        conds: list[c.Condition] = []
        if require is not None and not isinstance(require, list):
            self.fail(f"rule '{rid}': 'require' must be a list", node.line_of("require"))
            require = []
        line = getattr(require, "line", 0) or node.line_of("require")
        for item in require or []:
            cond = tp.item(item, getattr(item, "line", 0) or line)
            if cond is not None:
                conds.append(cond)
        if effect is Effect.CONSTRAINT:
            if forbid and conds:
                self.fail(f"constraint '{rid}': forbid and require exclude each other (write the exceptions "
                          "as 'require', or forbid everything in scope)", node.line_of("forbid"))
            if not forbid and not conds:
                self.fail(f"constraint '{rid}' requires nothing: give 'require' conditions, or 'forbid: true' "
                          "for an outright prohibition", node.line)
            if forbid and not scope.source:
                self.fail(f"constraint '{rid}' forbids with no scope: it would prohibit every event "
                          "(give it a 'when')", node.line)
        for k, names in tp.used.items():
            used[k] |= names
        self.never_holds(rid, scope, conds, node)
        rule = Rule(rid, effect, self.text(node, "clause", f"rule '{rid}'"), self.text(node, "quote", f"rule '{rid}'"),
                    severity, scope, tuple(conds), node.get("explain"), node.line,
                    tuple(_plain(x) for x in require or []), bool(forbid),
                    self.absent(node.get("absent"), f"rule '{rid}'", node.line_of("absent")))
        return dataclasses.replace(rule, specificity=_specificity(scope))

    def scope(self, node: LineDict, tp: TestParser, rid: str) -> Scope:
        when = node.get("when")
        if when is None:
            return Scope()
        if not isinstance(when, LineDict):
            self.fail(f"rule '{rid}': 'when' must be a mapping of tests", node.line_of("when"))
            return Scope()
        idx: dict[str, frozenset[Any] | None] = {k: None for k in INDEXED}
        tests: list[c.Condition] = []
        categories = None
        for key, arg in when.items():
            cond = tp.test(str(key), arg, when.line_of(key))
            if cond is None:
                continue
            if key in INDEXED and isinstance(cond, c.FactIn):
                idx[key] = frozenset(v for v in cond.accepted if v is not None)
                continue
            if isinstance(cond, c.CategoriesAny):
                categories = cond.names
            tests.append(cond)
        kinds = idx["kinds"]
        if idx["recipients"] is not None or any(k in RECIPIENT_TESTS for k in when):
            if kinds is not None and EventKind.DISCLOSURE not in kinds:
                self.fail(f"rule '{rid}': tests the recipient but its kinds exclude DISCLOSURE, so it can "
                          "never match", when.line_of("kinds"))
            kinds = frozenset({EventKind.DISCLOSURE})
        return Scope(kinds, idx["recipients"], idx["purposes"], categories, tuple(tests),
                     tuple((str(k), _plain(v)) for k, v in when.items()))

    def never_holds(self, rid: str, scope: Scope, conds: list[c.Condition], node: LineDict) -> None:
        line = node.line_of("require")
        disclosure_possible = scope.kinds is None or EventKind.DISCLOSURE in scope.kinds
        for cond in conds:
            if isinstance(cond, c.FactIn) and cond.test in RECIPIENT_TESTS and not disclosure_possible \
                    and None not in cond.accepted:
                self.fail(f"rule '{rid}': {cond.test} can never hold: the rule's kinds exclude DISCLOSURE, so "
                          "there is no recipient", line)
            if isinstance(cond, c.FactIn) and cond.test == "purposes" and scope.purposes is not None \
                    and not (cond.accepted & scope.purposes):
                self.fail(f"rule '{rid}': purposes is disjoint from when.purposes, so it can never hold", line)
            if isinstance(cond, c.OnlyCategories) and scope.categories is not None:
                scoped = next(t for t in scope.tests if isinstance(t, c.CategoriesAny))
                if scoped.atoms.isdisjoint(cond.atoms):
                    self.fail(f"rule '{rid}': only_categories is disjoint from when.categories, so it "
                              "can never hold", line)


def parse_pack(path: Path) -> Pack:
    """Load, validate and lint one pack file. Raise PolicyLintError with every finding."""
    raw = load_yaml(path)
    p = _Parser(path)
    if not isinstance(raw, LineDict):
        raise PolicyError("a pack must be a YAML mapping", path=p.path, line=1)
    if raw.get("language") != LANGUAGE:
        raise PolicyError(f"this is not a language {LANGUAGE} pack: add 'language: {LANGUAGE}' at the top "
                          "(docs/policy-language.md describes the format)", path=p.path,
                          line=raw.line_of("language"))
    p.unknown_keys(raw, TOP_KEYS, "the pack")
    pack_id = p.text(raw, "pack", "the pack")
    if pack_id and not PACK_ID.match(pack_id):
        p.fail(f"pack id '{pack_id}' is not a plain identifier (a-z, 0-9, _; at most 32)", raw.line_of("pack"))
    default_node = raw.get("default")
    if isinstance(default_node, LineDict):
        default = Term("default", p.text(default_node, "clause", "default"), p.text(default_node, "quote", "default"))
    else:
        p.fail("the pack needs 'default: {clause, quote}' (cited by default deny)", raw.line_of("default"))
        default = Term("default", "", "")
    vocab = raw.get("vocabulary")
    if not isinstance(vocab, LineDict):
        p.fail("the pack needs a 'vocabulary' mapping", raw.line_of("vocabulary"))
        vocab = LineDict()
    p.unknown_keys(vocab, VOCAB_KEYS, "vocabulary")
    elements = p.terms(vocab, "elements", quoted=False)
    categories = p.terms(vocab, "categories", frozenset({"holds"}))
    purposes, recipients = p.terms(vocab, "purposes"), p.terms(vocab, "recipients")
    role_terms = p.terms(vocab, "roles", quoted=False)
    regions = p.regions(p.terms(vocab, "regions", frozenset({"countries"}), quoted=False), vocab)
    atoms = p.atoms(categories, elements, vocab)
    names = Vocab(atoms, set(categories), set(purposes), set(recipients), set(role_terms), regions)
    used: dict[str, set[str]] = {"purposes": set(), "recipients": set(), "categories": set()}
    seen: set[str] = set()
    rules: list[Rule] = []
    for section, effect in (("permits", Effect.PERMIT), ("constraints", Effect.CONSTRAINT)):
        node = raw.get(section)
        if node is None:
            continue
        if not isinstance(node, list):
            p.fail(f"'{section}' must be a list", raw.line_of(section))
            continue
        rules += [r for i, n in enumerate(node) if (r := p.rule(n, effect, names, seen, i, pack_id, used)) is not None]
    if not any(r.effect is Effect.PERMIT for r in rules):
        p.fail("the pack needs a non-empty 'permits' list", raw.line_of("permits"))
    minor_age = raw.get("minor_age", 18)
    if not isinstance(minor_age, int) or isinstance(minor_age, bool) or not 1 <= minor_age <= 25:
        p.fail("minor_age must be a whole number from 1 to 25", raw.line_of("minor_age"))
        minor_age = 18
    notes = raw.get("notes") or []
    if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
        p.fail("'notes' must be a list of sentences (the pack's reading notes)", raw.line_of("notes"))
        notes = []
    pack_absent = p.absent(raw.get("absent"), "the pack", raw.line_of("absent"))
    warnings = p.warnings + check_pack(p, rules, vocab, categories, purposes, recipients, used, pack_absent)
    if p.findings:
        raise PolicyLintError(p.findings)
    synthetic = {name: RuleRef(f"{pack_id}.{name}", default.clause, default.quote, "high") for name in SYNTHETIC}
    permits = [r for r in rules if r.effect is Effect.PERMIT]
    constraints = [r for r in rules if r.effect is Effect.CONSTRAINT]
    return Pack(
        id=pack_id, title=str(raw.get("title", pack_id)), source=str(raw.get("source", "")),
        version=str(raw.get("version", "1")), minor_age=minor_age, default=default,
        categories=categories, purposes=purposes, recipients=recipients, roles=frozenset(role_terms),
        rules=tuple(permits + constraints), path=p.path, content_hash=content_hash(raw), synthetic=synthetic,
        elements=elements, regions={k: Term(k, "", "", countries=tuple(sorted(v))) for k, v in regions.items()},
        role_terms=role_terms, atoms=atoms, absent=pack_absent, notes=tuple(notes), warnings=tuple(warnings),
    )
