"""Mutation testing of the modules that hold vitkit's contracts, against the fast tests (``make mutants``).

mutmut (configured in pyproject.toml, ``[tool.mutmut]``) changes the code one small step at a time (an
operator, a number, a string, an argument) and runs the fast tests that reach the changed function; a
mutant that no test fails on "survives". This runs it and prints the score per module:

    python tests/mutation.py            # mutmut run, then the table and every survivor's name
    python tests/mutation.py --report   # the table of the last run only

mutmut 3 mutates code inside functions. Module-level tables (a family's weight-name rules, the presets'
configurations) are not mutated; every rule is exercised by the parity tests against timm, transformers and
ml-cvnets, where a changed rule fails to load or gives other logits.

The threads are pinned to one: mutmut forks a process per mutant, and a forked PyTorch that had started its
OpenMP pool can hang, which mutmut would report as a timeout.
"""

from __future__ import annotations

import collections
import os
import subprocess
import sys
from pathlib import Path

MUTMUT = str(Path(sys.executable).with_name("mutmut"))
DETECTED = {"killed", "timeout"}  # a timeout is a mutant the tests noticed (it hung or crashed them)


def run() -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    subprocess.run([MUTMUT, "run", "--max-children", str(os.cpu_count() or 1)], env=env, check=False)


def report() -> int:
    out = subprocess.run([MUTMUT, "results", "--all", "true"], capture_output=True, text=True, check=True).stdout
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    survivors = []
    for line in out.splitlines():
        name, _, status = line.strip().rpartition(": ")
        if not name:
            continue
        module = name.split(".x", 1)[0] if ".x" in name else name.rsplit(".", 1)[0]
        counts[module][status] += 1
        if status in ("survived", "no tests"):
            survivors.append(f"{status:<9} {name}")
    print("\n".join(survivors))
    print(f"\n{'module':<28}{'mutants':>8}{'killed':>8}{'survived':>9}{'no tests':>9}{'score':>8}")
    total = collections.Counter()
    for module, c in sorted(counts.items()):
        total += c
        detected, n = sum(c[s] for s in DETECTED), sum(c.values())
        print(f"{module:<28}{n:>8}{detected:>8}{c['survived']:>9}{c['no tests']:>9}{detected / max(n, 1):>8.1%}")
    detected, n = sum(total[s] for s in DETECTED), sum(total.values())
    print(f"{'all':<28}{n:>8}{detected:>8}{total['survived']:>9}{total['no tests']:>9}{detected / max(n, 1):>8.1%}")
    return 0


if __name__ == "__main__":
    if "--report" not in sys.argv:
        run()
    sys.exit(report())
