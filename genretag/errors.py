"""Errors a user can fix, and the one place that turns any error into a line and an exit code.

Every command (Lightning's and genretag's own) runs through :func:`run_command`:

* ConfigError (a setting, path or file that is wrong) and jsonargparse's ArgumentError: one
  line naming the setting, exit code 2;
* an OSError for want of space (ENOSPC, EFBIG, EDQUOT): one line naming the file, exit code 1
  (the writers keep earlier output);
* an error that carries its own ``exit_code`` (a failed download): its line and code;
* Ctrl-C: one line, exit code 130.

``--verbose`` (``VERBOSE``, set by the CLI) lets the traceback through instead, for every command.
"""

from __future__ import annotations

import argparse
import errno
import re
import sys
from collections.abc import Callable, Sequence

DISK_FULL = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}
VERBOSE = False  # genretag.cli sets it from --verbose


class ConfigError(ValueError):
    """A setting, path or file the user gave is wrong; the message names it and says what to do."""


class CommandParser(argparse.ArgumentParser):
    """argparse for genretag's own commands: a bad command line is one ConfigError line (exit 2
    through :func:`run_command`), not argparse's usage block."""

    def error(self, message: str) -> None:
        raise ConfigError(f"{message} (see {self.prog} --help)")


def one_line(error: argparse.ArgumentError) -> str:
    """jsonargparse's nested report -> ``data.subset: Expected a ... Got value: tiny``."""
    text = str(error)
    keys = re.findall(r'Parser key "([^"]+)"', text)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    last = max((i for i, line in enumerate(lines) if line.startswith("Parser key")), default=None)
    if last is None or last + 1 >= len(lines):
        return lines[0] if lines else text
    return f"{'.'.join(dict.fromkeys(keys))}: {lines[last + 1]}"


def run_command(
    name: str | None,
    run: Callable[[list[str]], int | None],
    argv: Sequence[str] | None,
    again: str = "",
    full_disk: str = "",
) -> int:
    """``run(argv)``'s exit code, every error mapped as the module docstring says.

    ``name`` goes into the messages (``genretag tag: error: ...``); ``again`` is what to do after
    an interruption ("run the same command again to continue"), ``full_disk`` after a full disk.
    """
    prefix = f"genretag {name}" if name else "genretag"
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        return int(run(args) or 0)
    except SystemExit as done:  # --help, or argparse's own usage error
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 2)
    except (ConfigError, argparse.ArgumentError) as error:
        if VERBOSE:
            raise
        message = one_line(error) if isinstance(error, argparse.ArgumentError) else str(error)
        print(f"{prefix}: error: {message} (--verbose for details)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if VERBOSE:
            raise
        print(f"{prefix}: interrupted{'; ' + again if again else ''}", file=sys.stderr)
        return 130
    except Exception as error:
        code = getattr(error, "exit_code", None)
        full = isinstance(error, OSError) and error.errno in DISK_FULL
        if VERBOSE or not (full or isinstance(code, int)):
            raise
        message = (error.strerror or str(error)) if isinstance(error, OSError) else str(error)
        if isinstance(error, OSError) and error.filename:
            message += f": {error.filename}"
        hint = f"; {full_disk}" if full and full_disk else ""
        print(f"{prefix}: error: {message}{hint}", file=sys.stderr)
        return code if isinstance(code, int) else 1
