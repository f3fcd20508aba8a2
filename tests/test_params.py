from pathlib import Path

import pytest
import yaml

from plumbing.errors import FeatpipeError
from pipeline.params import defaults, load_params, override, validate


def dotted_keys(tree, prefix=""):
    """Every leaf key of a nested params dict, dotted: ``train.rf.n_estimators``."""
    keys = set()
    for key, value in tree.items():
        keys |= dotted_keys(value, f"{prefix}{key}.") if isinstance(value, dict) and key != "grids" else {prefix + key}
    return keys


# The checkout's params.yaml: `dvc exp run -S key=value` rewrites its values in place,
# so tests of it check keys and validity only, never a value an experiment may change.
SHIPPED = Path(__file__).resolve().parents[1] / "params.yaml"


def test_shipped_params_file_is_valid_and_complete():
    shipped = yaml.safe_load(SHIPPED.read_text())
    # Valid as shipped, and no value comes from a default: every knob is in the file,
    # so DVC can track each one by its dotted key.
    missing = sorted(dotted_keys(defaults()) - dotted_keys(shipped))
    assert not missing, f"params.yaml lacks {', '.join(missing)}"
    assert validate(shipped) == shipped
    assert dotted_keys(shipped) == dotted_keys(defaults())


def test_the_scratch_architecture_is_the_librarys_and_params_can_spell_it():
    from classifiers.cnn.scratch import ARCHITECTURE

    # Left out, the architecture is the library's (defined there alone) ...
    assert {key: defaults()["scratch"][key] for key in ARCHITECTURE} == dict.fromkeys(ARCHITECTURE)
    # ... and params.yaml can write out those same values (it does as shipped; an experiment may change them).
    spelt = {key: list(value) if isinstance(value, tuple) else value for key, value in ARCHITECTURE.items()}
    assert {key: validate({"scratch": spelt})["scratch"][key] for key in ARCHITECTURE} == spelt


def test_a_model_file_entry_and_a_second_layer_of_it_are_valid():
    entries = [{"name": "mine", "layer": "embedding", "file": "models/mine.keras"},
               {"name": "mine", "layer": "logits", "file": "models/mine.keras"}, {"name": "vgg16", "layer": "fc2"}]
    assert validate({"extract": {"backbones": entries}})["extract"]["backbones"] == entries


def test_svm_gamma_takes_a_name_or_a_positive_number():
    for gamma in ("scale", "auto", 0.5, 2):
        assert validate({"train": {"svm": {"gamma": gamma}}})["train"]["svm"]["gamma"] == gamma


def test_missing_keys_take_defaults():
    assert validate({}) == defaults()
    assert validate({"data": {"train_size": 10}})["data"]["test_size"] is None


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"data": {"train_size": 0}}, "params: data.train_size: expected an integer >= 1 or null, got 0"),
        ({"data": {"train_size": "many"}}, "data.train_size: expected an integer"),
        ({"data": {"train_size": True}}, "data.train_size: expected an integer"),
        ({"train": {"knn": {"n_jobs": 0}}}, "params: train.knn.n_jobs: expected an integer other than 0 (-1: every core), got 0"),
        ({"data": {"source": "mnist"}}, "data.source: expected one of 'fashion_mnist', 'cifar10', 'folder', got 'mnist'"),
        ({"data": {"test_fraction": 1.0}}, "data.test_fraction: expected a number >= 0.0 and < 1.0"),
        ({"extract": {"backbones": []}}, "extract.backbones: expected a list"),
        ({"extract": {"backbones": [{"nam": "vgg16"}]}}, "extract.backbones[0]: expected {name: ..., layer: ...}, plus file: models/"),
        # A model file is an entry with a name of its own: the name is what every path is made of.
        ({"extract": {"backbones": [{"name": "models/my.keras", "layer": "embedding"}]}},
         "extract.backbones[0].name: expected a plain name, got the model file 'models/my.keras'; write a model file "
         "of your own as {name: my, layer: embedding, file: models/my.keras}"),
        ({"extract": {"backbones": [{"name": "vgg16", "layer": "fc2"}, {"name": "a/b", "layer": "x"}]}},
         "extract.backbones[1].name: expected a plain name"),
        ({"extract": {"backbones": [{"name": "vgg16", "layer": 2}]}}, "extract.backbones[0].layer: expected a plain name"),
        ({"extract": {"backbones": [{"name": "mine", "layer": "x", "file": "elsewhere/mine.keras"}]}},
         "extract.backbones[0].file: expected a .keras file under models/"),
        ({"extract": {"backbones": [{"name": "mine", "layer": "x", "file": "models/../mine.keras"}]}},
         "extract.backbones[0].file: expected a .keras file under models/"),
        ({"extract": {"backbones": [{"name": "mine", "layer": "x", "file": "models/mine.h5"}]}},
         "extract.backbones[0].file: expected a .keras file under models/"),
        ({"extract": {"backbones": [{"name": "vgg16", "layer": "fc2"}, {"name": "vgg16", "layer": "fc2"}]}},
         "extract.backbones[1]: vgg16-fc2 is already extract.backbones[0]"),
        ({"extract": {"backbones": [{"name": "mine", "layer": "a", "file": "models/a.keras"},
                                    {"name": "mine", "layer": "b", "file": "models/b.keras"}]}},
         "extract.backbones[1].name: 'mine' names models/a.keras in extract.backbones[0] but models/b.keras here"),
        ({"train": {"rf": {"max_features": 2.5}}}, "train.rf.max_features"),
        ({"seeds": 1}, "unknown key 'seeds'"),
        ({"train": {"svm": {"c": 1.0}}}, "unknown key 'train.svm.c'"),
        ({"data": [1, 2]}, "data: expected a mapping"),
        ({"seed": 4294967296}, "seed: expected an integer >= 0 and <= 4294967295, got 4294967296"),
        ({"data": {"test_fraction": float("nan")}}, "data.test_fraction: expected a number >= 0.0 and < 1.0, got nan"),
        ({"train": {"svm": {"C": float("inf")}}}, "train.svm.C: expected a positive number, got inf"),
        ({"train": {"svm": {"C": 0}}}, "train.svm.C: expected a positive number, got 0"),
        ({"train": {"svm": {"gamma": float("inf")}}}, "train.svm.gamma: expected 'scale', 'auto' or a positive number"),
        ({"train": {"svm": {"gamma": 0}}}, "train.svm.gamma: expected 'scale', 'auto' or a positive number, got 0"),
        ({"train": {"svm": {"gamma": True}}}, "train.svm.gamma: expected 'scale', 'auto' or a positive number, got True"),
        ({"train": {"svm": {"gamma": "rbf"}}}, "train.svm.gamma: expected 'scale', 'auto' or a positive number, got 'rbf'"),
    ],
)
def test_mistakes_name_the_key_expected_and_found(raw, message):
    with pytest.raises(FeatpipeError, match=None) as caught:
        validate(raw)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_load_params_reports_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(FeatpipeError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(FeatpipeError, match="not valid YAML at line"):
        load_params(bad)
    bad.write_bytes(bytes(range(256)))
    with pytest.raises(FeatpipeError, match=f"^params: {bad} is not UTF-8 text"):
        load_params(bad)


def test_a_missing_params_yaml_means_defaults_but_a_named_file_must_exist(in_tmp_project):
    from pipeline.stage import stage_params

    assert stage_params() == defaults()
    assert stage_params(seed=7, section="extract", batch_size=4)["extract"]["batch_size"] == 4
    with pytest.raises(FeatpipeError, match="params file not found: other.yaml"):
        stage_params("other.yaml")


def test_override_validates_cli_values_and_keeps_the_rest():
    params = defaults()
    updated = override(params, "extract", batch_size=8, precision=None)
    assert updated["extract"]["batch_size"] == 8
    assert updated["extract"]["precision"] == params["extract"]["precision"]
    assert params["extract"]["batch_size"] == 32  # the original is untouched
    with pytest.raises(FeatpipeError, match="extract.batch_size: expected an integer >= 1, got 0"):
        override(params, "extract", batch_size=0)
    assert override(params, "train.rf", n_estimators=5)["train"]["rf"]["n_estimators"] == 5
