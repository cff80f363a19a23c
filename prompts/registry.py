"""Prompt templates are files, versioned by name (``ner.ruie.v1``), found in template directories.

A template's header comment declares its output format and task::

    {#- openie: format=ruie task=ner -#}

Files whose name starts with ``_`` are partials (included by others, not listed). A user adds a
directory of their own with ``TemplateRegistry.add_directory`` or ``$OPENIE_TEMPLATES``
(``:``-separated); a user template shadows a built-in one of the same name.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from openie.errors import OpenIEError, UnknownNameError

BUILTIN_DIR = Path(__file__).parent / "templates"
TEMPLATE_SUFFIX = ".j2"
TEMPLATES_ENV_VAR = "OPENIE_TEMPLATES"
_HEADER = re.compile(r"\{#-?\s*openie:(?P<body>.*?)-?#\}", re.S)
_INCLUDE = re.compile(r"\{%-?\s*(?:include|import|extends|from)\s+[\"']([^\"']+)[\"']")


class TemplateError(OpenIEError, ValueError):
    """A template file that cannot be used (bad header, syntax error), naming the file."""


@dataclass(frozen=True)
class Template:
    """A template file and what it declares; ``version`` keys caches (name + hash of all its text)."""

    name: str
    path: Path
    format: str
    task: str
    text_hash: str

    @property
    def version(self) -> str:
        return f"{self.name}@{self.text_hash[:12]}"


class TemplateRegistry:
    """Lists and renders the templates of a stack of directories (later directories win)."""

    def __init__(self, directories: list[str | Path] | None = None, include_builtin: bool = True,
                 include_env: bool = True):
        dirs: list[Path] = [BUILTIN_DIR] if include_builtin else []
        if include_env:
            dirs += [Path(p) for p in os.environ.get(TEMPLATES_ENV_VAR, "").split(os.pathsep) if p]
        dirs += [Path(d) for d in directories or []]
        self._dirs: list[Path] = []
        for d in dirs:
            self.add_directory(d)

    def add_directory(self, directory: str | Path) -> None:
        directory = Path(directory)
        if not directory.is_dir():
            raise TemplateError(f"template directory {directory} does not exist")
        self._dirs.append(directory)
        self._env = jinja2.Environment(
            loader=jinja2.FileSystemLoader([str(d) for d in reversed(self._dirs)]),
            trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False,
            undefined=jinja2.StrictUndefined, autoescape=False)

    def _file(self, filename: str) -> Path:
        for d in reversed(self._dirs):
            if (d / filename).is_file():
                return d / filename
        raise FileNotFoundError(filename)

    def names(self) -> list[str]:
        found = {p.name[: -len(TEMPLATE_SUFFIX)] for d in self._dirs for p in d.glob(f"*{TEMPLATE_SUFFIX}")
                 if not p.name.startswith("_")}
        return sorted(found)

    def _hash(self, filename: str, seen: set[str]) -> str:
        text = self._file(filename).read_text(encoding="utf-8")
        parts = [text] + [self._hash(inc, seen | {filename}) for inc in _INCLUDE.findall(text) if inc not in seen]
        return hashlib.sha256("\0".join(parts).encode("utf-8")).hexdigest()

    def get(self, name: str) -> Template:
        try:
            path = self._file(name + TEMPLATE_SUFFIX)
        except FileNotFoundError:
            raise UnknownNameError("template", name, self.names()) from None
        text = path.read_text(encoding="utf-8")
        header = _HEADER.search(text)
        if header is None:
            raise TemplateError(f"{path}: line 1: missing header comment '{{#- openie: format=... task=... -#}}'")
        fields = dict(kv.split("=", 1) for kv in header.group("body").split() if "=" in kv)
        missing = [k for k in ("format", "task") if k not in fields]
        if missing:
            raise TemplateError(f"{path}: line 1: header lacks {', '.join(missing)}")
        return Template(name, path, fields["format"], fields["task"], self._hash(path.name, set()))

    def render(self, name: str, **variables: Any) -> str:
        template = self.get(name)
        try:
            return self._env.get_template(template.path.name).render(**variables).strip("\n")
        except jinja2.TemplateSyntaxError as err:
            raise TemplateError(f"{err.filename or template.path}: line {err.lineno}: {err.message}") from None
        except jinja2.UndefinedError as err:
            raise TemplateError(f"{template.path}: {err.message} (pass it to render)") from None


_default: TemplateRegistry | None = None


def default_registry() -> TemplateRegistry:
    global _default
    if _default is None:
        _default = TemplateRegistry()
    return _default
