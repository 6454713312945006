"""The layout a newcomer reads (docs/architecture.md): no import cycles in cascade/ (imports inside functions
count), nothing in cascade/ imports train/ or eval/, no module over 400 lines, and every name and path the
README and docs show exists."""

import ast
import importlib
import re

import pytest

from conftest import ROOT

MODULES = {}
for _path in sorted((ROOT / "cascade").rglob("*.py")):
    _name = ".".join(_path.relative_to(ROOT).with_suffix("").parts)
    MODULES[_name.removesuffix(".__init__")] = _path


def imports_of(name: str, path) -> set[str]:
    """The cascade modules `name` imports anywhere in its file (a name imported from a package counts as
    the submodule when one has that name, else as the package)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            subs = {f"{module}.{a.name}" for a in node.names} & set(MODULES)
            found |= subs | ({module} if len(subs) < len(node.names) else set())
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles_and_no_imports_of_scripts():
    graph = {name: {m for m in imports_of(name, path) if m in MODULES and m != name} for name, path in MODULES.items()}
    assert cycles(graph) == []
    scripts = {name: sorted(m for m in imports_of(name, path) if m.split(".")[0] in ("train", "eval"))
               for name, path in MODULES.items()}
    assert {k: v for k, v in scripts.items() if v} == {}


def test_the_cycle_finder_finds_a_cycle_hidden_in_a_function(tmp_path):
    (tmp_path / "a.py").write_text("def f():\n    from .b import g\n")
    (tmp_path / "b.py").write_text("from .a import f\n")
    graph = {f"pkg.{n}": imports_of(f"pkg.{n}", tmp_path / f"{n}.py") for n in "ab"}
    assert graph == {"pkg.a": {"pkg.b"}, "pkg.b": {"pkg.a"}}
    assert cycles(graph) == [["pkg.a", "pkg.b"]]


def test_no_module_is_over_400_lines():
    long = {name: n for name, path in MODULES.items() if (n := len(path.read_text().splitlines())) > 400}
    assert long == {}


DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
IMPORT = re.compile(r"^\s*(from cascade[\w.]* import [\w, ()]+|import cascade[\w.]*)", re.M)
DOTTED = re.compile(r"`(cascade(?:\.\w+)+)")
PATH = re.compile(r"(?<![\w/.])(cascade/[\w/]+\.py|(?:train|eval|configs)/[\w/]+\.(?:py|yaml))")


def shown(pattern):
    return sorted({(doc.name, m.group(1)) for doc in DOCS for m in pattern.finditer(doc.read_text())})


@pytest.mark.parametrize("doc,statement", shown(IMPORT))
def test_every_import_the_docs_show_works(doc, statement):
    exec(statement.replace("(", "").replace(")", ""), {})


@pytest.mark.parametrize("doc,dotted", [(d, n) for d, n in shown(DOTTED) if not n.endswith(".json")])
def test_every_dotted_name_the_docs_show_resolves(doc, dotted):
    parts = dotted.split(".")
    for k in range(len(parts), 0, -1):  # the longest importable prefix, then attributes
        try:
            obj = importlib.import_module(".".join(parts[:k]))
        except ModuleNotFoundError:
            continue
        for attr in parts[k:]:
            assert hasattr(obj, attr), f"{doc}: {dotted}: {'.'.join(parts[:k])} has no {attr!r}"
            obj = getattr(obj, attr)
        return
    raise AssertionError(f"{doc}: {dotted} does not import")


@pytest.mark.parametrize("doc,path", shown(PATH))
def test_every_file_the_docs_name_exists(doc, path):
    assert (ROOT / path).is_file(), f"{doc} names {path}"
