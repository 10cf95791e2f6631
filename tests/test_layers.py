"""The house: artdate's subpackages are layers, and imports run one way (lazy imports inside
functions count). The rules, each a test below:

- core (settings, works, storage, HTTP, images, the cluster connection) imports only core;
- data (shards, partition, the input pipeline) and model (the network, ranges, checkpoints,
  comparanda) import core and themselves, never each other;
- a stage (pack, train, score, report) imports core, data, model and itself, never another stage;
- nothing but the app (cli, demo, jobs) imports the app; the package face imports nothing;
- no module sits at the top of artdate/ but the app and the package face;
- `artdate pack` and `artdate report` run without loading torch or Ray.
"""

import ast
import os
import subprocess
import sys

import pytest

from tests.support.helpers import ROOT

PACKAGE = os.path.join(ROOT, "artdate")
APP = {"cli", "demo", "jobs"}
STAGES = {"pack", "train", "score", "report"}
ALLOWED = {  # layer -> the layers it may import, besides itself
    "core": set(),
    "data": {"core"},
    "model": {"core"},
    **{stage: {"core", "data", "model"} for stage in STAGES},
    "app": {"core", "data", "model", *STAGES},
}


def layer_of(module: str) -> str:
    """'artdate.data.shards' -> 'data'; 'artdate.cli' -> 'app'; 'artdate' (the face) -> 'face'."""
    parts = module.split(".")
    if len(parts) == 1:
        return "face"
    return "app" if parts[1] in APP else parts[1]


def imports_of(path: str, module: str) -> set[str]:
    """The artdate modules a module imports, anywhere in it, as dotted names."""
    found = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.ImportFrom) and node.level:
            found.add(f"relative import in {module}")  # absolute imports only: they say the layer
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "artdate":
            # `from artdate.data import shards` names modules; `from artdate.data.shards import x` a name
            prefix = node.module
            submodules = [f"{prefix}.{a.name}" for a in node.names if f"{prefix}.{a.name}" in MODULES]
            found.update(submodules or [prefix])
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "artdate")
    return found


def package_modules() -> dict[str, str]:
    modules = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                dotted = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".").removesuffix(".__init__")
                modules[dotted] = path
    return modules


MODULES = package_modules()


def import_graph() -> dict[str, set[str]]:
    return {module: imports_of(path, module) for module, path in MODULES.items()}


def breaches(graph: dict[str, set[str]]) -> list[str]:
    """Every import that runs against the layers, as 'importer -> imported (rule)'."""
    found = []
    for module, imported in sorted(graph.items()):
        here = layer_of(module)
        for other in sorted(imported):
            there = layer_of(other)
            if other.startswith("relative import"):
                found.append(f"{other} (imports are absolute)")
            elif here == "face":
                found.append(f"{module} -> {other} (the package face imports nothing)")
            elif there in (here, "face"):
                continue
            elif there not in ALLOWED[here]:
                found.append(f"{module} -> {other} ({here} may import only {sorted(ALLOWED[here]) or 'itself'})")
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> list[str] | None:
        state[module] = "open"
        for other in sorted(graph.get(module, ())):
            if state.get(other) == "open":
                return path[path.index(other) :] + [other] if other in path else [module, other]
            if other not in state and (cycle := visit(other, path + [other])):
                return cycle
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module, [module])):
            return cycle
    return None


def test_the_graph_is_read():
    graph = import_graph()
    assert graph["artdate.pack.metadata"] >= {"artdate.pack.catalog", "artdate.core.works"}
    assert "artdate.data.pipeline" in graph["artdate.train.loop"]  # `from artdate.data import pipeline`
    assert "artdate.data.shards" in graph["artdate.pack.run"]


def test_only_the_app_and_the_package_face_sit_at_the_top():
    top = {name[:-3] for name in os.listdir(PACKAGE) if name.endswith(".py")}
    assert top == APP | {"__init__"}
    layers = {name for name in os.listdir(PACKAGE) if os.path.isfile(os.path.join(PACKAGE, name, "__init__.py"))}
    assert layers == set(ALLOWED) - {"app"}


def test_imports_run_from_the_app_through_the_stages_to_data_and_model_to_core():
    assert breaches(import_graph()) == []


def test_no_import_cycle_between_artdate_modules():
    graph = import_graph()
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


@pytest.mark.parametrize(
    "importer, imported, rule",
    [
        ("artdate.core.store", "artdate.data.shards", "core may import only itself"),
        ("artdate.data.pipeline", "artdate.model.network", "data may import only ['core']"),
        ("artdate.model.network", "artdate.data.pipeline", "model may import only ['core']"),
        ("artdate.report.run", "artdate.score.run", "report may import only ['core', 'data', 'model']"),
        ("artdate.pack.run", "artdate.cli", "pack may import only ['core', 'data', 'model']"),
        ("artdate", "artdate.cli", "the package face imports nothing"),
    ],
)
def test_a_breach_of_each_rule_is_named(importer, imported, rule):
    assert breaches({importer: {imported}}) == [f"{importer} -> {imported} ({rule})"]


def test_imports_the_rules_allow_are_no_breach():
    allowed = {
        "artdate.data.pipeline": {"artdate.data.shards", "artdate.core.store", "artdate"},
        "artdate.score.predict": {"artdate.score.score_parts", "artdate.model.network", "artdate.data.pipeline"},
        "artdate.cli": {"artdate.pack.run", "artdate.train.run", "artdate.core.config"},
    }
    assert breaches(allowed) == []


def test_a_cycle_is_found():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_pack_and_report_run_without_torch_or_ray(tmp_path):
    """The commands a machine without a GPU stack runs: a real pack of two images and a report."""
    images = tmp_path / "images"
    images.mkdir()
    from PIL import Image

    for year in (1650, 1890):
        Image.new("RGB", (64, 48), (year % 255, 80, 120)).save(images / f"work_{year}.jpg")
    works = tmp_path / "works.csv"
    works.write_text("id,year,file\nw1,1650,work_1650.jpg\nw2,1890,work_1890.jpg\n")
    (tmp_path / "results.csv").write_text("museum,id,year,pred\nmet,1,1500,1380\nrijks,2,1610,1650\nmet,3,1890,1880\n")
    script = f"""
import sys
from artdate.cli import main
assert main(["pack", "--metadata", {str(works)!r}, "--images", {str(images)!r},
             "--out", {str(tmp_path / "shards")!r}, "--quiet"]) == 0
assert main(["report", {str(tmp_path / "results.csv")!r}, "--out", {str(tmp_path / "report")!r}]) == 0
print(sorted({{"torch", "ray", "torchvision"}} & set(sys.modules)))
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
    assert os.path.exists(tmp_path / "report" / "report.html")
