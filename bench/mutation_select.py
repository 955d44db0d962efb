"""Generate mutmut's mutants and pick the ones that can change a verification or a verdict.

Run inside a throw-away copy of the repository that holds a ``setup.cfg`` with a ``[mutmut]``
section (docs/mutation.md has the whole command), with mutmut 3.8 importable::

    python bench/mutation_select.py generate            # writes mutants/ (no test is run)
    python bench/mutation_select.py select trail > selected.txt
    python bench/mutation_select.py select policy > selected.txt
    python bench/mutation_select.py counts              # status of every generated mutant
    python bench/mutation_select.py survivors selected.txt  # what was not killed, with the change
    python bench/mutation_select.py diffs NAME...       # the diff of each named mutant
    python bench/mutation_select.py check DIR TEST.py NAME...  # TEST.py passes in DIR, fails with each mutant

``select`` keeps a mutant when (1) its function is on the list below of functions whose result
decides ``auditor verify``, ``auditor verify-proof`` or a policy verdict, and (2) its diff changes a
comparison, a boolean operator, a number, ``True``/``False``/``None``, a ``return`` or a ``break``/
``continue`` (messages are left out: a changed error text does not change a decision).
"""

from __future__ import annotations

import difflib
import io
import json
import os
import re
import sys
import tokenize
from collections import Counter
from fnmatch import fnmatch
from pathlib import Path

# Functions (mutmut's mangled names, globbed) whose result decides verify / verify-proof.
TRAIL = [
    "auditor.trail.hashing.*", "auditor.trail.merkle.*", "auditor.trail.chain.*", "auditor.trail.chainid.*",
    "auditor.trail.proof.*", "auditor.trail.verify.*", "auditor.trail.note.*", "auditor.trail.checkpoint.*",
    "auditor.trail.anchor.*", "auditor.trail.segment.*", "auditor.trail.source.*", "auditor.trail.keys.*",
]
# Left out: the writer's side (key generation and files, signing, checkpoint writing), pseudonyms,
# and text only (an issue's printed form, a duration's format).
TRAIL_OUT = [
    "*__repr__*", "*__str__*",
    "auditor.trail.keys.*generate*", "auditor.trail.keys.x__write_private*", "auditor.trail.keys.x__check_private*",
    "auditor.trail.keys.x__name_beside*", "auditor.trail.keys.*seudonym*", "auditor.trail.keys.*Signer*",
    "auditor.trail.note.*NoteSigner*", "auditor.trail.note.x_sign_note*", "auditor.trail.checkpoint.x__escape*",
    "auditor.trail.checkpoint.x_make_checkpoint*", "auditor.trail.checkpoint.*to_json*",
    "auditor.trail.proof.*to_json*", "auditor.trail.verify.x__fmt*",
]
POLICY = [
    "auditor.policy.engine.*", "auditor.policy.conditions.*", "auditor.policy.codegen.*", "auditor.policy.decision.*",
]
# Left out: reasons (the text of a verdict, not the verdict), the memo's memory accounting, and the
# JSON form of a decision.
POLICY_OUT = [
    "*__repr__*", "*__str__*", "*reason*", "*describe*", "*x__show*", "*x_words*",
    "auditor.policy.engine.x__entry_bytes*", "auditor.policy.engine.x__plan_bytes*",
    "auditor.policy.engine.*memo_entries*", "auditor.policy.engine.*clear_memo*",
    "auditor.policy.decision.*to_dict*",
]

CMP = {"==", "!=", "<", "<=", ">", ">=", "is", "in"}
BOOL = {"and", "or", "not"}
ARITH = {"+", "-", "*", "/", "//", "%", "&", "|", "^", "<<", ">>", "**", "~"}
CONST = {"True", "False", "None"}
TIER1 = ("compare", "boolean", "return", "literal")
TIER2 = ("number", "arith")


def _toks(line: str) -> list[str]:
    """Python tokens of one line; a line cut inside brackets gives the tokens before the cut."""
    skip = (tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER, tokenize.INDENT, tokenize.DEDENT, tokenize.COMMENT)
    out: list[str] = []
    try:
        for t in tokenize.generate_tokens(io.StringIO(line.strip() + "\n").readline):
            if t.type not in skip:
                out.append(t.string)
    except (tokenize.TokenError, IndentationError, SyntaxError):
        pass
    return out or line.split()


def kind(minus: list[str], plus: list[str]) -> str:
    """What a mutant changes: compare, boolean, return, literal, number, arith, to_none, string, other."""
    if len(minus) != len(plus) or not minus:
        return "other"
    a = [t for line in minus for t in _toks(line)]
    b = [t for line in plus for t in _toks(line)]
    changed: list[str] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag != "equal":
            changed += a[i1:i2] + b[j1:j2]
    s = set(changed)
    if s & CMP:
        return "compare"
    if s & BOOL:
        return "boolean"
    if any(re.fullmatch(r"\d[\d_]*|0x[0-9a-fA-F]+|\d+\.\d*", t) for t in s):
        return "number"
    if s & {"break", "continue", "return"}:
        return "return"
    if s & CONST and all(t in CONST or t in "(),." or t.isidentifier() for t in s):
        if s <= CONST:
            return "literal"
        return "return" if minus[0].strip().startswith("return") else "to_none"
    if s & ARITH:
        return "arith"
    if s and all(t[:1] in "\"'" or t[:2].lstrip("rbfu")[:1] in "\"'" for t in s):
        return "string"
    return "other"


def _config() -> None:
    from mutmut.configuration import config

    config()


def generate() -> None:
    import os

    from mutmut.__main__ import (
        copy_also_copy_files,
        copy_src_dir,
        create_mutants,
        set_mutant_under_test,
        setup_source_paths,
    )

    set_mutant_under_test("mutant_generation")
    os.makedirs("mutants", exist_ok=True)
    copy_src_dir()
    copy_also_copy_files()
    setup_source_paths()
    stats = create_mutants(1)
    print(f"{stats.mutated} files mutated", file=sys.stderr)


def _all() -> list[tuple[str, object, int | None]]:
    from mutmut.__main__ import walk_mutatable_files
    from mutmut.mutation.data import SourceFileMutationData

    out = []
    for path in walk_mutatable_files():
        m = SourceFileMutationData(path=path)
        m.load()
        for key, code in m.exit_code_by_key.items():
            out.append((key, path, code))
    return out


def _diff(name: str, path: object) -> str:
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    return str(get_diff_for_mutant(name, path=path))


def _changed_code(diff: str) -> tuple[list[str], list[str]]:
    minus = [line[1:] for line in diff.splitlines() if line.startswith("-") and not line.startswith("---")]
    plus = [line[1:] for line in diff.splitlines() if line.startswith("+") and not line.startswith("+++")]
    return minus, plus


def _changes() -> dict[str, tuple[list[str], list[str]]]:
    """Every generated mutant's removed and added lines (cached in mutants/changes.json)."""
    cache = "mutants/changes.json"
    if os.path.exists(cache):
        return {k: (m, p) for k, (m, p) in json.loads(Path(cache).read_text()).items()}
    out = {key: _changed_code(_diff(key, path)) for key, path, _ in _all()}
    with open(cache, "w") as fh:
        json.dump(out, fh)
    return out


def select(area: str, tiers: str = "1,2") -> None:
    inc, out = (TRAIL, TRAIL_OUT) if area == "trail" else (POLICY, POLICY_OUT)
    wanted = (TIER1 if "1" in tiers else ()) + (TIER2 if "2" in tiers else ())
    why = Counter[str]()
    for key, (minus, plus) in sorted(_changes().items()):
        k = kind(minus, plus)
        if not any(fnmatch(key, p) for p in inc) or any(fnmatch(key, p) for p in out):
            why[f"left out, function: {k}"] += 1
        elif k not in wanted:
            why[f"left out, kind: {k}"] += 1
        else:
            why[f"selected: {k}"] += 1
            print(key)
    for w, n in sorted(why.items()):
        print(f"{n:6d} {w}", file=sys.stderr)
    print(f"{sum(n for w, n in why.items() if w.startswith('selected')):6d} selected of {sum(why.values())}",
          file=sys.stderr)


def counts(names_file: str | None = None) -> None:
    from mutmut.stats import status_by_exit_code

    wanted = set(Path(names_file).read_text().split()) if names_file else None
    c = Counter[str]()
    for key, _, code in _all():
        if wanted is None or key in wanted:
            c[status_by_exit_code[code]] += 1
    for k, v in sorted(c.items()):
        print(f"{k}: {v}")
    print(f"total: {sum(c.values())}")


def survivors(names_file: str) -> None:
    """Each mutant of ``names_file`` that was not killed, with its status and its change."""
    from mutmut.stats import status_by_exit_code

    wanted = set(Path(names_file).read_text().split())
    changes = _changes()
    for key, _, code in sorted(_all(), key=lambda x: x[0]):
        status = status_by_exit_code[code]
        if key in wanted and status not in ("killed", "not checked"):
            minus, plus = changes[key]
            print(f"{status:12s} {key}\n    - {' / '.join(m.strip() for m in minus)}"
                  f"\n    + {' / '.join(p.strip() for p in plus)}")


def check(where: str, tests: list[str], names: list[str]) -> None:
    """Run ``tests`` in the mutated copy ``where`` (a copy of ``mutants/`` with the new tests added),
    once without a mutant (must pass) and once per named mutant (must fail: killed)."""
    import subprocess

    def run(name: str) -> int:
        env = dict(os.environ, MUTANT_UNDER_TEST=name)
        cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests]
        return subprocess.run(cmd, cwd=where, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode

    base = run("")
    print(f"{'passes' if base == 0 else 'FAILS'} without a mutant")
    for name in names:
        print(f"{'killed' if run(name) != 0 else 'SURVIVED':8s} {name}", flush=True)


def diffs(names: list[str]) -> None:
    from mutmut.stats import status_by_exit_code

    by_name = {key: (path, code) for key, path, code in _all()}
    for name in names:
        path, code = by_name[name]
        print(f"# {name}: {status_by_exit_code[code]}")
        print(_diff(name, path))


def main(argv: list[str]) -> int:
    _config()
    cmd, rest = argv[0], argv[1:]
    if cmd == "generate":
        generate()
    elif cmd == "select":
        select(rest[0], rest[1] if len(rest) > 1 else "1,2")
    elif cmd == "counts":
        counts(rest[0] if rest else None)
    elif cmd == "survivors":
        survivors(rest[0])
    elif cmd == "check":
        tests = [a for a in rest[1:] if "::" in a or a.endswith(".py")]
        check(rest[0], tests, [a for a in rest[1:] if a not in tests])
    elif cmd == "diffs":
        diffs(rest)
    else:
        print(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
