"""``streamflow produce TOPIC``: one-off JSON records into a topic, as given or Avro-encoded."""

from __future__ import annotations

import argparse
import json
import sys

from streamflow.cli import connect, settings_args
from streamflow.errors import ConfigError


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Declare ``streamflow produce TOPIC [--json RECORD]... [--encode json|avro]``."""
    pr = sub.add_parser("produce", help="produce JSON records (from --json or stdin, one per line)")
    pr.add_argument("topic")
    pr.add_argument("--json", action="append", help="a record as JSON (repeatable)")
    pr.add_argument(
        "--encode",
        choices=["json", "avro"],
        default="json",
        help="send the JSON text as is (default) or encode it with the input schema",
    )
    settings_args(pr)
    pr.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Produce the records from --json (else stdin); exit 1 when any was not delivered."""
    from streamflow.collectors.produce import RawProducer

    s, bootstrap = connect(args, "streamflow produce")
    raw = RawProducer(s, bootstrap)
    raw.topic = args.topic
    texts = args.json or [line for line in sys.stdin if line.strip()]
    for text in texts:
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--json: not valid JSON: {exc}", source="command line") from None
        if args.encode == "avro":
            raw.send_record(record)
        else:
            raw.send(text.encode(), raw.key_of(record) if isinstance(record, dict) else None)
    left = raw.flush()
    failed = raw.stats.failed + left
    print(
        f"produced {raw.stats.produced - failed} record(s) to {args.topic}"
        + (f", {failed} failed" if failed else "")
    )
    return 1 if failed else 0
