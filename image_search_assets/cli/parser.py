"""The `image-search` command line: its subcommands, their arguments and help."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping

from image_search_assets import operations

DESCRIPTION = (
    "`image-search`: demo, query, serve, report, reindex, rollback, unpin. Dagster does the rest."
)
Command = Callable[[argparse.Namespace], int]


def build_parser(commands: Mapping[str, Command]) -> argparse.ArgumentParser:
    """The `image-search` parser; each subcommand's `func` is its entry in `commands`."""
    from image_search_assets.serving import limits as serve_limits

    parser = argparse.ArgumentParser(prog="image-search", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="generate the sample catalog and materialise its days")
    demo.add_argument("--days", type=int, default=3)
    demo.set_defaults(func=commands["demo"])
    report = sub.add_parser("report", help="per-category counts and quarantine reasons of a day")
    report.add_argument("date")
    report.add_argument("--json", action="store_true")
    report.set_defaults(func=commands["report"])
    q = sub.add_parser("query", help="nearest neighbours of a product or an image file")
    target = q.add_mutually_exclusive_group(required=True)
    target.add_argument("--product-id")
    target.add_argument("--image")
    q.add_argument("--category")
    q.add_argument("-k", "--k", type=int, default=8)
    q.add_argument("--out", default="var/query.html", help="HTML page; the PNG goes beside it")
    q.set_defaults(func=commands["query"])
    srv = sub.add_parser("serve", help="the similar-items HTTP service over the current indexes")
    srv.add_argument("--host", default="127.0.0.1")
    srv.add_argument("--port", type=int, default=8080)
    srv.add_argument("--poll-interval", type=float, default=10.0, help="seconds between polls")
    srv.add_argument("--cache-dir", help="gs:// index downloads (IMAGE_SEARCH_SERVING_CACHE)")
    serve_limits.add_arguments(srv)  # --max-header-bytes, --header-timeout, ...
    srv.set_defaults(func=commands["serve"])
    rx = sub.add_parser("reindex", help="re-embed categories with the configured (new) models")
    rx.add_argument("--category", help="one category (default: every configured one)")
    rx.add_argument("--up-to", default="", help="day whose live set to re-index (default: latest)")
    rx.set_defaults(func=commands["reindex"])
    rel = sub.add_parser("release-run", help="mark a run whose process is gone failed, free slots")
    rel.add_argument("run_id")
    rel.add_argument("--reason", default="released by an operator: its process is gone")
    rel.set_defaults(func=commands["release-run"])
    operations.add_commands(sub)  # rollback, unpin
    sim = sub.add_parser("simulate", help="replay a month of GPU stock-outs for three setups")
    sim.add_argument("--out", default="docs/capacity")
    sim.add_argument("--days", type=int, default=30)
    sim.add_argument("--seed", type=int, default=7)
    sim.set_defaults(func=commands["simulate"])
    return parser
