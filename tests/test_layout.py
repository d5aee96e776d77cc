"""The package's shape: no import cycles, one experiment driver, modules of a few hundred lines."""

import ast
import collections
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "vsegjax"

# Function-local imports of vsegjax modules that stay, and why (none dodges a cycle).
LOCAL_IMPORTS_ALLOWED = {
    "vsegjax.main": "--help and flag errors answer before JAX loads",
    "vsegjax.train.experiment": "the registry is read by --help without JAX",
    "vsegjax.data.datasets": "a builder is imported when its dataset is used",
    "vsegjax.models.convert": "torch and safetensors are optional, needed only for their files",
    "vsegjax.export": "TensorFlow is optional, needed only for --format=savedmodel",
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


def test_one_experiment_driver():
    """No task module keeps a run() driver of its own."""
    drivers = []
    for path in (PACKAGE / "train").glob("*.py"):
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
