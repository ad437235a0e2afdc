"""The ``keel`` command line.

    keel migrate   apply database migrations (alembic upgrade head)
    keel api       serve the HTTP and WebSocket API with uvicorn
    keel worker    run a Temporal worker for Keel's workflows and activities
    keel up        the embedded platform: Temporal dev server + migrations + worker + API
    keel watch ID  print an execution's events live, one JSON object per line
                   (with the API key in KEEL_API_KEY)
    keel user create EMAIL --role ROLE     a user, member of a workspace
    keel apikey create NAME --role ROLE    an API key, printed once

Every command reads its configuration from ``KEEL_*`` environment variables or
``.env`` (see ``.env.example``); none takes configuration flags.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version

from pydantic import ValidationError

from infra.logging import configure_logging, get_logger
from infra.settings import Settings, with_development_key
from keel import accounts

log = get_logger("keel.cli")


def cmd_migrate(settings: Settings, _args: argparse.Namespace) -> int:
    from sqlalchemy.engine import make_url

    from infra.migrate import upgrade

    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    url = settings.resolved_database_url
    log.info("migrating", database=make_url(url).render_as_string(hide_password=True))
    upgrade(url)
    log.info("database is at the latest revision")
    if getattr(_args, "bootstrap", False):
        accounts.bootstrap(settings)
    return 0


def cmd_api(settings: Settings, _args: argparse.Namespace) -> int:
    from api.main import serve

    serve(settings)
    return 0


def cmd_worker(settings: Settings, _args: argparse.Namespace) -> int:
    from worker.main import run_worker

    return asyncio.run(run_worker(settings))


def cmd_up(settings: Settings, _args: argparse.Namespace) -> int:
    from keel.supervisor import up

    return up(settings)


def cmd_watch(settings: Settings, args: argparse.Namespace) -> int:
    """Follow an execution over the API's WebSocket until it ends (keel.watch)."""
    from keel.watch import watch

    # The key comes from the environment only: never a flag (shell history, ps).
    return watch(
        settings,
        args.execution_id,
        after=args.after,
        api=args.api,
        api_key=os.environ.get("KEEL_API_KEY"),
    )


Handler = Callable[[Settings, argparse.Namespace], int]

COMMANDS: dict[str, tuple[Handler, str]] = {
    "migrate": (
        cmd_migrate,
        "apply database migrations to KEEL_DATABASE_URL (or the SQLite file under KEEL_DATA_DIR)",
    ),
    "api": (cmd_api, "serve the API on KEEL_API_HOST:KEEL_API_PORT"),
    "worker": (cmd_worker, "run a Temporal worker on KEEL_TASK_QUEUE until SIGINT/SIGTERM"),
    "up": (
        cmd_up,
        "run everything locally in the foreground: Temporal dev server, "
        "migrations, a worker and the API, with state under KEEL_DATA_DIR",
    ),
    "watch": (
        cmd_watch,
        "print an execution's events live, one JSON object per line, "
        "until it ends (the API key from KEEL_API_KEY)",
    ),
    **accounts.COMMANDS,
}


def _version() -> str:
    try:
        return version("keel")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keel",
        description="Durable AI-agent orchestration. Configuration comes from KEEL_* "
        "environment variables or .env (see .env.example).",
    )
    parser.add_argument("--version", action="version", version=f"keel {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (handler, summary) in COMMANDS.items():
        command = sub.add_parser(name, help=summary, description=summary[0].upper() + summary[1:])
        command.set_defaults(handler=handler)
        accounts.add_arguments(name, command)
        if name == "watch":
            command.add_argument("execution_id", type=int, help="the execution to follow")
            command.add_argument(
                "--after",
                type=int,
                default=0,
                metavar="SEQ",
                help="start after this event (resume where you stopped)",
            )
            command.add_argument(
                "--api", metavar="URL", help="the API's base URL (default from KEEL_API_HOST/PORT)"
            )
    return parser


def _settings_errors(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        field = f"KEEL_{str(error['loc'][0]).upper()}: " if error["loc"] else ""
        problems.append(field + error["msg"].removeprefix("Value error, "))
    return "; ".join(problems)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings()
        if args.command not in ("up", "watch"):  # those two never use the key themselves
            settings = with_development_key(settings)
    except ValidationError as exc:
        sys.stderr.write(f"keel: invalid settings: {_settings_errors(exc)}\n")
        return 2
    configure_logging(settings.log_level, settings.log_format)
    handler: Handler = args.handler
    return handler(settings, args)


def exit_without_teardown(code: int) -> None:
    """Leave once every command has cleaned up after itself, skipping interpreter
    finalization: the Temporal client's Rust threads can abort it
    (temporalio/sdk-python#300, "PyGILState_Release ... must be current")."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run() -> None:
    """The console script's entry point."""
    os.umask(0o077)  # what Keel writes (databases, logs, keys) is its owner's alone
    exit_without_teardown(main())


if __name__ == "__main__":
    run()
