"""Collects benchmark figures with the machine they ran on; writes JSON and Markdown."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, TextIO

RESULTS = Path(__file__).parent / "results"


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:  # pragma: no cover
        pass
    versions = {}
    for pkg in ("msgspec", "websockets", "uvicorn", "starlette", "litellm", "httpx", "anyio", "orjson", "uvloop"):
        try:
            from importlib.metadata import version

            versions[pkg] = version(pkg)
        except Exception:
            pass
    try:
        here = Path(__file__).parent
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=here, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=here, timeout=5).stdout.strip()
        if commit and dirty:
            commit += " with uncommitted changes"
    except Exception:  # pragma: no cover
        commit = ""
    try:
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:  # pragma: no cover
        load = "unknown"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": versions,
        "commit": commit,
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "load": load,
    }


class Report:
    """Tables of rows (each row a dict of figures), their notes, and the targets checked.

    Rows are collected silently: the runner prints each table, in the Markdown written to
    ``results/<name>.md``, once the section that filled it has finished
    (:meth:`tables_since`), and :meth:`step` prints a progress line before each measurement.
    """

    def __init__(self, quick: bool, out: TextIO | None = None) -> None:
        self.quick = quick
        self.out = out
        self.sections: dict[str, list[dict[str, Any]]] = {}
        self.notes: dict[str, list[str]] = {}
        self.targets: list[dict[str, Any]] = []
        self.charts: list[tuple[str, Any]] = []
        self._touched: list[str] = []
        self._name = ""
        self._total = 0
        self._done = 0
        self._t0 = time.perf_counter()
        self.machine = machine()

    # --- collecting ---------------------------------------------------------------------

    def add(self, section: str, row: dict[str, Any]) -> None:
        self.sections.setdefault(section, []).append(row)
        if section not in self._touched:
            self._touched.append(section)

    def note(self, section: str, text: str) -> None:
        self.notes.setdefault(section, []).append(text)
        if section not in self._touched:
            self._touched.append(section)

    def target(self, figure: str, value: float, target: str, met: bool | None, unit: str = "") -> None:
        """Record a figure checked against its target (printed, never asserted)."""
        self.targets.append({
            "figure": figure, "value": f"{_fmt(value)}{(' ' + unit) if unit else ''}", "target": target,
            "met": "n/a" if met is None else ("yes" if met else "**no**"),
        })

    def chart(self, name: str, draw: Any) -> None:
        """Register ``draw(path)`` to render a PNG (skipped without matplotlib)."""
        self.charts.append((name, draw))

    # --- progress -----------------------------------------------------------------------

    def print(self, text: str = "") -> None:
        out = self.out or sys.stdout
        try:
            print(text, file=out, flush=True)
        except UnicodeEncodeError:  # a console that cannot print the ellipsis or a micro sign
            print(text.encode("ascii", "replace").decode(), file=out, flush=True)

    def begin(self, name: str, total: int) -> None:
        """A section starts: ``total`` measurements will follow (one :meth:`step` each)."""
        self._name, self._total, self._done = name, total, 0

    def step(self, what: str) -> None:
        """Print the progress line of the measurement about to run."""
        self._done += 1
        elapsed = time.perf_counter() - self._t0
        self.print(f"{self._name}: {what}\u2026 {self._done}/{self._total}  [{elapsed:4.0f} s]")

    def tables_since(self, mark: int) -> str:
        """The Markdown of every table touched since :meth:`mark` returned ``mark``."""
        return "\n".join(self.table(section) for section in self._touched[mark:])

    def mark(self) -> int:
        return len(self._touched)

    # --- output -------------------------------------------------------------------------

    def table(self, section: str) -> str:
        """One table in Markdown, with its notes, as written to the results file."""
        rows = self.sections.get(section, [])
        lines = [f"## {section}", ""]
        if rows:
            keys: list[str] = []
            for row in rows:
                keys += [k for k in row if k not in keys]
            lines.append("| " + " | ".join(keys) + " |")
            lines.append("|" + "---|" * len(keys))
            for row in rows:
                lines.append("| " + " | ".join(_fmt(row.get(k, "")) for k in keys) + " |")
            lines.append("")
        for note in self.notes.get(section, []):
            lines.append(f"- {note}")
        if self.notes.get(section):
            lines.append("")
        return "\n".join(lines)

    def targets_table(self) -> str:
        if not self.targets:
            return ""
        lines = ["## targets", ""]
        if self.quick:
            lines += ["Quick run: small sizes on whatever machine ran it; these figures are a smoke "
                      "test, not a measurement.", ""]
        lines += ["| figure | value | target | met |", "|---|---|---|---|"]
        for t in self.targets:
            lines.append(f"| {t['figure']} | {t['value']} | {t['target']} | {t['met']} |")
        lines.append("")
        return "\n".join(lines)

    def header(self) -> str:
        m = self.machine
        return "\n".join([
            f"# streamcore benchmarks{' (quick)' if self.quick else ''}",
            "",
            f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}, {m['platform']}; "
            f"commit {m['commit']}; started {m['date']}; load average then {m['load']} (1, 5, 15 min).",
            "Packages: " + ", ".join(f"{k} {v}" for k, v in m["packages"].items()) + ".",
            "",
        ])

    def markdown(self) -> str:
        parts = [self.header()]
        if self.targets:
            parts.append(self.targets_table())
        parts += [self.table(section) for section in _ordered(self.sections, self.notes)]
        return "\n".join(parts)

    def write(self, name: str) -> list[Path]:
        RESULTS.mkdir(exist_ok=True)
        data = {"machine": self.machine, "load_at_end": machine()["load"], "quick": self.quick, "targets": self.targets,
                "sections": self.sections, "notes": self.notes}
        paths = [RESULTS / f"{name}.json", RESULTS / f"{name}.md"]
        paths[0].write_text(json.dumps(data, indent=2) + "\n")
        paths[1].write_text(self.markdown() + "\n")
        try:
            import matplotlib

            matplotlib.use("Agg")
        except ImportError:
            return paths
        for chart, draw in self.charts:
            path = RESULTS / f"{name}-{chart}.png"
            draw(path)
            paths.append(path)
        return paths


def _ordered(sections: dict[str, Any], notes: dict[str, Any]) -> list[str]:
    """Tables in the order they were first filled (a table with notes only comes last)."""
    return list(sections) + [s for s in notes if s not in sections]


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if abs(v) >= 100:
            return f"{v:,.0f}"
        return f"{v:.3g}"
    return str(v)
