"""dvc.yaml lists, for every stage, each featpipe module and param that can change the stage's output.

DVC's "up to date" is only as true as the deps: a change to the resize in
features/preprocessing.py must rerun extract and what follows, and so must a
change to a default in pipeline/params.py or a path in pipeline/paths.py. The
modules a stage can run are found from the imports of its module
pipeline/<stage>.py, followed through featpipe's own packages, pipeline/
included (imports inside functions too). pipeline/cli.py, the entry point
that runs the command and prints its errors, is not followed: it imports every
stage module only to offer its command.
"""

import ast
import configparser
import functools
import importlib
from pathlib import Path

import pytest
import yaml

from pipeline.stage import RECORD_STAGES

REPO = Path(__file__).resolve().parents[1]


def _packages():
    """featpipe's top-level packages, as setup.cfg ships them."""
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    return tuple(name for name in config["options.packages.find"]["include"].split() if "." not in name)


PACKAGES = _packages()

# Imported by stages but unable to change what they write, with the reason.
CANNOT_CHANGE_OUTPUTS = {
    "plumbing/errors.py": "the user-error type, its one-line formatting and how a worker's error comes back",
    "plumbing/cluster.py": "connects to Dask: where the work runs, not what it computes",
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


@functools.cache  # every stage's walk passes through the same modules
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
    return frozenset(imported), frozenset(parents - imported)


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


def stages(with_params=False):
    """``(stage name, module path, deps)`` for every stage of dvc.yaml, plus its params ``with_params``."""
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for name, stage in spec.items():
        body = stage.get("do", stage)
        command = body["cmd"].split()
        assert command[:2] == ["featpipe", name], f"stage {name} should run `featpipe {name}`, runs {body['cmd']!r}"
        found = (name, f"pipeline/{name}.py", body.get("deps", []))
        yield found + (body.get("params", []),) if with_params else found


def covered(module, deps):
    return any(module == dep or module.startswith(dep.rstrip("/") + "/") for dep in deps)


@pytest.mark.parametrize("name, module, deps", list(stages()), ids=[stage[0] for stage in stages()])
def test_every_module_a_stage_can_run_is_among_its_deps(name, module, deps):
    needed = runs(module) - set(CANNOT_CHANGE_OUTPUTS)
    missing = sorted(path for path in needed if not covered(path, deps))
    assert not missing, f"dvc.yaml stage {name!r} misses deps: {', '.join(missing)}"


@pytest.mark.parametrize("name, module, deps", list(stages()), ids=[stage[0] for stage in stages()])
def test_no_stage_lists_code_it_cannot_run(name, module, deps):
    # A stale dep reruns the stage for nothing; exact lists stay easy to read.
    runnable = runs(module)
    extra = sorted(dep for dep in deps if dep.endswith(".py") and dep not in runnable)
    assert not extra, f"dvc.yaml stage {name!r} lists code it cannot run: {', '.join(extra)}"


def runs(module):
    """Every featpipe module a stage's command can run, with the training stages' ``record_names``.

    :func:`pipeline.stage.expected_records` imports each of
    :data:`~pipeline.stage.RECORD_STAGES` by name and calls its
    ``record_names(params)``: an import the walk can't see. Only that function
    runs there, so the modules count, not the code their commands import.
    """
    modules = closure(module, set(CANNOT_CHANGE_OUTPUTS))
    if calls_expected_records(module):
        modules |= {f"pipeline/{stage}.py" for stage in RECORD_STAGES}
    return modules


def calls_expected_records(module):
    return any(isinstance(node, ast.Name) and node.id == "expected_records"
               for node in ast.walk(ast.parse((REPO / module).read_text())))


class ReadKeys(dict):
    """A params dict that notes the dotted key of every value read from it (mappings are followed)."""

    def __init__(self, values, read, prefix=""):
        super().__init__(values)
        self.read, self.prefix = read, prefix

    def __getitem__(self, key):
        value = super().__getitem__(key)
        if isinstance(value, dict):
            return ReadKeys(value, self.read, f"{self.prefix}{key}.")
        self.read.add(self.prefix + key)
        return value


def record_params():
    """The params keys the training stages' ``record_names`` read (they decide which models a stage reads)."""
    from pipeline.params import defaults

    read = set()
    for stage in RECORD_STAGES:
        importlib.import_module(f"pipeline.{stage}").record_names(ReadKeys(defaults(), read))
    return read


def test_the_params_walk_sees_what_record_names_read():
    assert {"extract.backbones", "train.classifiers", "finetune.backbones"} <= record_params()


@pytest.mark.parametrize("name, module, params", [(name, module, params) for name, module, _, params in stages(with_params=True)
                                                  if calls_expected_records(module)])
def test_a_stage_that_reads_the_records_lists_every_param_that_names_them(name, module, params):
    # Removing a finetune.backbones entry must rerun explain and report, or they keep its row and maps.
    listed = [next(iter(entry)) if isinstance(entry, dict) else entry for entry in params]
    missing = sorted(key for key in record_params()
                     if not any(key == entry or key.startswith(entry + ".") for entry in listed))
    assert not missing, f"dvc.yaml stage {name!r} reads the records named by {', '.join(missing)} but doesn't list them"


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
