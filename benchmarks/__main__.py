"""Run the benchmark suite: ``python -m benchmarks [--quick] [--only codec,engine,...]``.

Prints a progress line before each measurement and each section's Markdown tables as it
finishes, then the targets; writes ``benchmarks/results/<name>.json`` and ``.md`` (and PNG
charts when matplotlib is installed). Figures are printed, never asserted: CI runs
``--quick`` as a smoke test only (it fails only when a benchmark itself breaks).
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback

from .report import Report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run of about a minute")
    parser.add_argument("--only", default="", help="comma-separated sections (default: all)")
    parser.add_argument("--name", default=None, help="results file name (default: latest or quick)")
    parser.add_argument("--no-write", action="store_true", help="print only, write no files")
    args = parser.parse_args(argv)
    from . import sections

    wanted = [s.strip() for s in args.only.split(",") if s.strip()] or list(sections.SECTIONS)
    unknown = set(wanted) - set(sections.SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}; known: {', '.join(sections.SECTIONS)}")
    report = Report(quick=args.quick)
    report.print(report.header())
    if args.quick:
        report.print("Quick run: a smoke test of every benchmark at small sizes (about a minute); its figures "
                     "are not judged.")
    else:
        report.print("Full run: about 10 minutes on 2 cores; figures are meaningful only on an otherwise idle "
                     "machine.")
    report.print(f"Sections: {', '.join(wanted)}. A progress line precedes each measurement; each section's "
                 "tables follow it.")
    report.print()
    failed: list[str] = []
    t_start = time.perf_counter()
    for name in wanted:
        mark = report.mark()
        t0 = time.perf_counter()
        try:
            sections.SECTIONS[name](report, args.quick)
        except Exception:
            failed.append(name)
            report.print(f"{name}: FAILED")
            report.print(traceback.format_exc())
        report.print()
        tables = report.tables_since(mark)
        if tables:
            report.print(tables)
        report.print(f"({name}: {time.perf_counter() - t0:.1f} s)")
        report.print()
    if report.targets:
        report.print(report.targets_table())
    if not args.no_write:
        paths = report.write(args.name or ("quick" if args.quick else "latest"))
        report.print("wrote " + ", ".join(str(p) for p in paths))
    report.print(f"done in {time.perf_counter() - t_start:.0f} s"
                 + (f"; FAILED sections: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
