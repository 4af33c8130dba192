"""Every notebook under notebooks/ runs top to bottom on CPU with the small model, and is committed without outputs.

Notebooks are found by globbing, so a new one is covered as soon as it is added. Each runs in a fresh kernel of
*this* interpreter (a kernelspec written for the test, pointing at `sys.executable`, with this checkout first on
`PYTHONPATH`: an installed kernelspec or another xlm_flax could otherwise be picked up), with the notebooks
directory as working directory and a time limit per cell. A notebook lists the device counts it must run on in
its metadata (`"xlm_flax": {"test_device_counts": [8, 1]}`); the default is the suite's 8 fake CPU devices.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest
from helpers import optional_import, requires

nbformat = pytest.importorskip("nbformat", reason="reading notebooks needs nbformat: pip install the test extra")
nbclient = optional_import("nbclient")

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT_S = 300  # generous: the suite may share a loaded machine; each notebook takes well under a minute alone
KERNEL = "xlm-flax-test"
COLAB = "https://colab.research.google.com/github/"


def _device_counts(path: Path) -> list[int]:
    return nbformat.read(path, as_version=4).metadata.get("xlm_flax", {}).get("test_device_counts", [8])


RUNS = [pytest.param(path, n, id=f"{path.stem}-{n}dev") for path in NOTEBOOKS for n in _device_counts(path)]


def test_notebooks_found():
    assert len(NOTEBOOKS) >= 2, f"expected the notebooks under {ROOT / 'notebooks'}"


def _write_kernelspec(directory: Path, env: dict[str, str]) -> None:
    spec = directory / "kernels" / KERNEL
    spec.mkdir(parents=True)
    kernel = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "xlm-flax test kernel",
        "language": "python",
        "env": env,
    }
    (spec / "kernel.json").write_text(json.dumps(kernel))


@requires("nbclient", "ipykernel", "matplotlib", reason="running notebooks needs a kernel: pip install the test extra")
@pytest.mark.parametrize("path, n_devices", RUNS)
def test_notebook_runs(path, n_devices, tmp_path, monkeypatch):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {
        "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={n_devices}",
        "TMPDIR": str(scratch),  # what a notebook writes with tempfile goes away with the test
        "TOKENIZERS_PARALLELISM": "false",
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
    }
    _write_kernelspec(tmp_path / "jupyter", env)
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        kernel_name=KERNEL,
        timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on the first failing cell
    streams = "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.outputs)
    # The setup cell prints the backend it detected; the kernel must have seen the devices asked for.
    assert f"backend cpu, {n_devices} x " in streams, f"{path.name}: setup printed no 'backend cpu, {n_devices} x'"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_committed_clean(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    with_outputs = [
        i for i, c in enumerate(notebook.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)
    ]
    assert not with_outputs, (
        f"{path.name}: cells {with_outputs} carry outputs; strip them before committing (see notebooks/README.md)"
    )
    first = notebook.cells[0]
    assert first.cell_type == "markdown" and f"{COLAB}" in first.source, f"{path.name}: no Open in Colab badge"
    badge = re.search(re.escape(COLAB) + r"[^)\s]+", first.source).group(0)
    assert badge.endswith(f"/notebooks/{path.name}"), f"{path.name}: the Colab badge points at {badge}"
    setup = next(c for c in notebook.cells if c.cell_type == "code")
    assert 'find_spec("xlm_flax") is None' in setup.source, f"{path.name}: the first code cell must install xlm-flax"
    parameters = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(parameters) == 1 and re.search(r"^MODEL = None\b", parameters[0].source, re.M), (
        f"{path.name}: needs one cell tagged 'parameters' with `MODEL = None`"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_install_cell_uses_the_clone_or_says_what_to_do(path, tmp_path, monkeypatch):
    """The install cell, run as if xlm_flax were missing: from the clone it pip-installs that clone (editable); from
    anywhere else it stops with a message saying to copy the repository first (no URL that may not exist)."""
    import importlib.util
    import subprocess

    setup = next(c for c in nbformat.read(path, 4).cells if c.cell_type == "code").source
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "xlm_flax" else find_spec(name, *a)
    )
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda command, **kwargs: calls.append(command))
    monkeypatch.chdir(path.parent)  # opened from the clone's notebooks/ folder
    exec(compile(setup, path.name, "exec"), {"__name__": "__main__"})
    assert len(calls) == 1 and calls[0][1:6] == ["-m", "pip", "install", "-q", "-e"], calls
    assert calls[0][6] == str(path.parent.parent), calls
    monkeypatch.chdir(tmp_path)  # somewhere else, e.g. a fresh Colab runtime
    with pytest.raises(SystemExit, match="not opened from a clone.*copy the repository"):
        exec(compile(setup, path.name, "exec"), {"__name__": "__main__"})
    assert len(calls) == 1
