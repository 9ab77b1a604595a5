"""ember.train: the CLI's loop with its flags as keywords; the same checkpoint bytes as
`ember train` with the same options, callbacks per epoch, and clear errors."""
import subprocess

import numpy as np
import pytest

import ember

RECIPE = dict(model="seed-cnn", data="fashion-mnist", max_steps=6, batch_size=32, train_limit=320, test_limit=64,
              lr=2e-3, optimizer="adamw", weight_decay=0.05, schedule="onecycle", label_smoothing=0.1, seed=7,
              mean=0.286, std=0.353, threads=2)


def cli_flags(options):
    flags = []
    for key, value in options.items():
        flags += ["--" + key.replace("_", "-"), str(value)]
    return flags


def test_the_checkpoint_equals_the_clis_byte_for_byte(cli, tmp_path):
    from_cli = tmp_path / "cli.safetensors"
    from_python = tmp_path / "python.safetensors"
    subprocess.run([cli, "train", *cli_flags(RECIPE), "--save", str(from_cli)], check=True, capture_output=True)
    reports = ember.train(**RECIPE, save=str(from_python))
    assert from_python.read_bytes() == from_cli.read_bytes()
    assert len(reports) == 1 and reports[0]["step"] == 6


def test_the_callback_sees_every_epoch(tmp_path):
    seen = []
    reports = ember.train(model="seed-cnn", data="fashion-mnist", epochs=2, batch_size=64, train_limit=128,
                          test_limit=64, threads=1, callback=seen.append)
    assert [m["epoch"] for m in seen] == [1, 2]
    assert seen == reports
    for metrics in seen:
        assert 0.0 <= metrics["test_accuracy"] <= 1.0 and np.isfinite(metrics["train_loss"])
        assert metrics["images_per_second"] > 0


def test_a_failing_callback_stops_training_with_its_exception(tmp_path):
    checkpoint = tmp_path / "stopped.safetensors"

    def fail(metrics):
        raise KeyError(f"stop after epoch {metrics['epoch']}")

    with pytest.raises(KeyError, match="stop after epoch 1"):
        ember.train(model="seed-cnn", data="fashion-mnist", epochs=3, train_limit=64, test_limit=32, threads=1,
                    save=str(checkpoint), callback=fail)
    # The first epoch's checkpoint was written before the callback ran; it stays whole.
    assert ember.Session(str(checkpoint)).run(np.zeros((1, 1, 28, 28), np.float32)).shape == (1, 10)


def test_bad_keywords_are_type_errors_naming_them():
    with pytest.raises(TypeError, match="unknown keyword argument 'epoch' .*epochs"):
        ember.train(epoch=1)
    with pytest.raises(TypeError, match="epochs: expected an int, found str '3'"):
        ember.train(epochs="3")
    with pytest.raises(TypeError, match="nesterov: expected a bool, found int"):
        ember.train(nesterov=1)
    with pytest.raises(TypeError, match="lr: expected a number, found NoneType"):
        ember.train(lr=None)
    with pytest.raises(ValueError, match="seed: -1 is out of range"):
        ember.train(seed=-1)


def test_bad_values_are_ember_errors():
    with pytest.raises(ember.Error, match="epochs must be at least 1, found 0"):
        ember.train(epochs=0)
    with pytest.raises(ember.Error, match="no-such-model"):
        ember.train(model="no-such-model", max_steps=1)


def write_iris_like_csv(path, rows, seed):
    """Three well-separated classes named by text, four features."""
    rng = np.random.default_rng(seed)
    names = ["setosa", "versicolor", "virginica"]
    with open(path, "w") as f:
        f.write("a,b,c,d,species\n")
        for i in range(rows):
            label = i % 3
            x = rng.normal(loc=3.0 * label, scale=0.5, size=4)
            f.write(",".join(f"{v:.4f}" for v in x) + f",{names[label]}\n")


def test_a_csv_table_trains_an_mlp_and_the_session_names_its_classes(tmp_path):
    spec = tmp_path / "mlp.json"
    ember.save_spec({"format": "ember.model", "version": 1, "name": "mlp", "input": [4],
                     "layers": [{"name": "fc1", "kind": "linear", "in_features": 4, "out_features": 16},
                                {"name": "relu1", "kind": "relu"},
                                {"name": "fc2", "kind": "linear", "in_features": 16, "out_features": 3}]}, str(spec))
    write_iris_like_csv(tmp_path / "train.csv", 300, 0)
    write_iris_like_csv(tmp_path / "test.csv", 60, 1)
    checkpoint = tmp_path / "mlp.safetensors"
    reports = ember.train(model=spec, data=str(tmp_path / "train.csv"), test_data=tmp_path / "test.csv", standardize=True,
                          epochs=5, batch_size=30, lr=1e-2, threads=1, save=str(checkpoint))
    assert reports[-1]["test_accuracy"] >= 0.95
    session = ember.Session(str(checkpoint))
    assert session.class_names == ["setosa", "versicolor", "virginica"]
    assert session.input_shape == (4,) and session.output_shape == (3,)


def test_list_options_take_lists_or_comma_separated_text(tmp_path):
    first, second = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    common = dict(model="seed-cnn", data="fashion-mnist", max_steps=2, train_limit=64, test_limit=32, threads=1)
    ember.train(**common, save=str(first))
    ember.train(**common, init=str(first), freeze="conv1,fc1", mean=[0.286], std=(0.353,), save=str(second))
    frozen = ember.Session(str(second)).run_settings["freeze"]
    assert frozen == ["conv1", "fc1"]
    with pytest.raises(TypeError, match="freeze: expected a list of str, found int"):
        ember.train(freeze=[1])
    with pytest.raises(TypeError, match="mean: expected a number, found str"):
        ember.train(mean=["0.5"])
    with pytest.raises(ValueError, match="resize: expected two positive sizes"):
        ember.train(resize=(28,))
    with pytest.raises(ember.Error, match="convert must be rgb or grey"):
        ember.train(convert="sepia", max_steps=1, train_limit=16, test_limit=16)


def test_weight_decay_none_is_the_optimizers_default_and_zero_is_zero(tmp_path):
    common = dict(model="seed-cnn", data="fashion-mnist", optimizer="adamw", max_steps=1, train_limit=32, test_limit=16,
                  threads=1)
    default, zero = tmp_path / "default.safetensors", tmp_path / "zero.safetensors"
    ember.train(**common, weight_decay=None, save=str(default))
    ember.train(**common, weight_decay=0, save=str(zero))

    def decay(path):
        import json, struct
        data = path.read_bytes()
        header = json.loads(data[8:8 + struct.unpack("<Q", data[:8])[0]])
        return json.loads(header["__metadata__"]["optimizer"])["weight_decay"]

    assert decay(default) == pytest.approx(0.01) and decay(zero) == 0.0
