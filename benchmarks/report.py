"""Collects benchmark figures with the machine they ran on; writes JSON and Markdown."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

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
    for pkg in ("msgspec", "websockets", "uvicorn", "starlette", "litellm", "httpx", "anyio", "orjson"):
        try:
            from importlib.metadata import version

            versions[pkg] = version(pkg)
        except Exception:
            pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, timeout=5).stdout.strip()
    except Exception:  # pragma: no cover
        commit = ""
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": versions,
        "commit": commit,
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }


class Report:
    """Sections of rows; each row a dict of figures."""

    def __init__(self, quick: bool) -> None:
        self.quick = quick
        self.sections: dict[str, list[dict[str, Any]]] = {}
        self.notes: dict[str, list[str]] = {}
        self.charts: list[tuple[str, Any]] = []

    def add(self, section: str, row: dict[str, Any]) -> None:
        self.sections.setdefault(section, []).append(row)
        print("  ", {k: _fmt(v) for k, v in row.items()}, flush=True)

    def note(self, section: str, text: str) -> None:
        self.notes.setdefault(section, []).append(text)
        print("   note:", text, flush=True)

    def chart(self, name: str, draw: Any) -> None:
        """Register ``draw(path)`` to render a PNG (skipped without matplotlib)."""
        self.charts.append((name, draw))

    def markdown(self) -> str:
        m = machine()
        lines = [
            f"# streamcore benchmarks{' (quick)' if self.quick else ''}",
            "",
            f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}, {m['platform']}; "
            f"commit {m['commit']}; {m['date']}.",
            "Packages: " + ", ".join(f"{k} {v}" for k, v in m["packages"].items()) + ".",
            "",
        ]
        for section, rows in self.sections.items():
            lines += [f"## {section}", ""]
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
            if section in self.notes:
                lines.append("")
        return "\n".join(lines)

    def write(self, name: str) -> list[Path]:
        RESULTS.mkdir(exist_ok=True)
        data = {"machine": machine(), "quick": self.quick, "sections": self.sections, "notes": self.notes}
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


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if v >= 100:
            return f"{v:,.0f}"
        return f"{v:.3g}"
    return str(v)
