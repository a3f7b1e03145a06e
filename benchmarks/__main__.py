"""Run the benchmark suite: ``python -m benchmarks [--quick] [--only codec,engine,...]``.

Writes ``benchmarks/results/<name>.json`` and ``.md`` (and PNG charts when matplotlib is
installed). Figures are printed, never asserted: CI runs ``--quick`` as a smoke test only.
"""

from __future__ import annotations

import argparse
import sys

from .report import Report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes; finishes in under a minute")
    parser.add_argument("--only", default="", help="comma-separated sections (default: all)")
    parser.add_argument("--name", default=None, help="results file name (default: latest or quick)")
    parser.add_argument("--no-write", action="store_true", help="print only, write no files")
    args = parser.parse_args(argv)
    from . import sections

    wanted = [s for s in args.only.split(",") if s] or list(sections.SECTIONS)
    unknown = set(wanted) - set(sections.SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}; known: {', '.join(sections.SECTIONS)}")
    report = Report(quick=args.quick)
    for name in wanted:
        print(f"== {name}", flush=True)
        sections.SECTIONS[name](report, args.quick)
    print(report.markdown())
    if not args.no_write:
        paths = report.write(args.name or ("quick" if args.quick else "latest"))
        print("wrote", ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
