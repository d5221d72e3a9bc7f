"""Mutation testing of the modules that hold vitkit's contracts, against the fast tests (``make mutants``).

Each module is mutated by mutmut 2 (one small change at a time: an operator, a number, a string, a keyword),
the tests that guard it are run, and a mutant that no test fails on "survives". mutmut 2 rather than 3:
version 3 mutates only code inside functions, and the weight-name rules are module-level tables.

    python tests/mutation.py                                  # every target below
    python tests/mutation.py vitkit/models/mobilevit.py       # one of them
    python tests/mutation.py vitkit/x.py="tests/test_x.py"    # any module against any tests

mutmut is installed in its own environment (``MUTMUT``, default ``.mutmut-venv/bin/mutmut``); the tests run
with this interpreter. It prints the score per module and every surviving mutant's diff.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

FAST = "-m 'not slow'"
TARGETS = {
    # module: the fast tests that guard it, the quickest to fail first (pytest -x stops at the first failure)
    "vitkit/preprocess.py": "tests/test_preprocess.py tests/test_data.py",
    "vitkit/export/deploy.py": "tests/test_preprocess.py",
    "vitkit/checkpoint.py": "tests/test_checkpoint.py",
    "vitkit/weights/rename.py": "tests/test_timm_parity.py tests/test_load_weights.py tests/test_parity.py",
    "vitkit/models/mobilevit.py": "tests/test_timm_parity.py tests/test_parity.py tests/test_models.py",
}


def run_target(module: str, tests: str, mutmut: str) -> tuple[int, int, list[str]]:
    """(killed, total, surviving mutants' diffs) for one module."""
    Path(".mutmut-cache").unlink(missing_ok=True)
    runner = f"{shlex.quote(sys.executable)} -m pytest -x -q -p no:cacheprovider {FAST} {tests}"
    subprocess.run(
        [mutmut, "run", "--paths-to-mutate", module, "--runner", runner, "--no-progress", "--simple-output"],
        check=False,
    )
    ids = {
        status: subprocess.run([mutmut, "result-ids", status], capture_output=True, text=True).stdout.split()
        for status in ("killed", "survived", "suspicious", "timeout", "untested", "skipped")
    }
    killed = len(ids["killed"])
    total = sum(len(v) for v in ids.values())
    diffs = [
        subprocess.run([mutmut, "show", i], capture_output=True, text=True).stdout
        for i in ids["survived"] + ids["suspicious"] + ids["untested"]
    ]
    return killed, total, diffs


def main(argv: list[str]) -> int:
    mutmut = os.environ.get("MUTMUT", ".mutmut-venv/bin/mutmut")
    targets = {}
    for arg in argv or list(TARGETS):
        module, _, tests = arg.partition("=")
        targets[module] = tests or TARGETS[module]
    rows = []
    for module, tests in targets.items():
        killed, total, diffs = run_target(module, tests, mutmut)
        rows.append((module, killed, total))
        for diff in diffs:
            print(f"survived in {module}:\n{diff}")
    print(f"\n{'module':<34}{'killed':>8}{'mutants':>9}{'score':>8}")
    for module, killed, total in rows:
        print(f"{module:<34}{killed:>8}{total:>9}{killed / max(total, 1):>8.1%}")
    killed, total = sum(r[1] for r in rows), sum(r[2] for r in rows)
    print(f"{'all':<34}{killed:>8}{total:>9}{killed / max(total, 1):>8.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
