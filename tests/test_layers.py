"""The README's layer line is what the imports say.

Each package may import only the packages to its right in the line; a
package in braces shares its layer with the others there and imports none of
them. The line is derived here from every import of every module (inside
functions too), the way tests/test_dvc_deps.py derives DVC's deps, and must
be the README's, word for word.
"""

import ast
import functools
import re
from pathlib import Path

from tests.test_dvc_deps import PACKAGES

REPO = Path(__file__).resolve().parents[1]
LEAF = "reporting"  # the report's words and pictures: any layer may use it, and it uses plumbing only
BASE = "plumbing"


def package_imports():
    """``{package: {packages its modules import}}``, featpipe's own only, self-imports left out."""
    imports = {package: set() for package in PACKAGES}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names = [node.module]
                else:
                    continue
                imports[package].update(name.split(".")[0] for name in names if name.split(".")[0] in PACKAGES)
        imports[package].discard(package)
    return imports


def layer_line(imports):
    """The README's words for ``imports``: layers from the top, each package as high as its longest import chain."""
    layered = {package: used - {LEAF} for package, used in imports.items() if package != LEAF}

    @functools.cache
    def height(package, seen=()):
        assert package not in seen, f"an import cycle: {' -> '.join([*seen, package])}"
        return 1 + max((height(used, (*seen, package)) for used in layered[package]), default=-1)

    layers = {}
    for package in layered:
        layers.setdefault(height(package), []).append(package)
    words = [_names(layers[level], braces=True) for level in sorted(layers, reverse=True)]
    leaf = f"`{LEAF}` (→ {_names(imports[LEAF])})" if imports[LEAF] else f"`{LEAF}`"
    return f"Layers (each imports only those to its right): {' → '.join(words)}; {leaf} is a leaf anyone may use."


def _names(packages, braces=False):
    """A layer's packages in backquotes, comma-separated; in braces when ``braces`` and there are several."""
    names = ", ".join(f"`{name}`" for name in sorted(packages))
    return f"{{{names}}}" if braces and len(packages) > 1 else names


def readme_line():
    text = " ".join((REPO / "README.md").read_text().split())  # the line may wrap anywhere
    found = re.search(r"Layers \(.*? is a leaf anyone may use\.", text)
    assert found, "README.md has no 'Layers (...): ... is a leaf anyone may use.' line"
    return found.group(0)


def test_the_readme_layer_line_is_what_the_imports_say():
    assert readme_line() == layer_line(package_imports())


def test_the_base_imports_nothing_of_featpipe():
    assert package_imports()[BASE] == set()


def test_a_package_importing_its_neighbour_changes_the_line():
    imports = package_imports()
    moved = {**imports, "features": imports["features"] | {"sources"}}  # features and sources share a layer today
    assert layer_line(moved) != layer_line(imports)
