"""`python -m bench [MODULE ...]`: run every benchmark module in MODULES (or only those named).

Each module is `bench/<name>.py` and exposes `main() -> int` (0: it ran and nothing broke).
A module that fails does not stop the others; the exit code is the worst one seen.
"""

from __future__ import annotations

import importlib
import sys
import time
import traceback
from collections.abc import Sequence

# In the order `make bench` runs them.
MODULES: list[str] = ["api", "ingest", "erasure", "latency", "retention", "races", "batch", "callbacks", "console"]


def run(names: Sequence[str]) -> int:
    worst = 0
    results: list[tuple[str, int, float]] = []
    for name in names:
        print(f"=== bench.{name} ===", flush=True)
        started = time.monotonic()
        try:
            code = int(importlib.import_module(f"bench.{name}").main() or 0)
        except KeyboardInterrupt:
            print(f"bench.{name}: interrupted", file=sys.stderr)
            return 130
        except Exception:
            traceback.print_exc()
            code = 1
        results.append((name, code, time.monotonic() - started))
        worst = max(worst, code)
        print(flush=True)
    print("=== summary ===")
    for name, code, seconds in results:
        print(f"  {name:<12} {'ok' if code == 0 else f'FAILED (exit {code})':<16} {seconds:6.1f} s")
    return worst


def main(argv: Sequence[str] | None = None) -> int:
    names = list(sys.argv[1:] if argv is None else argv) or MODULES
    unknown = [n for n in names if n not in MODULES]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(MODULES)}", file=sys.stderr)
        return 2
    return run(names)


if __name__ == "__main__":
    sys.exit(main())
