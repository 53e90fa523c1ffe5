"""The ``fastproto`` command: ``demo`` and ``bench``."""
from __future__ import annotations

import argparse
import sys


def _bench(args: argparse.Namespace) -> int:
    from fastproto.bench import GROUPS, format_table, load_cases, run_case

    groups = args.groups or list(GROUPS)
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        print(f"unknown group(s): {', '.join(unknown)}; known: {', '.join(GROUPS)}", file=sys.stderr)
        return 2
    results = []
    for group in groups:
        for case in load_cases(group):
            if args.filter and args.filter not in case.name:
                continue
            print(f"  measuring {case.name} ...", file=sys.stderr, flush=True)
            results.append(run_case(case, min_time=args.min_time))
    print(format_table(results))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from fastproto.demo import run

    return run(args)


def _livelock(args: argparse.Namespace) -> int:
    from fastproto.livelock import main as run

    return run(args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fastproto", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="show the receive path at work, in process (no privileges)")
    p.add_argument("--frames", type=int, default=200_000, help="frames to push through the core")
    p.add_argument("--sockets", type=int, default=1000, help="UDP sockets to demultiplex to")
    p.add_argument("--echoes", type=int, default=2000, help="datagrams echoed per dispatch model")
    p.set_defaults(func=_demo)

    p = sub.add_parser("bench", help="measure fastproto beside its baselines and print ratios")
    p.add_argument("groups", nargs="*", help="groups to run (default: all)")
    p.add_argument("-k", dest="filter", default="", help="only operations whose name contains this")
    p.add_argument("--min-time", type=float, default=0.3, help="seconds spent timing each side")
    p.set_defaults(func=_bench)

    p = sub.add_parser("livelock", help="delivered vs offered rate per dispatch model (receive livelock)")
    from fastproto.livelock import add_arguments
    add_arguments(p)
    p.set_defaults(func=_livelock)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
