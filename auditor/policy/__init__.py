"""Policy packs: loading, linting, compilation to lookups, and pure evaluation."""

from auditor.policy.decision import Decision, RuleRef, Verdict, Violation, ViolationKind
from auditor.policy.engine import CompiledPack, compile_pack, evaluate, load_pack
from auditor.policy.loader import bundled_pack_names, parse_pack, resolve_pack

__all__ = [
    "CompiledPack",
    "Decision",
    "RuleRef",
    "Verdict",
    "Violation",
    "ViolationKind",
    "bundled_pack_names",
    "compile_pack",
    "evaluate",
    "load_pack",
    "parse_pack",
    "resolve_pack",
]
