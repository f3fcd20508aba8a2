"""dvc.yaml lists, for every stage, each featpipe module that can change the stage's output.

DVC's "up to date" is only as true as the deps: a change to the resize in
features/preprocessing.py must rerun extract and what follows. The modules a
stage can run are found from the imports of its module pipeline/<stage>.py,
followed through featpipe's own packages (imports inside functions too).
"""

import ast
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "features", "classifiers", "sources", "plumbing", "explanations", "learning_curves", "reporting")

# Imported by stages but unable to change what they write, with the reason.
CANNOT_CHANGE_OUTPUTS = {
    "plumbing/errors.py": "the user-error type and its one-line formatting",
    "features/cluster.py": "connects to Dask: where the work runs, not what it computes",
    "classifiers/fanout.py": "routes joblib to Dask: where the work runs, not what it computes",
}


def module_file(name):
    """``features/engine.py`` for ``features.engine`` (or the package's ``__init__.py``); None outside featpipe."""
    if name.split(".")[0] not in PACKAGES:
        return None
    base = REPO.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate.relative_to(REPO).as_posix()
    return None


def imported_modules(path):
    """The featpipe modules ``path`` imports anywhere in it: ``(imported, parents)``.

    ``parents`` are the package ``__init__.py`` files that importing a
    submodule runs on the way. They are deps too, but their own imports are
    followed only where the package itself is imported (``from classifiers
    import build``): a package that registers its parts on import doesn't
    make every stage that reads one submodule depend on all of them.
    """
    names = set()
    for node in ast.walk(ast.parse((REPO / path).read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)  # submodules imported by name
    imported = set(filter(None, map(module_file, names)))
    parents = set()
    for name in names:
        parts = name.split(".")
        parents.update(filter(None, (module_file(".".join(parts[:i])) for i in range(1, len(parts)))))
    return imported, parents - imported


def closure(path, others=()):
    """``path`` and every featpipe module it can run, transitively; ``others`` are not looked into."""
    seen, followed, todo = set(), set(others), [path]
    while todo:
        current = todo.pop()
        if current in followed:
            continue
        followed.add(current)
        imported, parents = imported_modules(current)
        seen |= {current} | (imported - set(others)) | parents
        todo.extend(imported - followed)
    return seen


def stages():
    """``(stage name, module path, deps)`` for every stage of dvc.yaml."""
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for name, stage in spec.items():
        body = stage.get("do", stage)
        command = body["cmd"].split()
        assert command[:2] == ["featpipe", name], f"stage {name} should run `featpipe {name}`, runs {body['cmd']!r}"
        yield name, f"pipeline/{name}.py", body.get("deps", [])


def covered(module, deps):
    return any(module == dep or module.startswith(dep.rstrip("/") + "/") for dep in deps)


@pytest.mark.parametrize("name, module, deps", list(stages()), ids=[stage[0] for stage in stages()])
def test_every_module_a_stage_can_run_is_among_its_deps(name, module, deps):
    needed = {
        path for path in closure(module, set(CANNOT_CHANGE_OUTPUTS))
        if path.startswith(("features/", "classifiers/"))
    } | {module}
    missing = sorted(path for path in needed if not covered(path, deps))
    assert not missing, f"dvc.yaml stage {name!r} misses deps: {', '.join(missing)}"


@pytest.mark.parametrize("name, module, deps", list(stages()), ids=[stage[0] for stage in stages()])
def test_no_stage_lists_code_it_cannot_run(name, module, deps):
    # A stale dep reruns the stage for nothing; exact lists stay easy to read.
    runs = closure(module, set(CANNOT_CHANGE_OUTPUTS))
    extra = sorted(dep for dep in deps if dep.endswith(".py") and dep not in runs)
    assert not extra, f"dvc.yaml stage {name!r} lists code it cannot run: {', '.join(extra)}"


def test_no_stage_module_imports_another():
    # What stages share lives in pipeline/ modules of its own (inputs, image_models, stage, paths),
    # so the import walk of a stage never runs through another stage's command.
    modules = {module for _, module, _ in stages()}
    for _, module, _ in stages():
        imported, _ = imported_modules(module)
        assert not imported & (modules - {module}), f"{module} imports {sorted(imported & modules)}"


def test_the_import_walk_sees_imports_inside_functions():
    # pipeline/extract.py imports the engine only inside its functions.
    assert "features/engine.py" in closure("pipeline/extract.py")
    assert "features/preprocessing.py" in closure("pipeline/extract.py")


def test_listed_deps_exist():
    for name, _, deps in stages():
        for dep in deps:
            if "${" not in dep and not dep.startswith("data/") and not dep.startswith("reports/"):
                assert (REPO / dep).exists(), f"stage {name}: dep {dep} does not exist"
