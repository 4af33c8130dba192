"""The package's shape: a lazy public API (no JAX on import, `--help` or `--version`), every 0.1.0 name still
importable from `xlm_flax`, no import cycle and no module importing a higher layer at import time."""

from __future__ import annotations

import ast
import os
import subprocess
import sys

import pytest

import xlm_flax

PACKAGE = os.path.dirname(xlm_flax.__file__)

# The names of xlm_flax.__all__ in 0.1.0: they must keep importing from the package.
NAMES_0_1_0 = (
    "DEFAULT_RULES BaseModelOutput ClassifierOutput Embedder FillMask MaskedLMOutput QuestionAnsweringOutput "
    "SquadOutput XLMConfig XLMForMultipleChoice XLMForQuestionAnswering XLMForQuestionAnsweringSimple "
    "XLMForSequenceClassification XLMForTokenClassification XLMModel XLMWithLMHeadModel TrainConfig Trainer "
    "__version__ distributed make_mesh pmap_forward shard_model sharded_forward small_model_path unstack_layers train"
).split()

# Layers, lowest first: a module may import (at import time) only modules of its own layer or of lower ones.
LAYERS = (
    ("xlm_flax._lazy", "xlm_flax.errors", "xlm_flax.tokens", "xlm_flax.validation"),
    ("xlm_flax.config", "xlm_flax.presets"),
    ("xlm_flax.model",),
    ("xlm_flax.sharding",),
    ("xlm_flax.checkpoints",),
    ("xlm_flax.tokenization",),
    ("xlm_flax.inference", "xlm_flax.training"),
    ("xlm_flax.demo",),
    ("xlm_flax.cli",),
)


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    return out.stdout.strip()


def test_import_loads_no_jax():
    assert _run("import sys, xlm_flax; print('jax' in sys.modules, 'flax' in sys.modules)") == "False False"


@pytest.mark.parametrize("flag", ["--help", "--version"])
def test_help_and_version_load_no_jax(flag):
    code = (
        "import sys\nfrom xlm_flax.cli import main\n"
        f"try:\n    main([{flag!r}])\nexcept SystemExit:\n    pass\n"
        "print('jax' in sys.modules)"
    )
    assert _run(code).splitlines()[-1] == "False"


@pytest.mark.parametrize("name", NAMES_0_1_0)
def test_names_of_0_1_0_import_from_the_package(name):
    assert name in xlm_flax.__all__
    assert getattr(xlm_flax, name) is not None


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'XLMNope'"):
        xlm_flax.XLMNope  # noqa: B018


def _modules() -> dict[str, set[str]]:
    """Module name -> the xlm_flax modules it imports at import time (module-level statements only: imports inside
    functions are the deliberate lazy ones)."""
    modules = {}
    for root, _, files in os.walk(PACKAGE):
        for file in files:
            if not file.endswith(".py"):
                continue
            path = os.path.join(root, file)
            name = os.path.relpath(path, os.path.dirname(PACKAGE))[:-3].replace(os.sep, ".").removesuffix(".__init__")
            modules[name] = set()
            for node in ast.parse(open(path, encoding="utf-8").read()).body:
                if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("xlm_flax"):
                    modules[name].add(node.module)
                    modules[name].update(f"{node.module}.{a.name}" for a in node.names)
                elif isinstance(node, ast.Import):
                    modules[name].update(a.name for a in node.names if a.name.startswith("xlm_flax"))
    return {name: {d for d in deps if d in modules} for name, deps in modules.items()}


def _layer(module: str) -> int:
    best = (-1, len(LAYERS))  # (prefix length, layer); the package itself counts as the top
    for level, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best[0]:
                best = (len(prefix), level)
    return best[1]


def test_no_module_imports_a_higher_layer():
    upward = [
        f"{m} -> {d}" for m, deps in _modules().items() for d in deps if d != "xlm_flax" and _layer(d) > _layer(m)
    ]
    assert upward == []


def test_no_import_cycle():
    graph = _modules()
    state: dict[str, int] = {}
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for dep in sorted(graph[module]):
            if state.get(dep) == 1:
                cycles.append(" -> ".join([*path[path.index(dep) :], dep]))
            elif dep not in state:
                visit(dep, [*path, dep])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []
