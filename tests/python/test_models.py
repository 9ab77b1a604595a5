"""Specs, plans and the machine as Python data."""
import json

import pytest

import ember


def test_the_built_in_models_are_listed():
    assert {"seed-cnn", "lenet", "attn-cnn", "resnet"} <= set(ember.models())


def test_a_spec_round_trips_through_save_spec(tmp_path):
    spec = ember.load_spec("seed-cnn")
    assert [layer["name"] for layer in spec["layers"]][:3] == ["conv1", "relu1", "pool1"]
    path = tmp_path / "mine.json"
    ember.save_spec(spec, str(path))
    assert json.loads(path.read_text()) == spec
    assert ember.load_spec(str(path)) == spec
    assert ember.plan(model=str(path))["model"] == str(path)


def test_a_bad_spec_is_refused_and_the_previous_file_kept(tmp_path):
    path = tmp_path / "mine.json"
    ember.save_spec(ember.load_spec("lenet"), str(path))
    before = path.read_bytes()
    spec = ember.load_spec("lenet")
    spec["layers"][0]["kernel"] = -3
    with pytest.raises(ember.Error, match="kernel"):
        ember.save_spec(spec, str(path))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["mine.json"]


def test_the_plan_places_live_tensors_apart():
    plan = ember.plan(model="seed-cnn", batch_size=64, micro_batch=16, threads=2, training=True)
    tensors = plan["tensors"]
    assert plan["ops"] and tensors and plan["step"]["total"] > plan["step"]["parameters"] > 0
    arena = plan["arena"]["arena_bytes"]
    for a in tensors:
        assert a["offset"] + a["bytes"] <= arena
        for b in tensors:
            live_together = a["first_use"] <= b["last_use"] and b["first_use"] <= a["last_use"]
            apart = a["offset"] + a["bytes"] <= b["offset"] or b["offset"] + b["bytes"] <= a["offset"]
            assert a is b or not live_together or apart, (a, b)
    assert plan["arena"]["lower_bound_bytes"] <= arena <= plan["arena"]["naive_bytes"]


def test_bad_plan_options_are_errors():
    with pytest.raises(ember.Error, match="optimizer must be sgd, sgd-momentum, adam or adamw, found 'lion'"):
        ember.plan(optimizer="lion")
    with pytest.raises(ember.Error, match="batch must be at least 1, found 0"):
        ember.plan(batch_size=0)


def test_info_names_the_instruction_set():
    info = ember.info()
    assert info["instruction_set"] in info["available_instruction_sets"]
    assert info["onednn"].startswith("2.") and info["threads"] >= 1
    assert ember.__version__.count(".") == 2
