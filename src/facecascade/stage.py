"""Argv handling shared by the `pipeline/` stage entry points: usage line, exit 1 on bad input."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path

from .config import Config, ConfigError, load_config


def run(main: Callable[[], None]) -> None:
    """Run a stage's ``main``; if it raises, end the pipeline's open MLflow run FAILED.

    The exception then propagates (DVC sees a non-zero exit and the traceback or
    message); Ctrl-C ends the run KILLED. ``SystemExit`` from argument errors
    passes through untouched.
    """
    try:
        main()
    except SystemExit:
        raise
    except BaseException as exc:
        try:
            cfg = load_config(sys.argv[1])
        except (ConfigError, IndexError):
            raise exc from None
        from .tracking import fail_pipeline_run

        fail_pipeline_run(cfg, project_dir=Path.cwd(), error=exc,
                          status="KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise


def parse_argv(doc: str, names: list[str]) -> tuple[Config, dict[str, str]]:
    """Load params (first argument) and name the remaining positional arguments.

    Prints ``usage`` and exits 1 when the count is wrong or the params are invalid.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    args = sys.argv[1:]
    prog = Path(sys.argv[0]).name
    if len(args) != len(names) + 1:
        print(f"usage: python pipeline/{prog} PARAMS {' '.join(n.upper() for n in names)}\n"
              f"{doc.strip()}", file=sys.stderr)
        sys.exit(1)
    try:
        cfg = load_config(args[0])
    except ConfigError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        sys.exit(1)
    return cfg, dict(zip(names, args[1:], strict=False))
