"""Policy packs (language 2): loading, linting, compilation to lookups, and pure evaluation.

The API other packages use: ``load_pack(id_or_path) -> CompiledPack`` and
``evaluate(event, compiled) -> Decision``; the daemon wraps ``evaluate`` in ``MemoEvaluator``.
"""

from auditor.policy.decision import Decision, RuleRef, Verdict, Violation, ViolationKind
from auditor.policy.engine import CompiledPack, MemoEvaluator, compile_pack, evaluate, load_pack
from auditor.policy.loader import bundled_pack_names, parse_pack, resolve_pack

__all__ = [
    "CompiledPack",
    "Decision",
    "MemoEvaluator",
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
