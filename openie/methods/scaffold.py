"""``openie method new NAME``: a working method package to start from, with its test and entry point.

The files come from ``openie/methods/scaffold/*.tmpl`` (``string.Template``: ``$name`` the method's
name, ``$module`` its Python package, ``$dist`` the distribution name, ``$cls`` the extractor class).
"""

from __future__ import annotations

import re
from pathlib import Path
from string import Template

from openie.methods.registry import BUILTIN_METHODS, MethodError

SCAFFOLD_DIR = Path(__file__).parent / "scaffold"
# template file -> where it goes inside the new project folder
FILES = {"pyproject.toml.tmpl": "pyproject.toml", "README.md.tmpl": "README.md",
         "method.py.tmpl": "{module}/method.py", "test_method.py.tmpl": "tests/test_{module}.py"}
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def new_method(name: str, parent: str | Path = ".") -> Path:
    """Write ``parent/openie-NAME/`` (refused if it exists) and return it."""
    if not _NAME.match(name):
        raise MethodError(f"a method name is a lowercase Python identifier (a-z, 0-9, _), got {name!r}")
    if name in BUILTIN_METHODS:
        raise MethodError(f"{name!r} is a built-in method's name")
    module = f"openie_{name}"
    values = {"name": name, "module": module, "dist": name.replace("_", "-"),
              "cls": "".join(part.capitalize() for part in name.split("_")) + "Extractor"}
    root = Path(parent) / f"openie-{values['dist']}"
    if root.exists():
        raise MethodError(f"{root} exists already: choose another name or folder")
    for source, target in FILES.items():
        path = root / target.format(module=module)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(Template((SCAFFOLD_DIR / source).read_text(encoding="utf-8")).substitute(values),
                        encoding="utf-8")
    (root / module / "__init__.py").write_text(f'"""{name}: an openie extraction method."""\n', encoding="utf-8")
    return root
