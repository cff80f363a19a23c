"""The notebooks run end to end: executed with nbclient, parameters injected papermill-style."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "experiments" / "notebooks" / "quickstart.ipynb"


def inject_parameters(nb: Any, parameters: dict[str, Any]) -> Any:
    """Insert a cell after the one tagged ``parameters`` that overrides its values (as papermill does)."""
    index = next((i for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", [])), None)
    if index is None:
        raise ValueError("the notebook has no cell tagged 'parameters'")
    source = "# injected parameters\n" + "\n".join(f"{name} = {value!r}" for name, value in parameters.items())
    nb.cells.insert(index + 1, nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]}))
    return nb


def execute_notebook(path: Path, parameters: dict[str, Any], timeout: int = 600) -> Any:
    nb = inject_parameters(nbformat.read(path, as_version=4), parameters)
    client = nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                     resources={"metadata": {"path": str(REPO)}})
    client.execute()
    return nb


def outputs(nb: Any) -> tuple[str, str]:
    """(all text output, all HTML output) of an executed notebook."""
    text, html = [], []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                text.append(out["text"])
            data = out.get("data", {})
            text.append(data.get("text/plain", ""))
            html.append(data.get("text/html", ""))
    return "\n".join(text), "\n".join(html)


def test_quickstart_notebook_is_clean_and_parameterised():
    nb = nbformat.read(QUICKSTART, as_version=4)
    nbformat.validate(nb)
    assert sum("parameters" in c.metadata.get("tags", []) for c in nb.cells) == 1
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit the notebook without outputs"


def test_quickstart_notebook_runs_on_the_tiny_decoder(tiny_decoder_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the kernel is another process: one thread on busy cores
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    nb = execute_notebook(QUICKSTART, {
        "MODEL": str(tiny_decoder_path), "BACKEND": "hf", "DTYPE": "float32",
        "DATASET": "wnut16", "SPLIT": "train", "N_RECORDS": 3, "K_SHOTS": 1,
        "MAX_TOKENS": 8, "MAX_PROMPT_TOKENS": 440,
    })
    text, html = outputs(nb)
    assert "Here are some examples" in text and "Input: " in text  # the rendered prompt, with a demonstration
    assert "hf engine for" in text and "3 records in" in text
    assert html.count("<table>") == 3 and "<mark" in html  # gold spans at least
    assert "evaluation of 3 records" in text and "ner (strict)" in text
