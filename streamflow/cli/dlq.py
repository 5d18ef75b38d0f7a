"""``streamflow dlq inspect`` and ``streamflow dlq replay``: dead letters counted and sent again.

``inspect`` reads the dead-letter topic (from the beginning, or ``--since``), decodes the
``sf-*`` headers every stage writes, and counts dead letters by stage and reason code, and by
reason (numbers masked, so "power_w: value -50.0 out of range" and "... -7.5 ..." count
together); ``--show N`` prints examples with their source coordinates and a preview of the
original bytes.

``replay`` sends chosen dead letters (``--reason``, ``--stage``, ``--offsets``, ``--since``)
back to the raw topic with their original key and value and an ``sf-replayed`` header counting
the replays. The clean stage copies that header onto the record's next dead letter, so a record
that keeps failing is refused once it has been replayed ``--max-replays`` times. Dead letters
that hold only the start of their record (``sf-truncated``) are never replayed.

Both read the topic with ``streamflow.cli.deadletters``; replay produces with the pipeline's
Kafka settings (``streamflow.kafka.config.producer_config``: TLS, SASL), like every other client.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

from confluent_kafka import KafkaError, Producer

from streamflow.cli import connect, settings_args
from streamflow.cli.deadletters import (
    DeadLetter,
    Summary,
    mask_numbers,
    preview,
    read_dead_letters,
)
from streamflow.errors import ConfigError
from streamflow.headers import H_REPLAYED
from streamflow.kafka.config import producer_config
from streamflow.kafka.producer import produce_blocking
from streamflow.settings import Settings

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now_ms: int | None = None) -> int:
    """``--since``: a duration back from now ("90s", "15m", "2h", "1d"), epoch milliseconds, or
    an ISO 8601 time ("2026-11-26T03:00:00Z"); the epoch ms it names."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", text.strip())
    if m:
        return now_ms - int(float(m.group(1)) * _UNITS[m.group(2)] * 1000)
    if text.strip().isdigit():
        return int(text)
    try:
        dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"--since {text!r}: expected a duration (15m, 2h, 1d), epoch ms or an ISO 8601 time",
            source="command line",
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def parse_offsets(text: str) -> dict[int, list[tuple[int, int]]]:
    """``--offsets 0:12,0:20-25,3:7``: dead-letter partition -> inclusive offset ranges."""
    out: dict[int, list[tuple[int, int]]] = {}
    for item in (x.strip() for x in text.split(",") if x.strip()):
        m = re.fullmatch(r"(\d+):(\d+)(?:-(\d+))?", item)
        if not m:
            raise ConfigError(
                f"--offsets {item!r}: expected PARTITION:OFFSET or PARTITION:FIRST-LAST "
                "(the dead-letter topic's, as `dlq inspect --show` prints them)",
                source="command line",
            )
        lo = int(m.group(2))
        out.setdefault(int(m.group(1)), []).append((lo, int(m.group(3) or lo)))
    return out


@dataclass(frozen=True)
class Selection:
    """Which dead letters a command works on."""

    reason: str = ""  # substring of sf-reason (or equal to sf-reason-code)
    stage: str = ""
    offsets: dict[int, list[tuple[int, int]]] | None = None
    since_ms: int | None = None

    def __call__(self, d: DeadLetter) -> bool:
        if self.since_ms is not None and d.timestamp_ms < self.since_ms:
            return False
        if self.stage and d.stage != self.stage:
            return False
        if self.reason and self.reason not in d.reason and self.reason != d.reason_code:
            return False
        if self.offsets is not None:
            return any(lo <= d.offset <= hi for lo, hi in self.offsets.get(d.partition, ()))
        return True


def _when(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000)) + "Z" if ms else "-"


def inspect(
    settings: Settings,
    bootstrap: str,
    *,
    selection: Selection,
    show: int = 0,
    as_json: bool = False,
    top: int = 20,
    timeout_s: float = 10.0,
    out: TextIO = sys.stdout,
) -> int:
    """``streamflow dlq inspect``: counts by stage and reason, and ``show`` examples."""
    summary = Summary(settings.topics.dlq)
    examples: list[DeadLetter] = []
    for d in read_dead_letters(
        settings, bootstrap, since_ms=selection.since_ms, timeout_s=timeout_s
    ):
        if not selection(d):
            continue
        summary.add(d)
        if len(examples) < show:
            examples.append(d)
    if as_json:
        doc = summary.to_json(top)
        if show:
            doc["examples"] = [d.to_json() for d in examples]
        print(json.dumps(doc, ensure_ascii=False), file=out)
        return 0
    print(
        f"{summary.topic}: {summary.total} dead letter(s)"
        + (f", {_when(summary.first_ms)} .. {_when(summary.last_ms)}" if summary.total else ""),
        file=out,
    )
    if not summary.total:
        return 0
    print("\nby stage and reason code:", file=out)
    for (stage, code), n in summary.by_code.most_common():
        print(f"  {n:8d}  {stage:10s} {code}", file=out)
    print(f"\nby reason (numbers as #; top {top}):", file=out)
    for (stage, reason), n in summary.by_reason.most_common(top):
        print(f"  {n:8d}  {stage:10s} {reason}", file=out)
    if summary.replayed or summary.truncated:
        print(
            f"\n{summary.replayed} replayed before (sf-replayed), "
            f"{summary.truncated} truncated (sf-truncated: "
            "too large to keep whole, never replayed)",
            file=out,
        )
    for d in examples:
        print(
            f"\n[dlq {d.coordinates}] {_when(d.timestamp_ms)}  source {d.source}  stage {d.stage} "
            f"({d.error_class})",
            file=out,
        )
        print(f"  reason   {d.reason}", file=out)
        if d.replayed or d.truncated:
            print(
                f"  replayed {d.replayed}" + (f", truncated: {d.truncated}" if d.truncated else ""),
                file=out,
            )
        print(f"  key      {preview(d.key, 60) if d.key is not None else '(none)'}", file=out)
        print(f"  value    {preview(d.value, 120)}", file=out)
    return 0


def replay(
    settings: Settings,
    bootstrap: str,
    *,
    selection: Selection,
    max_replays: int = 3,
    dry_run: bool = False,
    as_json: bool = False,
    timeout_s: float = 10.0,
    out: TextIO = sys.stdout,
) -> int:
    """``streamflow dlq replay``: send the selected dead letters back to the raw topic."""
    if max_replays < 0:
        raise ConfigError(f"--max-replays: must be >= 0, got {max_replays}", source="command line")
    raw = settings.topics.raw
    chosen: list[DeadLetter] = []
    skipped: Counter[str] = Counter()
    for d in read_dead_letters(
        settings, bootstrap, since_ms=selection.since_ms, timeout_s=timeout_s
    ):
        if not selection(d):
            continue
        if d.truncated:
            skipped["truncated"] += 1
        elif d.replayed >= max_replays:
            skipped[f"already replayed {max_replays} time(s)"] += 1
        else:
            chosen.append(d)
    failed: list[str] = []
    if chosen and not dry_run:
        producer = Producer(producer_config(settings, bootstrap))

        def delivered(err: KafkaError | None, msg: Any) -> None:
            if err is not None:
                failed.append(err.str())

        for d in chosen:
            produce_blocking(
                producer,
                raw,
                d.value,
                d.key,
                headers=[(H_REPLAYED, b"%d" % (d.replayed + 1))],
                on_delivery=delivered,
            )
            producer.poll(0)
        left = producer.flush(60.0)
        failed += ["not acknowledged in time"] * left
    sent = 0 if dry_run else len(chosen) - len(failed)
    by_reason = Counter(mask_numbers(d.reason) for d in chosen)
    if as_json:
        print(
            json.dumps(
                {
                    "topic": raw,
                    "dry_run": dry_run,
                    "selected": len(chosen),
                    "sent": sent,
                    "failed": len(failed),
                    "skipped": dict(skipped),
                    "by_reason": dict(by_reason.most_common()),
                    "dead_letters": [d.coordinates for d in chosen],
                }
            ),
            file=out,
        )
    else:
        verb = "would replay" if dry_run else "replayed"
        print(
            f"{verb} {len(chosen) if dry_run else sent} dead letter(s) to {raw}"
            + (f" ({len(failed)} failed: {failed[0]})" if failed else "")
            + "".join(f"; skipped {n}: {why}" for why, n in skipped.items()),
            file=out,
        )
        for reason, n in by_reason.most_common(10):
            print(f"  {n:8d}  {reason}", file=out)
    return 1 if failed else 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Declare ``streamflow dlq inspect`` and ``streamflow dlq replay`` with their options."""
    dl = sub.add_parser("dlq", help="the dead-letter topic: inspect it, replay records from it")
    dsub = dl.add_subparsers(dest="action", required=True)
    for action, text in (
        ("inspect", "counts by stage and reason (and examples) of the dead-letter topic"),
        ("replay", "send chosen dead letters back to the raw topic (original key and value)"),
    ):
        da = dsub.add_parser(action, help=text)
        da.add_argument(
            "--since",
            default="",
            help="only dead letters from then on: 15m, 2h, 1d, epoch ms or ISO time",
        )
        da.add_argument(
            "--reason",
            default="",
            help="only those whose sf-reason contains this (or whose code it is)",
        )
        da.add_argument(
            "--stage",
            default="",
            help="only those of this stage (clean, normalize, inference, ...)",
        )
        da.add_argument(
            "--offsets", default="", help="only these dead letters: PARTITION:OFFSET[-LAST],..."
        )
        da.add_argument("--json", action="store_true", help="one JSON document instead of text")
        da.add_argument(
            "--timeout", type=float, default=10.0, help="give up after N seconds without a message"
        )
        if action == "inspect":
            da.add_argument(
                "--show", type=int, default=0, metavar="N", help="print N examples with their bytes"
            )
            da.add_argument("--top", type=int, default=20, help="reasons listed (default 20)")
        else:
            da.add_argument(
                "--max-replays",
                type=int,
                default=3,
                help="never send a record that was already replayed this many times (default 3)",
            )
            da.add_argument(
                "--dry-run", action="store_true", help="say what would be sent, send nothing"
            )
        settings_args(da)
        da.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Inspect or replay the dead letters the options select."""
    s, bootstrap = connect(args, f"streamflow dlq {args.action}")
    selection = Selection(
        reason=args.reason,
        stage=args.stage,
        offsets=parse_offsets(args.offsets) if args.offsets else None,
        since_ms=parse_since(args.since) if args.since else None,
    )
    if args.action == "inspect":
        return inspect(
            s,
            bootstrap,
            selection=selection,
            show=args.show,
            as_json=args.json,
            top=args.top,
            timeout_s=args.timeout,
        )
    return replay(
        s,
        bootstrap,
        selection=selection,
        max_replays=args.max_replays,
        dry_run=args.dry_run,
        as_json=args.json,
        timeout_s=args.timeout,
    )
