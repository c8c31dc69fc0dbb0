"""The library never imports an application tree (docs/design.md#layering).

``filter_basis/`` is the method and the engine; ``image_classification/`` and ``super_resolution/`` are
applications built on it.  Where the library needs a tree at run time it looks it up by name
(``filter_basis.engine.find_tree``, importlib), never with an ``import`` statement.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TREES = ("image_classification", "super_resolution")


def tree_imports(source: str) -> list:
    """(line, module) of every static import of a tree in ``source`` (at any depth: functions included)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [(node.lineno, name) for name in names if name.split(".")[0] in TREES]
    return found


def test_the_check_sees_every_form_of_import():
    source = ("import image_classification\nimport os, super_resolution.model as m\n"
              "def f():\n    from image_classification.tree import TREE\n"
              "from filter_basis import engine\nfrom . import trees\n")
    assert tree_imports(source) == [(1, "image_classification"), (2, "super_resolution.model"),
                                    (4, "image_classification.tree")]


@pytest.mark.parametrize("path", sorted((ROOT / "filter_basis").rglob("*.py")),
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_no_library_module_imports_a_tree(path):
    assert tree_imports(path.read_text()) == [], f"{path.relative_to(ROOT)} imports an application tree"
