"""``streamflow store verify|compact``: the stored files' offsets checked, small files merged.

    streamflow store verify                     # exit 1 on a gap, an overlap, a bad file
    streamflow store compact --date 2026-12-01 --hour 7

What each checks and guarantees: ``streamflow/store/verify.py``.
"""

from __future__ import annotations

import argparse
import re
import sys

from streamflow.errors import ConfigError
from streamflow.store.files import Storage, StoreError, storage_for
from streamflow.store.verify import MAX_ROWS, compact, verify


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Declare ``streamflow store verify`` and ``streamflow store compact``."""
    from streamflow.cli import settings_args

    st = sub.add_parser(
        "store", help="check the stored files (verify) or merge small ones (compact)"
    )
    which = st.add_subparsers(dest="store_command", required=True)
    v = which.add_parser(
        "verify",
        help="every partition's offsets: no gap, no overlap, no half-written or mislabelled file",
    )
    settings_args(v)
    v.set_defaults(func=run)
    c = which.add_parser(
        "compact", help="merge the small files of each hour and partition, atomically"
    )
    c.add_argument("--date", default="", help="only this day's folders (YYYY-MM-DD, UTC)")
    c.add_argument("--hour", type=int, default=None, help="only this hour's folders (0-23)")
    c.add_argument(
        "--max-rows", type=int, default=MAX_ROWS, help=f"rows per merged file (default {MAX_ROWS})"
    )
    settings_args(c)
    c.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from streamflow.cli import load

    settings = load(args)
    if args.store_command == "compact":
        if args.date and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", args.date):
            raise ConfigError(f"--date {args.date!r}: expected YYYY-MM-DD", source="command line")
        if args.hour is not None and not 0 <= args.hour <= 23:
            raise ConfigError(f"--hour {args.hour}: expected 0-23", source="command line")
    path = settings.store.path
    try:
        if not path:
            raise StoreError("store.path is not set: give it with --set store.path=FOLDER|s3://...")
        storage = storage_for(settings)
        _exists(storage, path)
        if args.store_command == "verify":
            return _verify(storage)
        done = compact(
            storage,
            date=args.date,
            hour=args.hour,
            max_rows=args.max_rows,
            compression=settings.store.compression,
            row_group_rows=settings.store.row_group_rows,
            say=print,
        )
    except StoreError as exc:
        print(f"streamflow: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # pyarrow's S3 and local errors
        print(f"streamflow: error: store.path: {path}: {exc}", file=sys.stderr)
        return 1
    print(
        f"compact: {done.merged} merged files written ({done.rows} rows) in place of "
        f"{done.replaced} files"
        + (
            f"; {done.leftovers} leftovers of an interrupted compact removed"
            if done.leftovers
            else ""
        )
    )
    return 0


def _exists(storage: Storage, path: str) -> None:
    """StoreError naming store.path when the folder or bucket is not there or does not answer."""
    from pyarrow import fs

    target = storage.base if not storage.s3 else storage.base.split("/", 1)[0]
    try:
        kind = storage.fs.get_file_info(target).type
    except Exception as exc:
        raise StoreError(f"store.path: cannot read {path}: {exc}") from None
    if kind != fs.FileType.Directory:
        what = "no such bucket" if storage.s3 else "not a folder (nothing stored there)"
        raise StoreError(f"store.path: {path}: {what}")


def _verify(storage: Storage) -> int:
    report = verify(storage)
    for line in report.infos:
        print(f"info: {line}")
    for line in report.errors:
        print(f"error: {line}")
    counts = f"{report.files} files, {report.partitions} partitions"
    if report.errors:
        print(f"verify {storage.uri}: {len(report.errors)} problem(s) in {counts}")
        return 1
    print(f"verify {storage.uri}: ok ({counts}: no gap, no overlap, nothing half-written)")
    return 0
