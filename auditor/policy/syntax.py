"""Parse the tests of a rule (its ``when`` scope and ``require`` conditions) into condition values.

One grammar serves both places: a test is ``name: argument``; a mapping of several tests means
all of them; ``not``, ``any_of`` and ``all_of`` nest freely. Every fault is reported through the
parser's ``fail`` with the line, and parsing goes on so that one lint run shows every finding.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from auditor.events.model import EventKind, Safeguard
from auditor.policy import conditions as c
from auditor.policy.yamlsrc import LineDict

#: Region groups every pack may name; a pack may declare more under ``vocabulary.regions``.
BUILTIN_REGIONS: dict[str, frozenset[str]] = {
    "EEA": frozenset({"AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IE", "IT",
                      "LV", "LT", "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE", "IS", "LI", "NO",
                      "EEA", "EU"}),
    "EU": frozenset({"AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IE", "IT",
                     "LV", "LT", "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE", "EU"}),
    # European Commission adequacy decisions in force in 2025 (the US only for organisations
    # certified under the Data Privacy Framework, so it is not listed; state it per event instead).
    "EU_ADEQUACY": frozenset({"AD", "AR", "CA", "CH", "FO", "GB", "GG", "IL", "IM", "JE", "JP", "KR", "NZ", "UY"}),
}
COUNTRY = re.compile(r"^[A-Z]{2}$")
UNKNOWN_WORDS = {"unknown", "UNKNOWN"}

Fail = Callable[[str, int | None], None]


def flow(value: Any) -> str:
    """A one-line YAML-ish rendering of a parsed value, for reports and ``policy show``."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(flow(v) for v in value) + "]"
    if value is None:
        return "~"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class Vocab:
    """What a rule may name: the pack's vocabulary, compiled."""

    def __init__(self, atoms: dict[str, frozenset[str]], categories: set[str], purposes: set[str],
                 recipients: set[str], roles: set[str], regions: dict[str, frozenset[str]]) -> None:
        self.atoms, self.categories, self.purposes = atoms, categories, purposes
        self.recipients, self.roles, self.regions = recipients, roles, regions


class TestParser:
    """Parses the tests of one rule. ``used`` collects the vocabulary names the rule mentions."""

    def __init__(self, vocab: Vocab, fail: Fail, rid: str, warn: Fail | None = None) -> None:
        self.vocab, self._fail, self.rid, self._warn = vocab, fail, rid, warn
        self.used: dict[str, set[str]] = {"purposes": set(), "recipients": set(), "categories": set()}

    def fail(self, message: str, line: int | None) -> None:
        self._fail(f"rule '{self.rid}': {message}", line)

    def warn(self, message: str, line: int | None) -> None:
        if self._warn is not None:
            self._warn(f"warning: rule '{self.rid}': {message}", line)

    # ------------------------------------------------------------ helpers
    def names(self, name: str, arg: Any, line: int) -> list[Any]:
        values = arg if isinstance(arg, list) else [arg]
        if not values:
            self.fail(f"'{name}' is an empty list, so it can never hold", line)
        return values

    def enum_values(self, name: str, fact: str, arg: Any, line: int, unknown_ok: bool = False) -> frozenset[Any]:
        cls: Any = c.ENUMS[fact]
        out: set[Any] = set()
        for v in self.names(name, arg, line):
            if v is None or (unknown_ok and str(v).upper() == "UNKNOWN"):
                if not unknown_ok:
                    self.fail(f"'{name}' cannot be unknown", line)
                out.add(None)
                continue
            try:
                out.add(cls(str(v).upper()))
            except ValueError:
                self.fail(f"unknown {name} value '{v}'; expected one of {', '.join(x.value for x in cls)}", line)
        return frozenset(out)

    def vocab_values(self, name: str, arg: Any, line: int, declared: set[str], what: str,
                     unknown_ok: bool = False) -> frozenset[Any]:
        out: set[Any] = set()
        for v in self.names(name, arg, line):
            if unknown_ok and (v is None or v in UNKNOWN_WORDS):
                out.add(None)
            elif not isinstance(v, str) or v not in declared:
                self.fail(f"unknown {what} '{v}' (not in vocabulary.{what.replace(' ', '_')}s)"
                          .replace("categorys", "categories"), line)
            else:
                out.add(v)
        return frozenset(out)

    def regions(self, name: str, arg: Any, line: int) -> frozenset[str | None]:
        out: set[str | None] = set()
        for v in self.names(name, arg, line):
            if v is None or v in UNKNOWN_WORDS:
                out.add(None)
                continue
            code = str(v)
            if code in self.vocab.regions:
                out |= self.vocab.regions[code]
            elif COUNTRY.match(code):
                out.add(code)
            else:
                self.fail(f"'{name}': '{v}' is neither an ISO 3166 country code (two capital letters) nor a "
                          f"region ({', '.join(sorted(self.vocab.regions))})", line)
        return frozenset(out)

    def tri(self, name: str, arg: Any, line: int) -> frozenset[bool | None]:
        out: set[bool | None] = set()
        for v in self.names(name, arg, line):
            if isinstance(v, bool):
                out.add(v)
            elif v is None or v in UNKNOWN_WORDS:
                out.add(None)
            else:
                self.fail(f"'{name}' takes true, false or unknown, not '{v}'", line)
        return frozenset(out)

    def category_atoms(self, name: str, arg: Any, line: int) -> tuple[frozenset[str], frozenset[str]]:
        names: set[str] = set()
        atoms: set[str] = set()
        for v in self.names(name, arg, line):
            if not isinstance(v, str) or v not in self.vocab.atoms:
                self.fail(f"unknown category '{v}' (not in vocabulary.categories or .elements)", line)
                continue
            names.add(v)
            atoms |= self.vocab.atoms[v]
        self.used["categories"] |= names
        return frozenset(names), frozenset(atoms)

    # ------------------------------------------------------------ one test
    def test(self, name: str, arg: Any, line: int) -> c.Condition | None:  # noqa: C901 - one branch per test
        src = f"{name}: {flow(arg)}" if arg is not None or name not in BARE else name
        fact = FACT_TESTS.get(name)
        if fact is not None:
            fact_name, kind = fact
            if kind == "enum":
                vals: frozenset[Any] = self.enum_values(name, fact_name, arg, line,
                                                        unknown_ok=fact_name == "actor.organisation")
            elif kind == "region":
                vals = self.regions(name, arg, line)
            elif kind == "tri":
                vals = self.tri(name, True if arg is None else arg, line)
            elif kind == "bool":
                if not isinstance(arg, bool):
                    self.fail(f"'{name}' must be true or false", line)
                vals = frozenset({bool(arg)})
            elif kind == "text":
                vals = frozenset(None if v is None or v in UNKNOWN_WORDS else str(v).lower()
                                 for v in self.names(name, arg, line))
            elif kind == "purposes":
                vals = self.vocab_values(name, arg, line, self.vocab.purposes, "purpose")
                self.used["purposes"] |= set(vals)
            elif kind == "recipients":
                vals = self.vocab_values(name, arg, line, self.vocab.recipients, "recipient")
                self.used["recipients"] |= set(vals)
            elif kind == "roles":
                vals = self.vocab_values(name, arg, line, self.vocab.roles, "role", unknown_ok=True)
            else:  # plain strings
                vals = frozenset(str(v) for v in self.names(name, arg, line))
            return c.FactIn(name, fact_name, vals, src, optional=fact_name in c.OPTIONAL_FACTS)
        if name == "legal_request":
            return self.legal_request(arg, line, src)
        if name == "categories":
            names, atoms = self.category_atoms(name, arg, line)
            return c.CategoriesAny(names, atoms, src)
        if name == "only_categories":
            names, atoms = self.category_atoms(name, arg, line)
            return c.OnlyCategories(names, atoms, src)
        if name == "consent":
            if arg not in c.CONSENT_FLAGS:
                self.fail(f"consent must be one of {', '.join(c.CONSENT_FLAGS)}", line)
                return None
            return c.Consent(str(arg), src)
        if name == "not_opted_out":
            if arg not in (None, "marketing"):
                self.fail("not_opted_out takes 'marketing' (the only opt-out events carry)", line)
            return c.NotOptedOut("not_opted_out: marketing")
        if name == "attribute":
            if not isinstance(arg, dict) or len(arg) != 1:
                self.fail("attribute takes one 'name: value' (or 'name: [values]') pair", line)
                return None
            key, value = next(iter(arg.items()))
            values = value if isinstance(value, list) else [value]
            if not values:
                self.fail("attribute has an empty list of values, so it can never hold", line)
            if any(isinstance(v, (dict, list)) for v in values):
                self.fail("attribute values are plain strings, true, false or ~", line)
            quoted = sorted({str(v) for v in values if isinstance(v, str) and v.lower() in c.BOOL_TEXT})
            if quoted:
                self.warn(f"attribute '{key}': {', '.join(repr(q) for q in quoted)} "
                          f"{'is' if len(quoted) == 1 else 'are'} quoted; write true or false unquoted (quoted or "
                          "not, it is read as a boolean: the attribute's text matches in any case)", line)
            def boolean(v: Any) -> bool:
                return isinstance(v, bool) or (isinstance(v, str) and v.lower() in c.BOOL_TEXT)
            return c.AttributeEquals(str(key), frozenset(
                None if v is None else (str(v).lower() if boolean(v) else str(v)) for v in values), src,
                booleans=any(boolean(v) for v in values))
        if name == "transfer_outside":
            inside = self.regions(name, arg, line)
            return c.TransferOutside(frozenset(r for r in inside if r is not None), src)
        if name == "safeguard_if_cross_border":
            return self.safeguard(arg, line, src)
        if name in ("any_of", "all_of"):
            if not isinstance(arg, list) or len(arg) < 2:
                self.fail(f"{name} needs a list of at least two conditions", line)
                return None
            parts = tuple(p for item in arg if (p := self.item(item, _line(item, line))) is not None)
            return c.AnyOf(parts, src) if name == "any_of" else c.AllOf(parts, src)
        if name == "not":
            inner = self.item(arg, _line(arg, line))
            return None if inner is None else c.Not(inner, src)
        self.fail(f"unknown condition '{name}'; expected one of {', '.join(sorted(ALL_TESTS))}", line)
        return None

    def legal_request(self, arg: Any, line: int, src: str) -> c.Condition:
        accepted: set[Any] = set()
        for v in self.names("legal_request", "any" if arg is None else arg, line):
            key = str(v).lower()
            if key in c.LEGAL_REQUEST_SETS:
                accepted |= c.LEGAL_REQUEST_SETS[key]
            else:
                accepted |= self.enum_values("legal_request", "legal_request.type", [v], line)
        return c.FactIn("legal_request", "legal_request.type", frozenset(accepted), src)

    def safeguard(self, arg: Any, line: int, src: str) -> c.Condition:
        if isinstance(arg, dict):
            unknown = set(arg) - {"safeguards", "adequate", "within"}
            if unknown:
                self.fail(f"safeguard_if_cross_border takes safeguards, adequate and within, not "
                          f"{', '.join(sorted(unknown))}", line)
            raw_safe, adequate_arg, within_arg = arg.get("safeguards", []), arg.get("adequate"), arg.get("within")
        else:
            raw_safe, adequate_arg, within_arg = arg, None, None
        safe = self.enum_values("safeguard_if_cross_border", "safeguard", raw_safe, line) if raw_safe else frozenset()
        adequate = self.regions("adequate", adequate_arg, line) if adequate_arg is not None else frozenset()
        within = tuple(self.regions("within", [w], line) for w in (within_arg or []))
        if not safe and not adequate and not within:
            self.fail("safeguard_if_cross_border accepts nothing, so a cross-border transfer can never pass", line)
        return c.SafeguardIfCrossBorder(frozenset(s for s in safe if s is not Safeguard.NONE),
                                        frozenset(a for a in adequate if a is not None),
                                        tuple(frozenset(r for r in w if r is not None) for w in within), src)

    # ------------------------------------------------------------ items and lists
    def item(self, node: Any, line: int) -> c.Condition | None:
        """A bare name, a one-key mapping, or a mapping of several tests (all of them)."""
        if isinstance(node, str):
            if node not in BARE:
                self.fail(f"'{node}' needs an argument (write '{node}: ...')" if node in ALL_TESTS
                          else f"unknown condition '{node}'", line)
                return None
            return self.test(node, None, line)
        if isinstance(node, dict) and node:
            parts = [t for k, v in node.items() if (t := self.test(str(k), v, _key_line(node, k, line))) is not None]
            if len(parts) == 1:
                return parts[0]
            return c.AllOf(tuple(parts), flow(dict(node)))
        self.fail("a condition is a name or a mapping of 'test: argument'", line)
        return None


def _line(node: Any, default: int) -> int:
    return getattr(node, "line", 0) or default


def _key_line(node: Any, key: Any, default: int) -> int:
    return node.line_of(str(key)) if isinstance(node, LineDict) else default


#: test name -> (fact, how its argument is read)
FACT_TESTS: dict[str, tuple[str, str]] = {
    "kinds": ("kind", "enum"),
    "purposes": ("purpose", "purposes"),
    "recipients": ("recipient.type", "recipients"),
    "recipient_ids": ("recipient.id", "strings"),
    "recipient_countries": ("recipient.country", "region"),
    "on_our_behalf": ("recipient.on_our_behalf", "tri"),
    "identifiability": ("identifiability", "enum"),
    "legal_bases": ("legal_basis", "text"),
    "actor_types": ("actor.type", "enum"),
    "actor_organisations": ("actor.organisation", "enum"),
    "actor_is_subject": ("actor.is_subject", "bool"),
    "roles": ("actor.role", "roles"),
    "minor": ("subject.minor", "tri"),
    "regions": ("subject.region", "region"),
    "cross_border": ("transfer.cross_border", "bool"),
    "destinations": ("transfer.destination_country", "region"),
    "safeguards": ("transfer.safeguard", "enum"),
    "recipient_abroad": ("recipient.abroad", "tri"),
}
OTHER_TESTS = {"legal_request", "categories", "only_categories", "consent", "not_opted_out", "attribute",
               "transfer_outside", "safeguard_if_cross_border", "any_of", "all_of", "not"}
ALL_TESTS = set(FACT_TESTS) | OTHER_TESTS
BARE = {"on_our_behalf", "not_opted_out", "legal_request"}
#: Tests that can only hold for a DISCLOSURE (they read the recipient).
RECIPIENT_TESTS = {"recipients", "recipient_ids", "recipient_countries", "on_our_behalf", "recipient_abroad"}
KINDS_ALL = frozenset(EventKind)
