"""Regenerate tests/data/events/<pack>.jsonl from the example tables.

    python tests/data/make_event_files.py          # rewrite the files
    python tests/data/make_event_files.py --check  # exit 1 if they are stale (a test runs this)
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from auditor.events.codec import event_to_json  # noqa: E402
from auditor.policy.examples import examples_path, load_examples  # noqa: E402

PACKS = ["ipasar", "waimaotong", "ipmart", "inper", "thisproduct"]
OUT = Path(__file__).resolve().parent / "events"


def render(pack_id: str) -> str:
    lines = [f"# Example events of the {pack_id} pack, generated from tests/data/examples/{pack_id}.yaml"]
    lines += [event_to_json(ex.event) for ex in load_examples(examples_path(pack_id))]
    return "\n".join(lines) + "\n"


def main(check: bool) -> int:
    stale = []
    for pack_id in PACKS:
        path = OUT / f"{pack_id}.jsonl"
        text = render(pack_id)
        if check:
            if not path.is_file() or path.read_text() != text:
                stale.append(str(path))
        else:
            path.write_text(text)
    for s in stale:
        print(f"stale: {s} (run python tests/data/make_event_files.py)")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main("--check" in sys.argv))
