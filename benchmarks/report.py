"""How a benchmark hands over its result: printed, and written to `--out` when given."""

from __future__ import annotations

import json
from pathlib import Path


def emit(result: dict, out: str | Path | None, *, line: bool = False) -> None:
    """Prints `result` as JSON; writes it to `out` (a file of its own), or with `line=True`
    appends it as one line (e.g. to the GPU suite's log)."""
    text = json.dumps(result) if line else json.dumps(result, indent=2)
    print(text)
    if not out:
        return
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if line:
        with out.open("a") as f:
            f.write(text + "\n")
    else:
        out.write_text(text + "\n")
