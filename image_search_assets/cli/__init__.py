"""`image-search`: demo, query, serve, report, reindex, rollback, unpin. Dagster does the rest.

By concern: `parser` (the command line), `instance` (the local Dagster instance), `demo`,
`query` (query and serve), `reports` (report, simulate), `reindex`; `main` binds each
subcommand to its function here, so a test may replace one (`cli.cmd_serve`).
"""

from __future__ import annotations

from image_search_assets.cli.demo import DEMO_LOOKS, cmd_demo, materialise_days, suggested_query
from image_search_assets.cli.instance import (
    DEFAULT_DAGSTER_HOME,
    QUIET,
    _storage,
    cmd_release_run,
    ensure_dagster_home,
    instance_config,
)
from image_search_assets.cli.parser import build_parser
from image_search_assets.cli.query import cmd_query, cmd_serve
from image_search_assets.cli.reindex import cmd_reindex
from image_search_assets.cli.reports import cmd_report, cmd_simulate

__all__ = [
    "DEFAULT_DAGSTER_HOME",
    "DEMO_LOOKS",
    "QUIET",
    "_storage",
    "build_parser",
    "cmd_demo",
    "cmd_query",
    "cmd_reindex",
    "cmd_release_run",
    "cmd_report",
    "cmd_serve",
    "cmd_simulate",
    "ensure_dagster_home",
    "instance_config",
    "main",
    "materialise_days",
    "suggested_query",
]


def main(argv: list[str] | None = None) -> int:
    commands = {
        "demo": cmd_demo,
        "report": cmd_report,
        "query": cmd_query,
        "serve": cmd_serve,
        "reindex": cmd_reindex,
        "release-run": cmd_release_run,
        "simulate": cmd_simulate,
    }
    args = build_parser(commands).parse_args(argv)
    return args.func(args)
