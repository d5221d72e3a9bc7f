"""The ``vitkit`` command: one sub-command per job, each a small function."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from vitkit.cli import evaluate as evaluate_cmd
from vitkit.cli import export as export_cmd
from vitkit.cli import models as models_cmd
from vitkit.cli import serve as serve_cmd
from vitkit.cli import train as train_cmd

# each module exposes add_parser(subparsers) and sets a ``run(args)`` default
COMMANDS = [train_cmd, evaluate_cmd, export_cmd, models_cmd, serve_cmd]


def build_parser() -> argparse.ArgumentParser:
    from vitkit import __version__

    parser = argparse.ArgumentParser(
        prog="vitkit",
        description="From a folder of labelled images to a small, fast image classifier on a phone.",
    )
    parser.add_argument("--version", action="version", version=f"vitkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.add_parsers(sub)
    # no prefix matching: `--batch-size` must not quietly mean bench's `--batch-sizes` (or a training option
    # spelled short land on another one)
    for p in [parser, *sub.choices.values()]:
        p.allow_abbrev = False
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "accepts_extra", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    from vitkit.errors import (
        EXIT_BROKEN_PIPE,
        EXIT_INTERRUPTED,
        EXIT_NOTHING_DONE,
        EXIT_USER_ERROR,
        NothingDone,
        OptionError,
    )
    from vitkit.export.deploy import MissingExtra

    try:
        code = args.run(args) or 0
        sys.stdout.flush()  # a closed pipe is met here, inside the try, not at interpreter exit
        return code
    except OptionError as e:
        print(f"vitkit {args.command}: error: {e.for_cli()}", file=sys.stderr)
        return EXIT_USER_ERROR
    except (ValueError, FileNotFoundError, TypeError, MissingExtra) as e:
        # errors a user can cause arrive here as one sentence; anything else is a bug and keeps its traceback
        print(f"vitkit {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except BrokenPipeError:
        # `vitkit eval RUN | head`: the reader left; end quietly, and keep Python from complaining at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except OSError as e:  # a full disk, a read-only folder, a file where a folder should be
        where = Path(e.filename).parent if e.filename and Path(e.filename).name.endswith(".tmp") else e.filename
        print(
            f"vitkit {args.command}: error: could not write {where or 'a file'} ({e.strerror or e}); free some space "
            "or choose another folder.",
            file=sys.stderr,
        )
        return EXIT_USER_ERROR
    except NothingDone as e:
        print(f"vitkit {args.command}: {e}", file=sys.stderr)
        return EXIT_NOTHING_DONE
    except KeyboardInterrupt:
        print(f"vitkit {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
