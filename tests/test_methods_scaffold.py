"""openie method new: a package that passes its own test and registers through its entry point."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib

import pytest
from typer.testing import CliRunner

from openie.cli import app
from openie.methods.registry import MethodError
from openie.methods.scaffold import new_method


def test_the_new_method_package_passes_its_own_test(tmp_path):
    res = CliRunner().invoke(app, ["method", "new", "span_vote", "--dir", str(tmp_path)])
    assert res.exit_code == 0, res.output
    root = tmp_path / "openie-span-vote"
    assert {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} == {
        "pyproject.toml", "README.md", "openie_span_vote/__init__.py", "openie_span_vote/method.py",
        "tests/test_openie_span_vote.py"}
    project = tomllib.loads((root / "pyproject.toml").read_text())
    assert project["project"]["entry-points"]["openie.methods"] == {"span_vote": "openie_span_vote.method:REGISTRATION"}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], cwd=root,
                         capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(root), "HF_HUB_OFFLINE": "1"})
    assert run.returncode == 0 and "1 passed" in run.stdout, run.stdout + run.stderr


def test_names_that_cannot_be_a_method_are_refused(tmp_path):
    for bad, words in (("Span-Vote", "lowercase Python identifier"), ("el4ner", "built-in")):
        with pytest.raises(MethodError, match=words):
            new_method(bad, tmp_path)
    new_method("mine", tmp_path)
    with pytest.raises(MethodError, match="exists already"):
        new_method("mine", tmp_path)
