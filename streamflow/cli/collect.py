"""``streamflow collect synthetic|file|http``: produce records into the raw topic."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from streamflow.cli import connect, settings_args


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Declare ``streamflow collect`` and its sources: ``synthetic``, ``file PATH``, ``http``."""
    c = sub.add_parser("collect", help="produce records into the raw topic")
    csub = c.add_subparsers(dest="source", required=True)
    cs = csub.add_parser(
        "synthetic", help="realistic telemetry with anomalies and ~2%% malformed records"
    )
    cs.add_argument("--rate", type=float, default=1000.0)
    cs.add_argument("--records", type=int, default=10000, help="0: until Ctrl-C")
    cs.add_argument("--seed", type=int, default=0)
    settings_args(cs)
    cf = csub.add_parser("file", help="a JSON-lines or CSV file")
    cf.add_argument("path")
    settings_args(cf)
    ch = csub.add_parser(
        "http", help="an HTTP(S) endpoint: POST /records (JSON or JSON lines), GET /healthz"
    )
    ch.add_argument(
        "--host", default=None, help="address to bind (default collector.host, 127.0.0.1)"
    )
    ch.add_argument(
        "--port",
        type=int,
        default=None,
        help="port (default collector.port, 8088; 0: any free port)",
    )
    settings_args(ch)
    c.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Collect until the source is exhausted (or Ctrl-C); exit 1 when any record failed."""
    from streamflow.collectors.produce import RawProducer, run_file, run_synthetic
    from streamflow.signals import install_stop_handler

    s, bootstrap = connect(args, "streamflow collect")
    raw = RawProducer(s, bootstrap)
    t0 = time.monotonic()
    if args.source == "synthetic":
        stop = install_stop_handler()
        stats = run_synthetic(raw, rate=args.rate, records=args.records, seed=args.seed, stop=stop)
    elif args.source == "http":
        from streamflow.collectors.http import run_http

        left = run_http(s, raw, install_stop_handler(), host=args.host or "", port=args.port)
        stats = raw.stats
        stats.failed += left
    else:
        stats = run_file(
            raw,
            Path(args.path),
            on_bad_line=lambda n, e: print(f"{args.path}:{n}: skipped: {e}", file=sys.stderr),
        )
    dt = time.monotonic() - t0
    print(
        f"produced {stats.produced} records to {s.topics.raw} in {dt:.1f} s "
        f"({stats.produced / max(dt, 1e-9):,.0f}/s)"
        + (f", {stats.failed} failed" if stats.failed else "")
    )
    return 1 if stats.failed else 0
