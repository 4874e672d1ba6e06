"""The package's shape: layers without import cycles, a trainer that knows no files, a
parser without torch, and the README's layout section kept true to the tree."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "ppl_vae"


def modules() -> dict[str, Path]:
    """Every module of the package (``ppl_vae.models`` is the top-level ``models/``)."""
    out = {}
    for base, prefix in ((PACKAGE, "ppl_vae"), (ROOT / "models", "ppl_vae.models")):
        for path in sorted(base.rglob("*.py")):
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([prefix, *parts])] = path
    return out


def imports(path: Path, name: str, known: set[str]) -> set[str]:
    """The package modules ``path`` imports anywhere in it (function-level imports
    included): ``from a.b import c`` is ``a.b.c`` when that is a module, else ``a.b``."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names
            ]
        found |= {t for t in targets if t in known and t != name}
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports(path, name, known) for name, path in mods.items()}


def test_no_import_cycle_in_the_package_lazy_imports_included():
    g = graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(g[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt) :] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(g):
        if node not in state:
            visit(node)


def closure(g: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in g[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


def test_fit_imports_nothing_of_the_run_directory_nor_the_cli():
    reached = closure(graph(), "ppl_vae.infer.trainer")
    assert not {m for m in reached if m.startswith(("ppl_vae.runs", "ppl_vae.cli"))}, reached


#: The layers, bottom up: each folder may import the base modules (errors, validate,
#: ranks, programs, traces, registry, data, models) and the folders before it, never one
#: after it. fit scores each epoch with measure.metrics, so measure sits below infer (it
#: shards its batches with the base module ranks, not with infer.distributed).
LAYERS = ("measure", "infer", "analysis", "figures", "runs", "cli")


def test_each_layer_imports_only_the_layers_beneath_it():
    for name, deps in graph().items():
        parts = name.split(".")
        if len(parts) < 3 or parts[1] not in LAYERS:
            continue
        for dep in deps:
            other = dep.split(".")
            if len(other) < 2 or other[1] not in LAYERS or other[1] == parts[1]:
                continue
            assert LAYERS.index(other[1]) < LAYERS.index(parts[1]), f"{name} imports {dep}"


def test_the_cli_reaches_measurements_analysis_and_figures_only_through_a_job():
    for name, deps in graph().items():
        if name.startswith("ppl_vae.cli"):
            reached = {d for d in deps if d.split(".")[1] in ("measure", "analysis", "figures")}
            assert not reached, f"{name} does a job's work: {sorted(reached)}"


#: The longest a function in the package may be, decorators and docstring included.
MAX_FUNCTION_LINES = 60


def test_no_function_in_the_package_is_longer_than_sixty_lines():
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                if node.end_lineno - first + 1 > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert not long, f"cut these into short functions: {long}"


def test_at_most_a_dozen_modules_directly_under_the_package_and_each_folder_explained():
    top = [p for p in PACKAGE.glob("*.py")]
    assert len(top) <= 12, sorted(p.name for p in top)
    for init in [*PACKAGE.glob("*/__init__.py"), ROOT / "models" / "__init__.py"]:
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert len(doc.split()) >= 40, f"{init} needs a paragraph: what lives here, how to add"


def readme_layout() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Layout") :]
    return section[section.index("```") + 3 : section.index("```", section.index("```") + 3)]


def test_the_readme_layout_names_every_module_and_folder_and_nothing_else():
    block = readme_layout()
    named = set(re.findall(r"([a-z_]+\.py)\b", block))
    folders = set(re.findall(r"^\s*([a-z_]+)/", block, flags=re.M))
    skip = ("__init__.py", "__main__.py")  # cli/ holds one module per subcommand, unnamed
    on_disk = {
        p.name for p in PACKAGE.rglob("*.py") if p.name not in skip and p.parent.name != "cli"
    }
    on_disk |= {
        p.name for p in (ROOT / "models" / "blocks").glob("*.py") if p.name != "__init__.py"
    }
    assert named == on_disk, (sorted(named - on_disk), sorted(on_disk - named))
    dirs = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    dirs |= {"ppl_vae", "models", "blocks", "examples", "tests", "benchmarks"}
    assert folders == dirs, (sorted(folders - dirs), sorted(dirs - folders))


#: (what is imported, what it must not pull in, why): each subcommand imports only what it
#: needs, and the figure worker process starts without torch.
LEAN_IMPORTS = {
    "parser": (
        "import ppl_vae.cli as c; c.parser()",
        ("torch", "pyro", "numpy", "matplotlib"),
    ),
    "training path": (  # sklearn alone costs seconds of every command (issue 23)
        "import ppl_vae.runs.train, ppl_vae.infer.trainer, ppl_vae.data.labels",
        ("sklearn", "scipy", "matplotlib", "arviz", "torchvision"),
    ),
    "figure worker": (
        "import ppl_vae.figures.worker, ppl_vae.figures.curves, ppl_vae.figures.latent",
        ("torch", "pyro"),
    ),
}


@pytest.mark.parametrize("case", list(LEAN_IMPORTS))
def test_imports_pull_in_only_what_they_need(case):
    imports, forbidden = LEAN_IMPORTS[case]
    code = (
        f"import sys; {imports}; "
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {set(forbidden)!r}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_importing_the_package_and_its_lazy_exports():
    from ppl_vae import analysis, data, infer

    assert callable(infer.fit) and infer.TrainConfig().epochs == 30
    assert callable(data.load) and "digits" in data.SOURCES
    assert callable(analysis.analyze)
    with pytest.raises(AttributeError):
        data.no_such_name  # noqa: B018
