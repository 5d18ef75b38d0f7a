"""The ``streamflow`` command."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from streamflow.errors import ConfigError, StreamflowError
from streamflow.settings import Settings, load_settings, pipeline_path_from_env

DEFAULT_PIPELINE = "pipelines/telemetry.toml"


def _settings_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pipeline", action="append", default=None,
                   help=f"pipeline file (default $STREAMFLOW_PIPELINE or {DEFAULT_PIPELINE}); `worker` takes several")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one setting (repeatable); beats STREAMFLOW_* env vars and the file")
    p.add_argument("--bootstrap", default=None, help="Kafka bootstrap servers (same as --set kafka.bootstrap=...)")
    p.add_argument("--metrics-port", type=int, default=None, help="metrics port (same as --set metrics.port=...)")


def _overrides(args: argparse.Namespace) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in args.overrides:
        key, sep, value = item.partition("=")
        if not sep:
            shown = "(not shown: it may hold a secret)" if any(
                w in item.lower() for w in ("password", "secret", "token")) else repr(item)
            raise ConfigError(f"--set {shown}: expected SECTION.KEY=VALUE", source="command line")
        out[key.strip()] = value
    if args.bootstrap:
        out["kafka.bootstrap"] = args.bootstrap
    if args.metrics_port is not None:
        out["metrics.port"] = str(args.metrics_port)
    return out


def _pipeline(args: argparse.Namespace) -> str:
    given = args.pipeline or []
    if len(given) > 1:
        raise ConfigError("--pipeline: only `streamflow worker` takes several pipeline files", source="command line")
    return given[0] if given else pipeline_path_from_env(DEFAULT_PIPELINE)


def _load(args: argparse.Namespace) -> Settings:
    return load_settings(_pipeline(args), _overrides(args))


def _argv_settings(args: argparse.Namespace) -> list[str]:
    """The settings flags to pass on to child processes (they re-read the same sources)."""
    out = ["--pipeline", str(Path(_pipeline(args)).resolve())]
    for item in args.overrides:
        out += ["--set", item]
    if args.metrics_port is not None:
        out += ["--metrics-port", str(args.metrics_port)]
    return out


def _bootstrap_or_fail(settings: Settings, what: str) -> str:
    if not settings.kafka.bootstrap:
        raise ConfigError(f"kafka.bootstrap: {what} needs a broker address (--bootstrap, STREAMFLOW_KAFKA_BOOTSTRAP "
                          "or the pipeline file); `streamflow up` or `streamflow broker` starts an embedded one",
                          source=settings.source)
    return settings.kafka.bootstrap


def cmd_validate(args: argparse.Namespace) -> int:
    from streamflow.validate import validate

    path = args.file or _pipeline(args)
    problems = validate(path, _overrides(args))
    if problems:
        print(f"{path}: {len(problems)} problem(s)", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        return 1
    s = load_settings(path, _overrides(args))
    inputs = f"text field {s.input.text_field}, {len(s.labels)} labels" if s.is_text else f"{len(s.features)} features"
    print(f"{path}: ok (pipeline {s.name}: {inputs}, model {s.model.name} {s.model.version}, "
          f"topics {s.topics.raw} -> {s.topics.scored}, dead letters {s.topics.dlq})")
    return 0


def cmd_broker(args: argparse.Namespace) -> int:
    from streamflow.broker import EmbeddedBroker, ensure_topics, pipeline_topics
    from streamflow.signals import install_stop_handler

    stop = install_stop_handler()
    with EmbeddedBroker(port=args.port) as b:
        if args.create_topics:
            ensure_topics(b.bootstrap, pipeline_topics(_load(args)))
        print(f"streamflow broker: Kafka protocol at {b.bootstrap} (tansu, in memory: a restart loses all data)",
              flush=True)
        while not stop.is_set() and b.alive():
            time.sleep(0.2)
        return 0 if stop.is_set() else 1


def cmd_worker(args: argparse.Namespace) -> int:
    from streamflow.agents.worker import run_all, run_stage

    files = args.pipeline or [pipeline_path_from_env(DEFAULT_PIPELINE)]
    pipelines = []
    for f in files:  # every pipeline file with the same overrides; each child re-reads its own
        one = argparse.Namespace(**{**vars(args), "pipeline": [f]})
        pipelines.append((_load(one), _argv_settings(one)))
    s = pipelines[0][0]
    bootstrap = _bootstrap_or_fail(s, "streamflow worker")
    if args.stage == "all" or len(pipelines) > 1:
        return run_all(pipelines, bootstrap, args.stage)
    run_stage(s, args.stage, bootstrap, loglevel=args.loglevel)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from streamflow.demo import run_demo

    return run_demo(_load(args), _argv_settings(args), records=args.records, rate=args.rate, seed=args.seed)


def cmd_doctor(args: argparse.Namespace) -> int:
    from streamflow.doctor import doctor

    return doctor(_load(args), sys.stdout)


def cmd_report(args: argparse.Namespace) -> int:
    from streamflow import report

    s = _load(args)
    if bool(args.samples) == bool(args.prometheus):
        raise ConfigError("streamflow report: give exactly one of --samples FILE and --prometheus URL",
                          source="command line")
    if args.samples:
        panels = report.from_samples(Path(args.samples), s.name)
        source = args.samples
    else:
        panels = report.from_prometheus(args.prometheus, s.name, args.minutes)
        source = f"{args.prometheus}, last {args.minutes:g} min"
    out = report.render(panels, Path(args.out), f"streamflow pipeline {s.name} ({source})")
    print(f"streamflow report: {out}")
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from streamflow.demo import run_up

    return run_up(_load(args), _argv_settings(args))


def cmd_collect(args: argparse.Namespace) -> int:
    from streamflow.collectors.produce import RawProducer, run_file, run_synthetic
    from streamflow.signals import install_stop_handler

    s = _load(args)
    bootstrap = _bootstrap_or_fail(s, "streamflow collect")
    from streamflow.broker import wait_ready

    wait_ready(bootstrap, s.kafka.connect_timeout_s, settings=s)
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
        stats = run_file(raw, Path(args.path),
                         on_bad_line=lambda n, e: print(f"{args.path}:{n}: skipped: {e}", file=sys.stderr))
    dt = time.monotonic() - t0
    print(f"produced {stats.produced} records to {s.topics.raw} in {dt:.1f} s ({stats.produced / max(dt, 1e-9):,.0f}/s)"
          + (f", {stats.failed} failed" if stats.failed else ""))
    return 1 if stats.failed else 0


def cmd_produce(args: argparse.Namespace) -> int:
    from streamflow.collectors.produce import RawProducer

    s = _load(args)
    bootstrap = _bootstrap_or_fail(s, "streamflow produce")
    from streamflow.broker import wait_ready

    wait_ready(bootstrap, s.kafka.connect_timeout_s, settings=s)
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
    print(f"produced {raw.stats.produced - failed} record(s) to {args.topic}" + (f", {failed} failed" if failed else ""))
    return 1 if failed else 0


def cmd_consume(args: argparse.Namespace) -> int:
    from streamflow.consume import consume

    s = _load(args)
    bootstrap = _bootstrap_or_fail(s, "streamflow consume")
    from streamflow.broker import wait_ready

    wait_ready(bootstrap, s.kafka.connect_timeout_s, settings=s)
    return consume(s, bootstrap, args.topic, limit=args.limit, timeout_s=args.timeout,
                   from_beginning=not args.latest, show_headers=args.headers, dedupe=args.dedupe)


def cmd_dlq(args: argparse.Namespace) -> int:
    from streamflow import dlq
    from streamflow.broker import wait_ready

    s = _load(args)
    bootstrap = _bootstrap_or_fail(s, f"streamflow dlq {args.action}")
    wait_ready(bootstrap, s.kafka.connect_timeout_s, settings=s)
    selection = dlq.Selection(reason=args.reason, stage=args.stage,
                              offsets=dlq.parse_offsets(args.offsets) if args.offsets else None,
                              since_ms=dlq.parse_since(args.since) if args.since else None)
    if args.action == "inspect":
        return dlq.inspect(s, bootstrap, selection=selection, show=args.show, as_json=args.json, top=args.top,
                           timeout_s=args.timeout)
    return dlq.replay(s, bootstrap, selection=selection, max_replays=args.max_replays, dry_run=args.dry_run,
                      as_json=args.json, timeout_s=args.timeout)


def cmd_bench(args: argparse.Namespace) -> int:
    rates = tuple(float(r) for r in args.rates.split(",") if r)
    if args.what == "inference":
        from streamflow.bench.inference import bench_inference

        sizes = [int(b) for b in args.batch_sizes.split(",") if b]
        return bench_inference(_load(args), records=args.records, batch_sizes=sizes,
                               rate=rates[0] if rates else 0.0, seconds=args.seconds)
    from streamflow.bench import run_bench

    systems = tuple(x for x in args.systems.split(",") if x)
    return run_bench(_load(args), _argv_settings(args), records=args.records, what=args.what, rates=rates,
                     seconds=args.seconds, systems=systems, scaling=args.scaling, repeat=args.repeat)


def cmd_model(args: argparse.Namespace) -> int:
    from streamflow.model import minilm

    for line in minilm.describe(minilm.export(args.out, force=args.force)):
        print(line)
    return 0


def cmd_kcat(args: argparse.Namespace) -> int:
    from streamflow.kcat import exec_kcat

    exec_kcat(args.args)
    return 0  # not reached


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="streamflow", description="Streaming inference on Kafka.")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    v = sub.add_parser("validate", help="check a pipeline file: schema <-> features <-> model")
    v.add_argument("file", nargs="?")
    _settings_args(v)
    v.set_defaults(func=cmd_validate)

    b = sub.add_parser("broker", help="run the embedded Kafka-protocol broker (tansu) until Ctrl-C")
    b.add_argument("--port", type=int, default=9092)
    b.add_argument("--create-topics", action="store_true", help="also create the pipeline's topics")
    _settings_args(b)
    b.set_defaults(func=cmd_broker)

    w = sub.add_parser("worker", help="run agents against the configured broker (what compose and k8s run)")
    w.add_argument("--stage", required=True, choices=["clean", "normalize", "inference", "chained", "all"])
    w.add_argument("--loglevel", default="info")
    _settings_args(w)
    w.set_defaults(func=cmd_worker)

    d = sub.add_parser("demo", help="embedded broker + all stages + synthetic collector, with a live status line")
    d.add_argument("--records", type=int, default=0, help="stop once this many records are accounted for (0: run until Ctrl-C)")
    d.add_argument("--rate", type=float, default=2000.0, help="records per second (0: as fast as possible)")
    d.add_argument("--seed", type=int, default=0)
    _settings_args(d)
    d.set_defaults(func=cmd_demo)

    dr = sub.add_parser("doctor", help="ONNX Runtime build, providers, GPUs, the model's inputs/outputs and a quick timing")
    _settings_args(dr)
    dr.set_defaults(func=cmd_doctor)

    rp = sub.add_parser("report", help="a PNG of a run: throughput, latency percentiles, lag, dead letters")
    rp.add_argument("--samples", default="", help="metrics recorded during a run (streamflow demo writes metrics.jsonl)")
    rp.add_argument("--prometheus", default="", help="a Prometheus server's URL, e.g. http://localhost:9090")
    rp.add_argument("--minutes", type=float, default=15.0, help="with --prometheus: how far back (default 15)")
    rp.add_argument("--out", default="streamflow-report.png", help="the PNG to write (default streamflow-report.png)")
    _settings_args(rp)
    rp.set_defaults(func=cmd_report)

    u = sub.add_parser("up", help="embedded broker + topics + all stages, no collector; until Ctrl-C")
    _settings_args(u)
    u.set_defaults(func=cmd_up)

    c = sub.add_parser("collect", help="produce records into the raw topic")
    csub = c.add_subparsers(dest="source", required=True)
    cs = csub.add_parser("synthetic", help="realistic telemetry with anomalies and ~2%% malformed records")
    cs.add_argument("--rate", type=float, default=1000.0)
    cs.add_argument("--records", type=int, default=10000, help="0: until Ctrl-C")
    cs.add_argument("--seed", type=int, default=0)
    _settings_args(cs)
    cf = csub.add_parser("file", help="a JSON-lines or CSV file")
    cf.add_argument("path")
    _settings_args(cf)
    ch = csub.add_parser("http", help="an HTTP endpoint: POST /records (JSON or JSON lines), GET /healthz")
    ch.add_argument("--host", default=None, help="address to bind (default collector.host, 127.0.0.1)")
    ch.add_argument("--port", type=int, default=None, help="port (default collector.port, 8088; 0: any free port)")
    _settings_args(ch)
    c.set_defaults(func=cmd_collect)

    pr = sub.add_parser("produce", help="produce JSON records (from --json or stdin, one per line)")
    pr.add_argument("topic")
    pr.add_argument("--json", action="append", help="a record as JSON (repeatable)")
    pr.add_argument("--encode", choices=["json", "avro"], default="json",
                    help="send the JSON text as is (default) or encode it with the input schema")
    _settings_args(pr)
    pr.set_defaults(func=cmd_produce)

    co = sub.add_parser("consume", help="print decoded records of a topic, one JSON object per line")
    co.add_argument("topic")
    co.add_argument("--limit", type=int, default=0, help="stop after N records (0: until Ctrl-C or --timeout)")
    co.add_argument("--timeout", type=float, default=0.0, help="stop after N seconds without a record (0: never)")
    co.add_argument("--latest", action="store_true", help="only new records (default: from the beginning)")
    co.add_argument("--headers", action="store_true", help="include the message headers")
    co.add_argument("--dedupe", action="store_true",
                    help="leave out repeated results of one source record (by the sf-source-* headers)")
    _settings_args(co)
    co.set_defaults(func=cmd_consume)

    dl = sub.add_parser("dlq", help="the dead-letter topic: inspect it, replay records from it")
    dsub = dl.add_subparsers(dest="action", required=True)
    for action, text in (("inspect", "counts by stage and reason (and examples) of the dead-letter topic"),
                         ("replay", "send chosen dead letters back to the raw topic (original key and value)")):
        da = dsub.add_parser(action, help=text)
        da.add_argument("--since", default="", help="only dead letters from then on: 15m, 2h, 1d, epoch ms or ISO time")
        da.add_argument("--reason", default="", help="only those whose sf-reason contains this (or whose code it is)")
        da.add_argument("--stage", default="", help="only those of this stage (clean, normalize, inference, ...)")
        da.add_argument("--offsets", default="", help="only these dead letters: PARTITION:OFFSET[-LAST],...")
        da.add_argument("--json", action="store_true", help="one JSON document instead of text")
        da.add_argument("--timeout", type=float, default=10.0, help="give up after N seconds without a message")
        if action == "inspect":
            da.add_argument("--show", type=int, default=0, metavar="N", help="print N examples with their bytes")
            da.add_argument("--top", type=int, default=20, help="reasons listed (default 20)")
        else:
            da.add_argument("--max-replays", type=int, default=3,
                            help="never send a record that was already replayed this many times (default 3)")
            da.add_argument("--dry-run", action="store_true", help="say what would be sent, send nothing")
        _settings_args(da)
        da.set_defaults(func=cmd_dlq)

    mo = sub.add_parser("model", help="build models from local weights (the demo's anomaly model: make model)")
    msub = mo.add_subparsers(dest="action", required=True)
    me = msub.add_parser("export", help="write an ONNX model, checked against a reference, into a cache folder")
    me.add_argument("which", choices=["minilm"], help="minilm: all-MiniLM-L6-v2 sentence embeddings (text extra)")
    me.add_argument("--out", default="models/minilm", help="the folder (default models/minilm)")
    me.add_argument("--force", action="store_true", help="build again even when an up-to-date export is there")
    me.set_defaults(func=cmd_model)

    kc = sub.add_parser("kcat", help="the system's kcat with a librdkafka that speaks to the embedded broker",
                        description="Runs kcat with the librdkafka bundled in confluent-kafka (Debian's 2.0.2 "
                        "cannot talk to the embedded broker). Arguments go to kcat unchanged.")
    kc.add_argument("args", nargs=argparse.REMAINDER)
    kc.set_defaults(func=cmd_kcat)

    be = sub.add_parser("bench", help="benchmarks (see benchmarks/)")
    be.add_argument("what", choices=["e2e", "inference"], nargs="?", default="e2e",
                    help="e2e: the whole pipeline against baselines; inference: the inference agent against "
                         "raw session.run per batch size")
    be.add_argument("--batch-sizes", default="1,8,64,512,4096", help="inference: the batch sizes to measure")
    be.add_argument("--records", type=int, default=200_000, help="backlog size (0: latency runs only)")
    be.add_argument("--rates", default="1000,5000,20000", help="input rates for the latency runs ('' to skip)")
    be.add_argument("--seconds", type=float, default=5.0, help="length of each latency run")
    be.add_argument("--systems", default="streamflow,chained,limit,naive",
                    help="which systems to run: streamflow (3 stages), chained, limit, naive")
    be.add_argument("--scaling", action="store_true", help="also run streamflow with 1, 2 and 4 processes per stage")
    be.add_argument("--repeat", type=int, default=1, help="backlog runs per system; the median is reported")
    _settings_args(be)
    be.set_defaults(func=cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["kcat"]:  # every argument after it belongs to kcat, options included
        try:
            from streamflow.kcat import exec_kcat

            exec_kcat(argv[1:])
        except StreamflowError as exc:
            print(f"streamflow: error: {exc}", file=sys.stderr)
            return 2
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("aiokafka", "faust", "mode", "kafka"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except StreamflowError as exc:
        print(f"streamflow: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `streamflow consume ... | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
