"""The package's shape: layers that import only downward, no import cycles, one experiment
driver, modules of a few hundred lines (docs/design.md draws the layers)."""

import ast
import collections
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "vsegjax"

# Function-local imports of vsegjax modules that stay, and why (none dodges a cycle).
LOCAL_IMPORTS_ALLOWED = {
    "vsegjax.main": "--help and flag errors answer before JAX loads",
    "vsegjax.core.experiment": "main imports it before the flags are parsed; JAX comes with run()",
    "vsegjax.data.datasets": "a builder is imported when its dataset is used",
    "vsegjax.models.convert": "torch and safetensors are optional, needed only for their files",
    "vsegjax.export": "TensorFlow is optional, needed only for --format=savedmodel",
    "vsegjax.compile": "the host backend is pinned to the CPU before JAX loads",
}


def _modules() -> dict[str, pathlib.Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def import_graph() -> tuple[dict[str, set[str]], list[tuple[str, int]]]:
    """(module -> vsegjax modules it imports anywhere, [(module, line) of local imports])."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    local = []
    for name, path in mods.items():
        tree = ast.parse(path.read_text())
        top = set(map(id, tree.body))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                targets = {node.module} | {f"{node.module}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                targets = {a.name for a in node.names}
            else:
                continue
            targets = {t for t in targets if t in mods and t != name}
            graph[name] |= targets
            if targets and id(node) not in top:
                local.append((name, node.lineno))
    return graph, local


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(v: str) -> list[str] | None:
        state[v] = 1
        path.append(v)
        for w in sorted(graph[v]):
            if state.get(w) == 1:
                return path[path.index(w):] + [w]
            if w not in state:
                found = visit(w)
                if found:
                    return found
        state[v] = 2
        path.pop()
        return None

    for v in sorted(graph):
        if v not in state:
            found = visit(v)
            if found:
                return found
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_even_through_function_local_imports():
    graph, _ = import_graph()
    assert find_cycle(graph) is None


def test_function_local_imports_only_where_a_reason_is_given():
    _, local = import_graph()
    unexplained = sorted({(m, line) for m, line in local if m not in LOCAL_IMPORTS_ALLOWED})
    assert not unexplained, unexplained


# Each layer and what it may not import (prefixes of module names). The apps are the
# entry points and what serves only them (``inference``, ``experiments``).
APPS = ("vsegjax.main", "vsegjax.segment", "vsegjax.export", "vsegjax.autolabel",
        "vsegjax.compile", "vsegjax.cli", "vsegjax.colab", "vsegjax.experiments",
        "vsegjax.inference")
BUILDING_BLOCKS = ("vsegjax.ops", "vsegjax.models", "vsegjax.data", "vsegjax.evaluation",
                   "vsegjax.viz", "vsegjax.losses", "vsegjax.files", "vsegjax.checkpoint_io")
FORBIDDEN = {
    # the core knows no method, no model family and no app
    "vsegjax.core": ("vsegjax.methods", *APPS, "vsegjax.models", "vsegjax.losses",
                     "vsegjax.evaluation"),
    **{block: ("vsegjax.core", "vsegjax.methods", *APPS) for block in BUILDING_BLOCKS},
    "vsegjax.methods": APPS,
    "vsegjax.inference": ("vsegjax.main", "vsegjax.segment", "vsegjax.export",
                          "vsegjax.autolabel"),
}


def _under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def layer_violations(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """(importer, imported) pairs that point up or sideways across the layers."""
    bad = []
    for module, targets in graph.items():
        for layer, forbidden in FORBIDDEN.items():
            if not _under(module, layer):
                continue
            bad += [(module, t) for t in sorted(targets)
                    if any(_under(t, f) for f in forbidden)
                    # a package's own modules (``vsegjax.inference`` is in APPS) are its own
                    and not _under(t, layer)]
    return sorted(set(bad))


def test_the_layer_rule_finds_an_upward_import():
    graph = {"vsegjax.core.trainer": {"vsegjax.models.convert", "vsegjax.core.step"},
             "vsegjax.models.flownet": {"vsegjax.core.checkpoint"},
             "vsegjax.methods.grfp.task": {"vsegjax.core.task", "vsegjax.models.segmenter"},
             "vsegjax.methods.efc.task": {"vsegjax.inference.trained"}}
    assert layer_violations(graph) == [
        ("vsegjax.core.trainer", "vsegjax.models.convert"),
        ("vsegjax.methods.efc.task", "vsegjax.inference.trained"),
        ("vsegjax.models.flownet", "vsegjax.core.checkpoint")]


def test_every_import_points_down_the_layers():
    """core -> no method, model, loss, evaluation or app; building blocks -> no core,
    method or app; methods -> no app (function-local imports included)."""
    graph, _ = import_graph()
    assert not layer_violations(graph)


def test_every_module_is_in_a_layer():
    graph, _ = import_graph()
    layers = (*FORBIDDEN, *APPS, "vsegjax")
    assert all(any(_under(m, layer) for layer in layers) for m in graph)
    top = sorted(m for m in graph if m.count(".") == 1 and not any(
        _under(m, layer) for layer in (*FORBIDDEN, *APPS)))
    assert top == [], top  # a new top-level module must say which layer it is in


def test_no_app_compares_task_names():
    """segment, export and the trained-model loader ask the task (``segments``,
    ``predictor``), never test its name."""
    from vsegjax.methods import REGISTRY
    for name in ("segment.py", "export.py", "inference/trained.py", "inference/savedmodel.py"):
        tree = ast.parse((PACKAGE / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare):
                consts = [c.value for c in ast.walk(node) if isinstance(c, ast.Constant)]
                assert not set(consts) & set(REGISTRY), (name, node.lineno, consts)


def test_one_experiment_driver():
    """No task module keeps a run() driver of its own."""
    drivers = []
    for path in [*(PACKAGE / "core").glob("*.py"), *(PACKAGE / "methods").rglob("*.py")]:
        tree = ast.parse(path.read_text())
        drivers += [path.name for node in tree.body
                    if isinstance(node, ast.FunctionDef) and node.name == "run"]
    assert drivers == ["experiment.py"]


def test_modules_stay_under_500_lines():
    long = sorted(str(p.relative_to(ROOT)) for p in PACKAGE.rglob("*.py")
                  if len(p.read_text().splitlines()) > 500)
    assert not long, long


def test_every_tfds_builder_shares_the_snippet_base():
    """No builder re-implements the plumbing: each derives from SnippetBuilder, and the
    reading helpers are defined once."""
    import tensorflow_datasets as tfds
    from vsegjax.data import (camvid, cityscapes, flow_datasets, snippet_builder,
                              synthetic_tfds, video_datasets)
    builders = [c for m in (camvid, cityscapes, flow_datasets, synthetic_tfds, video_datasets)
                for c in vars(m).values()
                if isinstance(c, type) and issubclass(c, tfds.core.GeneratorBasedBuilder)]
    assert len(builders) >= 8
    for cls in builders:
        assert issubclass(cls, snippet_builder.SnippetBuilder), cls
    defined = collections.Counter()
    for path in (PACKAGE / "data").glob("*.py"):
        tree = ast.parse(path.read_text())
        defined.update(n.name for n in tree.body if isinstance(n, ast.FunctionDef))
    for helper in ("read_frame", "_resize", "format_report", "bounded_map"):
        assert defined[helper] <= 1, helper
