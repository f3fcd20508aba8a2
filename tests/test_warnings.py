"""featpipe's own warnings fail a test: a UserWarning or a RuntimeWarning (0/0, overflow) from its modules.

A RuntimeWarning is how NumPy says a NaN was just made (an occlusion map's
pixel that no patch covers: 0/0); it is blamed on the module that called
NumPy, so the filters name featpipe's packages, every one of them.
"""

import configparser
import warnings
from pathlib import Path

import pytest

SETUP_CFG = Path(__file__).resolve().parents[1] / "setup.cfg"


def packages():
    """featpipe's top-level packages, as setup.cfg lists them."""
    config = configparser.ConfigParser()
    config.read(SETUP_CFG)
    listed = config["options.packages.find"]["include"].split()
    return sorted(name for name in listed if "." not in name)


def test_every_package_turns_its_own_user_and_runtime_warnings_into_errors():
    config = configparser.ConfigParser()
    config.read(SETUP_CFG)
    filters = set(config["tool:pytest"]["filterwarnings"].split())
    missing = [f"error::{kind}:{name}.*" for name in packages() for kind in ("UserWarning", "RuntimeWarning")
               if f"error::{kind}:{name}.*" not in filters]
    assert not missing, f"setup.cfg's filterwarnings lacks {', '.join(missing)}"


@pytest.mark.parametrize("module", ["explanations.occlusion", "features.engine", "pipeline.explain"])
def test_a_runtime_warning_from_featpipe_fails_and_one_from_elsewhere_does_not(module):
    with pytest.raises(RuntimeWarning, match="invalid value encountered in divide"):
        warnings.warn_explicit("invalid value encountered in divide", RuntimeWarning, f"{module}.py", 1, module=module)
    with pytest.warns(RuntimeWarning):
        warnings.warn_explicit("invalid value encountered in divide", RuntimeWarning, "numpy.py", 1, module="numpy")
