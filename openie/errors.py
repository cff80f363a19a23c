"""Errors that name the place a problem comes from, so a researcher can fix the input and resume."""

from __future__ import annotations


class OpenIEError(Exception):
    """Base class of every error openie raises on purpose."""


class DataFormatError(OpenIEError, ValueError):
    """Malformed input data; carries the file and line (1-based) where it was found."""

    def __init__(self, message: str, path: str | None = None, line: int | None = None, field: str | None = None):
        self.path = path
        self.line = line
        self.field = field
        self.reason = message
        where = []
        if path is not None:
            where.append(str(path))
        if line is not None:
            where.append(f"line {line}")
        if field is not None:
            where.append(f"field {field!r}")
        super().__init__(f"{': '.join([', '.join(where), message]) if where else message}")


class SchemaError(OpenIEError, ValueError):
    """An invalid schema definition (duplicate or empty label, unknown type reference)."""


class UnknownNameError(OpenIEError, KeyError):
    """A registry lookup (dataset, model, template, adapter) for a name that is not registered."""

    def __init__(self, kind: str, name: str, known: list[str]):
        self.kind, self.name, self.known = kind, name, known
        super().__init__(f"unknown {kind} {name!r}; known: {', '.join(sorted(known)) or '(none)'}")

    def __str__(self) -> str:  # KeyError quotes its message otherwise
        return self.args[0]
