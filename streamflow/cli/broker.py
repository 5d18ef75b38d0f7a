"""``streamflow broker``: the embedded Kafka-protocol broker (tansu), in the foreground."""

from __future__ import annotations

import argparse
import time

from streamflow.cli import load, settings_args


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Declare ``streamflow broker [--port N] [--create-topics]``."""
    b = sub.add_parser("broker", help="run the embedded Kafka-protocol broker (tansu) until Ctrl-C")
    b.add_argument("--port", type=int, default=9092)
    b.add_argument("--create-topics", action="store_true", help="also create the pipeline's topics")
    settings_args(b)
    b.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the broker until a signal (exit 0) or until it dies (exit 1)."""
    from streamflow.broker import EmbeddedBroker
    from streamflow.kafka.admin import ensure_topics
    from streamflow.signals import install_stop_handler
    from streamflow.steps import pipeline_topics

    stop = install_stop_handler()
    with EmbeddedBroker(port=args.port) as b:
        if args.create_topics:
            ensure_topics(b.bootstrap, pipeline_topics(load(args)))
        print(
            f"streamflow broker: Kafka protocol at {b.bootstrap} (tansu, in memory: a restart "
            "loses all data)",
            flush=True,
        )
        while not stop.is_set() and b.alive():
            time.sleep(0.2)
        return 0 if stop.is_set() else 1
