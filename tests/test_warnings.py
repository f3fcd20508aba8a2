"""featpipe's own warnings fail a test: a UserWarning or a RuntimeWarning (0/0, overflow) from its modules.

A RuntimeWarning is how NumPy says a NaN was just made (an occlusion map's
pixel that no patch covers: 0/0); it is blamed on the module that called
NumPy, so the filters name featpipe's packages, every one of them.

The test runs a small test file under the project's own pytest settings, in
a fresh pytest, and checks which of its tests fail: what a featpipe test
run does with a warning, rather than what setup.cfg's text says.
"""

import configparser
import re
from pathlib import Path

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[1]
SETUP_CFG = REPO / "setup.cfg"
KINDS = ("UserWarning", "RuntimeWarning")
ELSEWHERE = ["numpy.lib.fake", "sklearn.utils.validation", "__main__"]

# Each inner test runs a line of code as if it were in MODULE: warnings blame
# the module whose code is running (its __name__), as they would in featpipe.
INNER_TESTS = '''
import warnings

import numpy as np
import pytest

CODE = {{
    "UserWarning": "warnings.warn('a featpipe-style warning', UserWarning)",
    "RuntimeWarning": "np.zeros(1) / np.zeros(1)",  # 0/0: 'invalid value encountered in divide'
}}


@pytest.mark.parametrize("module, kind", {cases!r}, ids=[f"{{m}} {{k}}" for m, k in {cases!r}])
def test_warn(module, kind):
    code = compile(CODE[kind], module.replace(".", "/") + ".py", "exec")
    exec(code, {{"__name__": module, "warnings": warnings, "np": np}})
'''


def packages():
    """featpipe's top-level packages, as setup.cfg lists them."""
    config = configparser.ConfigParser()
    config.read(SETUP_CFG)
    listed = config["options.packages.find"]["include"].split()
    return sorted(name for name in listed if "." not in name)


def a_module_of(package):
    """The name of one of ``package``'s own modules (not its __init__)."""
    return f"{package}.{min(path.stem for path in (REPO / package).glob('*.py') if path.stem != '__init__')}"


def test_a_featpipe_warning_fails_a_test_and_one_from_elsewhere_does_not(pytester):
    featpipe = [a_module_of(package) for package in packages()]
    cases = [(module, kind) for module in featpipe + ELSEWHERE for kind in KINDS]
    inner = pytester.makepyfile(test_inner=INNER_TESTS.format(cases=cases))
    result = pytester.runpytest_subprocess(str(inner), "-c", str(SETUP_CFG), "--rootdir", str(REPO), "-p", "no:cacheprovider",
                                           "-rA", "-vv")
    # -vv keeps the short summary whole: "PASSED test_inner.py::test_warn[pipeline.cli UserWarning]",
    # "FAILED test_inner.py::test_warn[pipeline.cli UserWarning] - UserWarning: a featpipe-style warning".
    outcomes = {case: (outcome, reason) for outcome, case, reason in
                re.findall(r"^(PASSED|FAILED) \S*::test_warn\[(.+?)\](?: - (\w+))?", result.stdout.str(), re.M)}
    expected = {f"{module} {kind}": ("FAILED", kind) if module in featpipe else ("PASSED", "")
                for module, kind in cases}
    differ = {case: f"{outcomes.get(case)} (expected {want})" for case, want in expected.items() if outcomes.get(case) != want}
    assert not differ, f"outcome and reason of each inner test:\n{differ}\n\n{result.stdout.str()[-3000:]}"
