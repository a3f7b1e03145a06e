"""MkDocs hooks of the documentation site (``mkdocs.yml``: ``hooks:``).

The configuration reference is generated from the config schema itself, so it cannot
drift: every key of every section of :class:`streamcore.config.Config`, its type, its
default, its environment variable, and its description, taken from the ``#:`` comment
above the field in ``streamcore/config.py`` (or, for a key without one, from the key table
of README.md). A page containing ``<!-- config-reference -->`` gets the tables there, and
``<!-- config-defaults -->`` a TOML file with every default.

Run it alone to print the reference: ``python scripts/docs_hooks.py``.
"""

from __future__ import annotations

import ast
import inspect
import re
import textwrap
import types
import typing
from pathlib import Path
from typing import Any

import msgspec

ROOT = Path(__file__).resolve().parent.parent
REFERENCE_MARK = "<!-- config-reference -->"
DEFAULTS_MARK = "<!-- config-defaults -->"


class Key(msgspec.Struct):
    section: str
    name: str
    type: str
    default: Any
    env: str
    doc: str
    doc_source: str  # "comment", "readme" or ""


def _doc_comments(cls: type) -> dict[str, str]:
    """``{field: text}`` of the ``#:`` comment lines right above each field of ``cls``."""
    source = textwrap.dedent(inspect.getsource(cls))
    lines = source.splitlines()
    docs: dict[str, str] = {}
    for node in ast.parse(source).body[0].body:  # type: ignore[attr-defined]
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            comment: list[str] = []
            index = node.lineno - 2
            while index >= 0 and lines[index].strip().startswith("#:"):
                comment.insert(0, lines[index].strip()[2:].strip())
                index -= 1
            if comment:
                docs[node.target.id] = " ".join(comment)
    return docs


def _readme_meanings(readme: Path = ROOT / "README.md") -> dict[str, str]:
    """``{"section.key": meaning}`` from the key table of README.md (the fallback)."""
    meanings: dict[str, str] = {}
    if not readme.is_file():
        return meanings
    for line in readme.read_text(encoding="utf-8").splitlines():
        if not line.startswith("| `"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3:
            continue
        keys = re.findall(r"`([a-z_]+\.[a-z_]+)`", cells[0])
        if keys and all(k == c for k, c in zip(keys, re.findall(r"`([^`]+)`", cells[0]))):
            # README's in-page links mean nothing on the docs site: keep their text.
            meaning = re.sub(r"\[([^\]]+)\]\(#[^)]*\)", r"\1", cells[2])
            for key in keys:
                meanings.setdefault(key, meaning)
    return meanings


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return "any"
    if origin is typing.Literal:
        return " \\| ".join(f'`"{a}"`' if isinstance(a, str) else f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        inner = " or ".join(_type_name(a) for a in rest)
        return f"{inner} (optional)" if len(rest) < len(args) else inner
    if origin is list:
        return f"array of {_type_name(args[0])}s" if args else "array"
    if origin is dict:
        return "table"
    return {str: "string", int: "integer", float: "number", bool: "boolean"}.get(tp, getattr(tp, "__name__", str(tp)))


def _default(field: Any) -> Any:
    if field.default is not msgspec.NODEFAULT:
        return field.default
    if field.default_factory is not msgspec.NODEFAULT:
        return field.default_factory()
    return None


def config_keys() -> list[Key]:
    """Every config key, in schema order."""
    from streamcore.config import Config, env_variables

    env_names = {path: name for name, (path, _) in env_variables().items()}
    readme = _readme_meanings()
    keys: list[Key] = []
    for section in msgspec.structs.fields(Config):
        cls = section.type
        comments = _doc_comments(cls)
        for field in msgspec.structs.fields(cls):
            dotted = f"{section.encode_name}.{field.encode_name}"
            doc, source = comments.get(field.name, ""), "comment"
            if not doc:
                doc, source = readme.get(dotted, ""), "readme" if dotted in readme else ""
            keys.append(
                Key(
                    section=section.encode_name,
                    name=field.encode_name,
                    type=_type_name(field.type),
                    default=_default(field),
                    env=env_names[(section.encode_name, field.encode_name)],
                    doc=doc,
                    doc_source=source,
                )
            )
    return keys


def _toml_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    return repr(value)


def _human(key: Key) -> str:
    value = key.default
    if value is None:
        return "unset"
    text = f"`{_toml_value(value)}`"
    if isinstance(value, int) and not isinstance(value, bool) and key.name.endswith("bytes") and value >= 1024:
        for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
            if value % size == 0:
                return f"{text} ({value // size} {unit})"
    return text


def _section_docs() -> dict[str, str]:
    from streamcore.config import Config

    docs = {}
    for section in msgspec.structs.fields(Config):
        doc = inspect.getdoc(section.type) or ""
        docs[section.encode_name] = " ".join(doc.split("\n\n")[0].split())
    return docs


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_reference() -> str:
    """The Markdown tables of every key, one section each."""
    out: list[str] = []
    section_docs = _section_docs()
    current = None
    for key in config_keys():
        if key.section != current:
            current = key.section
            out += ["", f"### `[{current}]`", "", section_docs.get(current, ""), ""]
            out += ["| key | type | default | environment | meaning |", "|---|---|---|---|---|"]
        out.append(
            f"| `{key.name}` | {key.type} | {_human(key)} | `{key.env}` | {_cell(key.doc)} |"
        )
    return "\n".join(out).strip() + "\n"


def render_defaults() -> str:
    """A TOML file that sets every key to its default (unset keys commented out)."""
    lines: list[str] = []
    current = None
    for key in config_keys():
        if key.section != current:
            current = key.section
            lines += ["", f"[{current}]"]
        value = _toml_value(key.default)
        lines.append(f"{key.name} = {value}" if value else f"# {key.name} = ...")
    return "```toml\n" + "\n".join(lines).strip() + "\n```\n"


# --- MkDocs hooks ----------------------------------------------------------------------


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if REFERENCE_MARK in markdown:
        markdown = markdown.replace(REFERENCE_MARK, render_reference())
    if DEFAULTS_MARK in markdown:
        markdown = markdown.replace(DEFAULTS_MARK, render_defaults())
    return markdown


if __name__ == "__main__":  # pragma: no cover
    print(render_reference())
    print(render_defaults())
