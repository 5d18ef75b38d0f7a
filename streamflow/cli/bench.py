"""``streamflow bench [e2e|inference]``: the benchmarks (see benchmarks/ and streamflow.bench)."""

from __future__ import annotations

import argparse

from streamflow.cli import argv_settings, load, settings_args


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Declare ``streamflow bench`` and its options."""
    be = sub.add_parser("bench", help="benchmarks (see benchmarks/)")
    be.add_argument(
        "what",
        choices=["e2e", "inference", "store"],
        nargs="?",
        default="e2e",
        help="e2e: the whole pipeline against baselines; inference: the inference "
        "agent against raw session.run per batch size; store: the store step against a plain "
        "consume-decode-write-commit loop",
    )
    be.add_argument(
        "--batch-sizes", default="1,8,64,512,4096", help="inference: the batch sizes to measure"
    )
    be.add_argument(
        "--records", type=int, default=200_000, help="backlog size (0: latency runs only)"
    )
    be.add_argument(
        "--rates",
        default="1000,5000",
        help="input rates for the latency runs ('' to skip; 20000 saturates a 2-core machine)",
    )
    be.add_argument(
        "--seconds",
        type=float,
        default=20.0,
        help="length of each latency run (issue 13's latency goals hold over 20 s or more)",
    )
    be.add_argument(
        "--systems",
        default="streamflow,chained,limit,naive",
        help="which systems to run: streamflow (3 stages), chained, limit (plain loop, 5 ms "
        "consume wait: the throughput and latency reference), limit-<N>ms (the same loop with "
        "an N ms wait; limit-5ms names the latency reference), naive",
    )
    be.add_argument(
        "--scaling",
        action="store_true",
        help="also run streamflow with 1, 2 and 4 processes per stage",
    )
    be.add_argument(
        "--repeat", type=int, default=1, help="backlog runs per system; the median is reported"
    )
    settings_args(be)
    be.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the chosen benchmark."""
    rates = tuple(float(r) for r in args.rates.split(",") if r)
    if args.what == "inference":
        from streamflow.bench.inference import bench_inference

        sizes = [int(b) for b in args.batch_sizes.split(",") if b]
        return bench_inference(
            load(args),
            records=args.records,
            batch_sizes=sizes,
            rate=rates[0] if rates else 0.0,
            seconds=args.seconds,
        )
    if args.what == "store":
        from streamflow.bench.store import bench_store

        return bench_store(
            load(args), argv_settings(args), records=args.records, repeat=args.repeat
        )
    from streamflow.bench import run_bench

    systems = tuple(x for x in args.systems.split(",") if x)
    return run_bench(
        load(args),
        argv_settings(args),
        records=args.records,
        what=args.what,
        rates=rates,
        seconds=args.seconds,
        systems=systems,
        scaling=args.scaling,
        repeat=args.repeat,
    )
