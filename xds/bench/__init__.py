"""``xds bench``: every figure next to a floor measured in the same run on the same machine.

One module per benchmark: :mod:`~xds.bench.register` (ITI-42), :mod:`~xds.bench.query` (ITI-18 at
10 k and 1 M entries), :mod:`~xds.bench.repository` (ITI-41/43), :mod:`~xds.bench.trust` (the trust
model's enforcement path); :mod:`~xds.bench.harness` holds the server runner and load generator.
"""

from __future__ import annotations

import argparse

from xds.bench import audit, query, register, repository, trust, xca


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bench", required=True)
    register.add_arguments(sub)
    repository.add_arguments(sub)
    query.add_arguments(sub)
    trust.add_arguments(sub)
    xca.add_arguments(sub)
    audit.add_arguments(sub)


def main(args: argparse.Namespace) -> int:
    if args.bench == "register":
        return register.bench_register(args)
    if args.bench == "load":
        return query.bench_load(args)
    if args.bench == "query":
        return query.bench_query(args)
    if args.bench == "trust":
        return trust.bench(args)
    if args.bench == "audit":
        return audit.bench(args)
    if args.bench == "xca":
        return xca.bench(args)
    if args.bench in ("provide", "retrieve"):
        return repository.bench(args)
    raise ValueError(f"unknown benchmark {args.bench}")
