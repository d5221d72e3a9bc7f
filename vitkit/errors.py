"""The errors a user can fix, and the exit codes every ``vitkit`` command honours.

| code | meaning                                                                  |
| ---- | ------------------------------------------------------------------------ |
| 0    | success                                                                  |
| 1    | nothing done: every input was unreadable (``vitkit predict``)            |
| 2    | an error the user can fix: a bad option, a missing file, a full disk ... |
| 130  | interrupted (Ctrl-C)                                                     |
| 141  | the output pipe was closed (``vitkit eval RUN | head``), ended quietly   |
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_NOTHING_DONE = 1
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141


class OptionError(ValueError):
    """A bad option value, named as the interface that received it names it: ``batch_size`` for Python
    callers and recipes (``str()``), ``--batch-size`` on the command line (``for_cli()``)."""

    def __init__(self, option: str, problem: str):
        super().__init__(option, problem)
        self.option, self.problem = option, problem

    def __str__(self) -> str:
        return f"{self.option} {self.problem}"

    def for_cli(self) -> str:
        return f"--{self.option.replace('_', '-')} {self.problem}"


class NothingDone(Exception):
    """The command ran but had nothing to show for it (exit code 1)."""
