from __future__ import annotations

import shutil

import pytest

from openie.errors import UnknownNameError
from prompts.registry import BUILTIN_DIR, TemplateError, TemplateRegistry


def test_builtin_templates_are_listed_with_format_task_and_version():
    reg = TemplateRegistry(include_env=False)
    names = reg.names()
    assert {"ner.ruie.v1", "re.ruie.v1", "ed.ruie.v1", "eae.ruie.v1", "ner.json.v1", "re.json.v1",
            "ner.question.v1"} <= set(names)
    assert not any(n.startswith("_") for n in names)  # partials are not templates
    t = reg.get("re.ruie.v1")
    assert (t.format, t.task) == ("ruie", "re") and t.version.startswith("re.ruie.v1@")


def test_user_directory_shadows_and_partial_edits_change_the_version(tmp_path):
    for f in BUILTIN_DIR.glob("*.j2"):
        shutil.copy(f, tmp_path / f.name)
    builtin = TemplateRegistry(include_env=False)
    user = TemplateRegistry([tmp_path], include_env=False)
    assert user.get("ner.ruie.v1").version == builtin.get("ner.ruie.v1").version
    layout = tmp_path / "_ruie_layout.v1.j2"
    layout.write_text(layout.read_text().replace("Here are some examples", "Examples"))
    assert user.get("ner.ruie.v1").version != builtin.get("ner.ruie.v1").version  # an included file changed
    assert user.get("ner.json.v1").version == builtin.get("ner.json.v1").version
    (tmp_path / "ner.mine.v1.j2").write_text("{#- openie: format=ruie task=ner -#}\nTask: {{ query.input }}")
    assert "ner.mine.v1" in user.names() and user.render("ner.mine.v1", query={"input": "x"}) == "Task: x"


def test_bad_templates_name_the_file_and_line(tmp_path):
    (tmp_path / "nohead.v1.j2").write_text("hello")
    (tmp_path / "broken.v1.j2").write_text("{#- openie: format=ruie task=ner -#}\n\n{% if %}")
    (tmp_path / "half.v1.j2").write_text("{#- openie: format=ruie -#}")
    reg = TemplateRegistry([tmp_path], include_env=False)
    with pytest.raises(TemplateError, match=r"nohead.v1.j2: line 1: missing header"):
        reg.get("nohead.v1")
    with pytest.raises(TemplateError, match=r"broken.v1.j2: line 3"):
        reg.render("broken.v1")
    with pytest.raises(TemplateError, match="lacks task"):
        reg.get("half.v1")
    with pytest.raises(UnknownNameError, match="ner.ruie.v1"):
        reg.get("nope.v1")
    with pytest.raises(TemplateError, match="does not exist"):
        reg.add_directory(tmp_path / "missing")


def test_environment_variable_adds_directories(tmp_path, monkeypatch):
    (tmp_path / "ner.env.v1.j2").write_text("{#- openie: format=json task=ner -#}\nT")
    monkeypatch.setenv("OPENIE_TEMPLATES", str(tmp_path))
    assert "ner.env.v1" in TemplateRegistry().names()
