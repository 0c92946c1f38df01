from pathlib import Path

import pytest
import yaml

from tks.config import Config, ConfigError, dump_config, load_config, to_dict, upgrade_stored

CONFIG_DIR = Path(__file__).parents[1] / "configs"
CONFIGS = sorted(CONFIG_DIR.rglob("*.yaml"))


def test_configs_folder_is_not_empty():
    assert CONFIGS, "configs/*.yaml missing"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.relative_to(CONFIG_DIR).as_posix())
def test_every_config_file_loads_and_round_trips(path):
    cfg = load_config(path)
    assert isinstance(cfg, Config)
    assert yaml.safe_load(dump_config(cfg)) == to_dict(cfg)


def test_digits_yaml_is_the_default_config():
    assert load_config(Path(__file__).parents[1] / "configs" / "digits.yaml") == Config() == load_config(None)


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_unknown_key_suggests_closest(tmp_path):
    with pytest.raises(
        ConfigError, match=r"unknown config key 'loss.tks.temprature' \(did you mean 'loss.tks.temperature'\?\)"
    ):
        load_config(write(tmp_path, "loss:\n  tks:\n    temprature: 3\n"))
    with pytest.raises(ConfigError, match="unknown config key 'optimizer'.*did you mean 'optim'"):
        load_config(write(tmp_path, "optimizer: {lr: 1}\n"))
    with pytest.raises(
        ConfigError, match=r"'loss.strong_weak.temprature' \(did you mean 'loss.strong_weak.temperature'"
    ):
        load_config(write(tmp_path, "loss:\n  strong_weak: {temprature: 3}\n"))


def test_values_are_coerced_to_declared_types(tmp_path):
    cfg = load_config(write(tmp_path, "optim:\n  lr: 1e-3\n  epochs: 3.0\nloss:\n  tks: {temperature: 5}\n"))
    assert cfg.optim.lr == 0.001 and isinstance(cfg.optim.lr, float)  # PyYAML reads "1e-3" as a string
    assert cfg.optim.epochs == 3 and isinstance(cfg.optim.epochs, int)
    assert cfg.loss.tks.temperature == 5.0 and isinstance(cfg.loss.tks.temperature, float)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("optim: {epochs: 2.5}", "optim.epochs must be int"),
        ("optim: {lr: fast}", "optim.lr must be float"),
        ("model: {neuron: {detach_reset: 1}}", "model.neuron.detach_reset must be bool"),
        ("data: {num_steps: 0}", r"data.num_steps \(T\) must be >= 1"),
        ("loss: {tks: {alpha: 1.5}}", r"loss.tks.alpha must be in \[0, 1\]"),
        ("model: {options: [1, 2]}", "model.options must be a mapping of names to values"),
        ("loss: {tks: {temperature: 0}}", "loss.tks.temperature must be finite and > 0"),
        ("loss: {tks: {temperature: .inf}}", "loss.tks.temperature must be a finite number, got inf"),
        ("loss: {ls: {smoothing: 1.0}}", r"loss.ls.smoothing must be in \[0, 1\)"),
        ("loss: {tet: {lamb: 2}}", r"loss.tet.lamb must be in \[0, 1\]"),
        ("loss: {strong_weak: {direction: up}}", "loss.strong_weak.direction must be one of"),
        ("loss: {strong_weak: {temperature: -1}}", "loss.strong_weak.temperature must be finite and > 0"),
        ("loss: {strong_weak: {weight: -0.5}}", "loss.strong_weak.weight must be finite and >= 0"),
        ("loss: {strong_weak: {weight: .nan}}", "loss.strong_weak.weight must be a finite number, got nan"),
        ("loss: {tks: {teacher_source: labels}}", "loss.tks.teacher_source must be one of.*did you mean 'label'"),
        ("loss: {temperature: 5}", r"unknown config key 'loss.temperature' \(it is now 'loss.tks.temperature'\)"),
        ("model: {neuron: {tau: 1.0}}", "tau must be > 1"),
        ("optim: {epochs: 3, warmup_epochs: 4}", "warmup_epochs must be in"),
        ("run: {device: tpu}", "run.device must be"),
        ("data: {val_size: -5}", "data.val_size must be >= 1 or null"),
        ("data: {train_eval_size: 0}", "data.train_eval_size must be >= 1 or null"),
        ("run: {select_on: train}", "run.select_on must be one of"),
        ("data: 5", "data must be a mapping"),
        ("- a\n- b", "must hold a mapping"),
        ("loss: {alpha: [0.1", "not valid YAML"),
    ],
)
def test_invalid_values_are_one_clear_error(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text))


def test_overrides():
    cfg = load_config(
        None,
        [
            "loss.tks.temperature=5",
            "data.num_steps=2",
            "model.neuron.engine=spikingjelly",
            "data.root=/data",
            "optim.lr=2e-4",
            "loss.strong_weak.direction=strong2weak",
        ],
    )
    assert cfg.loss.strong_weak.direction == "strong2weak" and cfg.loss.strong_weak.temperature == 2.0
    assert cfg.loss.tks.temperature == 5.0 and cfg.data.num_steps == 2 and cfg.model.neuron.engine == "spikingjelly"
    assert cfg.data.root == "/data" and cfg.optim.lr == 2e-4
    assert load_config(None, ["data.root="]).data.root is None
    with pytest.raises(ConfigError, match="must look like section.key=value"):
        load_config(None, ["loss.tks.temperature"])
    with pytest.raises(ConfigError, match="unknown config key 'loss.alfa'"):
        load_config(None, ["loss.alfa=0.3"])


def test_missing_file():
    with pytest.raises(ConfigError, match="config file not found: nowhere.yaml"):
        load_config("nowhere.yaml")


def test_config_is_frozen():
    cfg = Config()
    with pytest.raises(AttributeError):
        cfg.loss.tks.alpha = 0.3


def test_selection_set_defaults_to_the_validation_split_when_there_is_one():
    assert Config().select_on == "test"  # no split: the official choice, as before
    assert load_config(None, ["data.val_size=100"]).select_on == "val"
    assert load_config(None, ["data.val_size=100", "run.select_on=test"]).select_on == "test"
    assert load_config(None, ["data.val_size=100", "run.select_on=val"]).select_on == "val"


def test_selecting_on_val_without_a_split_is_a_clear_error():
    with pytest.raises(ConfigError) as caught:
        load_config(None, ["run.select_on=val"])
    message = str(caught.value)
    assert "run.select_on: val needs a validation split" in message
    assert "data.val_size" in message and "run.select_on: test" in message


def test_configs_stored_by_tks_0_1_are_read_in_the_new_layout(tmp_path):
    flat = "loss:\n  name: tet\n  temperature: 5\n  alpha: 0.3\n  smoothing: 0.2\n  tks_smoothing: 0.1\n"
    flat += "  tet_lambda: 0.5\n"
    path = write(tmp_path, flat)
    with pytest.raises(ConfigError, match="it is now 'loss.tks.temperature'"):
        load_config(path)  # a file a user writes must use the new keys
    cfg = load_config(path, stored=True).loss  # a run's config.yaml records what ran: read it as it was meant
    assert (cfg.name, cfg.tks.temperature, cfg.tks.alpha, cfg.tks.smoothing) == ("tet", 5.0, 0.3, 0.1)
    assert (cfg.ls.smoothing, cfg.tet.lamb, cfg.tet.phi) == (0.2, 0.5, 1.0)
    assert upgrade_stored({"loss": {"tks": {"alpha": 0.1}, "alpha": 0.9}})["loss"] == {"tks": {"alpha": 0.1}}


def test_convergence_study_configs_differ_only_in_the_loss_and_run_name():
    base = to_dict(load_config(CONFIG_DIR / "studies" / "converge_ce.yaml"))
    assert base["data"]["val_size"] == 5000 and base["data"]["num_steps"] == 4 and base["loss"]["name"] == "ce"
    for loss in ("tks", "ls", "tet"):
        other = to_dict(load_config(CONFIG_DIR / "studies" / f"converge_{loss}.yaml"))
        assert other["loss"]["name"] == loss and other["run"]["name"] == f"converge-{loss}"
        assert {k: v for k, v in other.items() if k not in ("loss", "run")} == {
            k: v for k, v in base.items() if k not in ("loss", "run")
        }
        assert {k: v for k, v in other["run"].items() if k != "name"} == {
            k: v for k, v in base["run"].items() if k != "name"
        }
