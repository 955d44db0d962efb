"""Parse and validate a policy pack file into a :class:`~auditor.policy.model.Pack`.

Validation collects every finding (file, line, fault) before failing, so one run of
``auditor policy lint`` shows them all.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Any

from auditor.errors import PolicyError, PolicyLintError
from auditor.events.model import RECIPIENT_TYPES, ActorType, EventKind, Identifiability, LegalRequestType, Safeguard
from auditor.policy import conditions as c
from auditor.policy.decision import RuleRef
from auditor.policy.model import SEVERITIES, Effect, Pack, Rule, Scope, Term
from auditor.policy.yamlsrc import LineDict, load_yaml

TOP_KEYS = {"pack", "title", "source", "version", "minor_age", "default", "vocabulary", "rules"}
VOCAB_KEYS = {"categories", "purposes", "recipients", "roles"}
RULE_KEYS = {"id", "effect", "clause", "quote", "severity", "when", "require", "explain"}
WHEN_KEYS = {"kinds", "recipients", "purposes", "categories", "minor", "cross_border", "regions"}

#: Region groups a pack may name in ``when.regions``; expanded to ISO 3166 codes.
REGION_GROUPS = {
    "EEA": frozenset({"AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IE", "IT",
                      "LV", "LT", "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE", "IS", "LI", "NO",
                      "EEA", "EU"}),
}
CONSENT_FLAGS = {"marketing", "third_party_sharing", "guardian"}


def packs_dir() -> Path:
    return Path(str(resources.files("auditor.policy.packs")))


def bundled_pack_names() -> list[str]:
    return sorted(p.stem for p in packs_dir().glob("*.yaml"))


def resolve_pack(name_or_path: str | Path) -> Path:
    """A bundled pack by id (``ipasar``) or a pack file by path."""
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


class _Parser:
    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.findings: list[PolicyError] = []

    def fail(self, message: str, line: int | None) -> None:
        self.findings.append(PolicyError(message, path=self.path, line=line))

    def unknown_keys(self, node: LineDict, allowed: set[str], what: str) -> None:
        for key in node:
            if key not in allowed:
                self.fail(f"unknown key '{key}' in {what}; expected one of {', '.join(sorted(allowed))}",
                          node.line_of(key))

    def text(self, node: LineDict, key: str, what: str) -> str:
        value = node.get(key)
        if not isinstance(value, str | int | float) or not str(value).strip():
            self.fail(f"{what} needs a non-empty '{key}'", node.line_of(key))
            return ""
        return str(value)

    def str_list(self, node: LineDict, key: str, what: str) -> list[str] | None:
        value = node.get(key)
        if value is None:
            return None
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.fail(f"'{key}' in {what} must be a list of names", node.line_of(key))
            return None
        if not value:
            self.fail(f"'{key}' in {what} is empty, so it can never match", node.line_of(key))
        return value

    # ---------------------------------------------------------------- vocabulary
    def terms(self, vocab: LineDict, key: str) -> dict[str, Term]:
        node = vocab.get(key) or {}
        out: dict[str, Term] = {}
        if not isinstance(node, dict):
            self.fail(f"vocabulary '{key}' must map ids to {{clause, quote}}", vocab.line_of(key))
            return out
        for term_id, body in node.items():
            line = node.line_of(term_id) if isinstance(node, LineDict) else vocab.line
            if not isinstance(body, LineDict):
                self.fail(f"vocabulary {key} '{term_id}' needs clause and quote", line)
                continue
            out[str(term_id)] = Term(str(term_id), self.text(body, "clause", f"{key} '{term_id}'"),
                                     self.text(body, "quote", f"{key} '{term_id}'"))
        return out

    # ---------------------------------------------------------------- conditions
    def enum_set(self, cls: Any, values: Any, what: str, line: int) -> frozenset[Any]:
        if isinstance(values, str):
            values = [values]
        out = set()
        for v in values or []:
            try:
                out.add(cls(str(v).upper()))
            except ValueError:
                allowed = ", ".join(x.value for x in cls)
                self.fail(f"unknown {what} '{v}'; expected one of {allowed}", line)
        return frozenset(out)

    def condition(self, item: Any, rule: LineDict, pack: dict[str, Any], line: int) -> c.Condition | None:
        if isinstance(item, str):
            name, arg = item, None
        elif isinstance(item, dict) and len(item) == 1:
            name, arg = next(iter(item.items()))
            line = item.line if isinstance(item, LineDict) else line
        else:
            self.fail("each 'require' entry is a condition name or a one-key mapping", line)
            return None
        rid = rule.get("id", "?")
        if name == "consent":
            if arg not in CONSENT_FLAGS:
                self.fail(f"rule '{rid}': consent must be one of {', '.join(sorted(CONSENT_FLAGS))}", line)
                return None
            return c.Consent(str(arg))
        if name == "not_opted_out":
            return c.NotOptedOut()
        if name == "legal_request":
            if arg in (None, "any"):
                return c.LegalRequestRequired(frozenset(t for t in LegalRequestType if t.value != "NONE"))
            accepted = self.enum_set(LegalRequestType, arg, "legal request type", line)
            accepted = frozenset(t for t in accepted if t is not LegalRequestType.NONE)
            if not accepted:
                self.fail(f"rule '{rid}': legal_request accepts no real request, so it can never hold", line)
            return c.LegalRequestRequired(accepted)
        if name == "identifiability":
            accepted_i = self.enum_set(Identifiability, arg, "identifiability", line)
            if not accepted_i:
                self.fail(f"rule '{rid}': identifiability accepts nothing, so it can never hold", line)
            return c.IdentifiabilityIn(accepted_i)
        if name == "on_our_behalf":
            return c.OnOurBehalf()
        if name == "guardian_consent_if_minor":
            return c.GuardianConsentIfMinor()
        if name == "safeguard_if_cross_border":
            accepted_s = self.enum_set(Safeguard, arg, "safeguard", line)
            return c.SafeguardIfCrossBorder(frozenset(s for s in accepted_s if s is not Safeguard.NONE))
        if name == "only_categories":
            cats = [arg] if isinstance(arg, str) else list(arg or [])
            if not cats:
                self.fail(f"rule '{rid}': only_categories is empty, so it can never hold", line)
            for cat in cats:
                if cat not in pack["categories"]:
                    self.fail(f"rule '{rid}': unknown category '{cat}' (not in vocabulary.categories)", line)
            return c.OnlyCategories(frozenset(cats))
        if name == "purposes":
            wanted = [arg] if isinstance(arg, str) else list(arg or [])
            if not wanted:
                self.fail(f"rule '{rid}': purposes is empty, so it can never hold", line)
            for pu in wanted:
                if pu not in pack["purposes"]:
                    self.fail(f"rule '{rid}': unknown purpose '{pu}' (not in vocabulary.purposes)", line)
            return c.PurposeIn(frozenset(wanted))
        if name == "roles":
            roles = [arg] if isinstance(arg, str) else list(arg or [])
            if not roles:
                self.fail(f"rule '{rid}': roles is empty, so it can never hold", line)
            for role in roles:
                if role not in pack["roles"]:
                    self.fail(f"rule '{rid}': unknown role '{role}' (not in vocabulary.roles)", line)
            return c.RoleIn(frozenset(roles))
        if name == "actor_types":
            types = self.enum_set(ActorType, arg, "actor type", line)
            if not types:
                self.fail(f"rule '{rid}': actor_types is empty, so it can never hold", line)
            return c.ActorTypeIn(types)
        if name == "attribute":
            if not isinstance(arg, dict) or len(arg) != 1:
                self.fail(f"rule '{rid}': attribute takes one 'name: value' pair", line)
                return None
            key, value = next(iter(arg.items()))
            return c.AttributeEquals(str(key), str(value).lower() if isinstance(value, bool) else str(value))
        if name == "any_of":
            if not isinstance(arg, list) or len(arg) < 2:
                self.fail(f"rule '{rid}': any_of needs a list of at least two conditions", line)
                return None
            opts = [self.condition(o, rule, pack, line) for o in arg]
            return c.AnyOf(tuple(o for o in opts if o is not None))
        self.fail(f"rule '{rid}': unknown condition '{name}'", line)
        return None

    # ---------------------------------------------------------------- rules
    def scope(self, rule: LineDict, pack: dict[str, Any]) -> Scope:
        when = rule.get("when") or LineDict()
        rid = rule.get("id", "?")
        if not isinstance(when, LineDict):
            self.fail(f"rule '{rid}': 'when' must be a mapping", rule.line_of("when"))
            return Scope()
        self.unknown_keys(when, WHEN_KEYS, f"rule '{rid}' when")
        kinds = None
        if "kinds" in when:
            kinds = self.enum_set(EventKind, when["kinds"], "event kind", when.line_of("kinds"))
        lists: dict[str, frozenset[str] | None] = {}
        for key, vocab in (("recipients", "recipients"), ("purposes", "purposes"),
                           ("categories", "categories")):
            names = self.str_list(when, key, f"rule '{rid}' when")
            lists[key] = None if names is None else frozenset(names)
            for n in names or []:
                if n not in pack[vocab]:
                    self.fail(f"rule '{rid}': unknown {vocab[:-1].replace('ie', 'y')} '{n}' "
                              f"(not in vocabulary.{vocab})", when.line_of(key))
        for key in ("minor", "cross_border"):
            if key in when and not isinstance(when[key], bool):
                self.fail(f"rule '{rid}': when.{key} must be true or false", when.line_of(key))
        regions = None
        names_r = self.str_list(when, "regions", f"rule '{rid}' when")
        if names_r is not None:
            expanded: set[str] = set()
            for r in names_r:
                expanded |= REGION_GROUPS.get(r.upper(), frozenset({r.upper()}))
            regions = frozenset(expanded)
        if lists["recipients"] is not None and kinds is not None and EventKind.DISCLOSURE not in kinds:
            self.fail(f"rule '{rid}': names recipients but its kinds exclude DISCLOSURE, so it can "
                      "never match", when.line_of("recipients"))
        return Scope(kinds, lists["recipients"], lists["purposes"], lists["categories"],
                     when.get("minor"), when.get("cross_border"), regions)

    def rule(self, node: Any, pack: dict[str, Any], seen: set[str], index: int) -> Rule | None:
        if not isinstance(node, LineDict):
            self.fail(f"rule #{index + 1} must be a mapping", None)
            return None
        self.unknown_keys(node, RULE_KEYS, f"rule '{node.get('id', index + 1)}'")
        rid = self.text(node, "id", f"rule #{index + 1}")
        if rid in seen:
            self.fail(f"duplicate rule id '{rid}'", node.line_of("id"))
        seen.add(rid)
        try:
            effect = Effect(node.get("effect"))
        except ValueError:
            self.fail(f"rule '{rid}': effect must be 'permit' or 'prohibit'", node.line_of("effect"))
            effect = Effect.PERMIT
        severity = str(node.get("severity", "medium"))
        if severity not in SEVERITIES:
            self.fail(f"rule '{rid}': severity must be one of {', '.join(SEVERITIES)}", node.line_of("severity"))
        scope = self.scope(node, pack)
        conds: list[c.Condition] = []
        require = node.get("require") or []
        if not isinstance(require, list):
            self.fail(f"rule '{rid}': 'require' must be a list", node.line_of("require"))
            require = []
        line = getattr(require, "line", node.line)
        for item in require:
            cond = self.condition(item, node, pack, line)
            if cond is not None:
                conds.append(cond)
        self.never_holds(rid, scope, conds, node)
        return Rule(rid, effect, self.text(node, "clause", f"rule '{rid}'"),
                    self.text(node, "quote", f"rule '{rid}'"), severity, scope, tuple(conds),
                    node.get("explain"), node.line, tuple(_plain(x) for x in require))

    def never_holds(self, rid: str, scope: Scope, conds: list[c.Condition], node: LineDict) -> None:
        line = node.line_of("require")
        disclosure_possible = scope.kinds is None or EventKind.DISCLOSURE in scope.kinds
        for cond in conds:
            if isinstance(cond, c.OnOurBehalf) and not disclosure_possible:
                self.fail(f"rule '{rid}': on_our_behalf can never hold: the rule's kinds exclude "
                          "DISCLOSURE, so there is no recipient", line)
            if isinstance(cond, c.PurposeIn) and scope.purposes is not None and not (cond.purposes & scope.purposes):
                self.fail(f"rule '{rid}': purposes is disjoint from when.purposes, so it can never hold", line)
            if (isinstance(cond, c.OnlyCategories) and scope.categories is not None
                    and not (cond.allowed & scope.categories)):
                self.fail(f"rule '{rid}': only_categories is disjoint from when.categories, so it "
                          "can never hold", line)
            if isinstance(cond, c.Consent) and cond.flag == "guardian" and scope.minor is False:
                self.fail(f"rule '{rid}': guardian consent is required but the scope excludes minors", line)


def parse_pack(path: Path) -> Pack:
    """Load, validate and lint one pack file. Raise PolicyLintError with every finding."""
    raw = load_yaml(path)
    p = _Parser(path)
    if not isinstance(raw, LineDict):
        raise PolicyError("a pack must be a YAML mapping", path=str(path), line=1)
    p.unknown_keys(raw, TOP_KEYS, "the pack")
    pack_id = p.text(raw, "pack", "the pack")
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
        vocab.key_lines = {}
    p.unknown_keys(vocab, VOCAB_KEYS, "vocabulary")
    categories, purposes = p.terms(vocab, "categories"), p.terms(vocab, "purposes")
    recipients = p.terms(vocab, "recipients")
    for rtype in recipients:
        if rtype not in RECIPIENT_TYPES:
            p.fail(f"recipient type '{rtype}' is not one auditor knows: {', '.join(sorted(RECIPIENT_TYPES))}",
                   vocab["recipients"].line_of(rtype))
    roles = frozenset(p.str_list(vocab, "roles", "vocabulary") or [])
    names = {"categories": categories, "purposes": purposes, "recipients": recipients, "roles": roles}
    rules_node = raw.get("rules")
    if not isinstance(rules_node, list) or not rules_node:
        p.fail("the pack needs a non-empty 'rules' list", raw.line_of("rules"))
        rules_node = []
    seen: set[str] = set()
    rules = [r for i, n in enumerate(rules_node) if (r := p.rule(n, names, seen, i)) is not None]
    used = {pu for r in rules if r.scope.purposes for pu in r.scope.purposes}
    used |= {pu for r in rules for cond in r.conditions if isinstance(cond, c.PurposeIn) for pu in cond.purposes}
    any_purpose = any(r.scope.purposes is None and r.effect is Effect.PERMIT for r in rules)
    if not any_purpose:
        for purpose in purposes:
            if purpose not in used:
                p.fail(f"purpose '{purpose}' is declared but no rule uses it",
                       vocab["purposes"].line_of(purpose))
    minor_age = raw.get("minor_age", 18)
    if not isinstance(minor_age, int) or not 1 <= minor_age <= 25:
        p.fail("minor_age must be a whole number from 1 to 25", raw.line_of("minor_age"))
        minor_age = 18
    if p.findings:
        raise PolicyLintError(p.findings)
    synthetic = {
        name: RuleRef(f"{pack_id}.{name}", default.clause, default.quote, "high")
        for name in ("default-deny", "undeclared-category", "undeclared-purpose", "undeclared-recipient")
    }
    return Pack(
        id=pack_id, title=str(raw.get("title", pack_id)), source=str(raw.get("source", "")),
        version=str(raw.get("version", "1")), minor_age=minor_age, default=default,
        categories=categories, purposes=purposes, recipients=recipients, roles=roles,
        rules=tuple(rules), path=str(path), content_hash=content_hash(raw), synthetic=synthetic,
    )
