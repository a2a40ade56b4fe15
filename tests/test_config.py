"""Every config file composes; the schema and validate_config reject bad values with the valid choices."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from pipelab.config import ConfigError, group_choices, models_for_task, validate_config
from pipelab.run_record import config_yaml
from pipelab.tasks import TASK_NAMES

ROOT = Path(__file__).resolve().parents[1]
CONF = str(ROOT / "conf")


def compose_cfg(overrides: list[str], *, with_hydra: bool = False):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=with_hydra)


def test_every_task_config_has_its_module_and_every_module_its_config():
    """conf/task/<name>.yaml and the task module declaring `name` come in pairs: the registry is the task list."""
    assert sorted(group_choices(ROOT, "task")) == sorted(TASK_NAMES)
    for task in TASK_NAMES:
        assert OmegaConf.load(ROOT / "conf" / "task" / f"{task}.yaml").name == task


@pytest.mark.parametrize("task", TASK_NAMES)
def test_every_task_composes_and_its_default_model_can_do_it(task):
    cfg = compose_cfg([f"task={task}", "profile=tiny"])
    validate_config(cfg, ROOT)
    assert cfg.task.name == task
    assert cfg.task.default_model in models_for_task(ROOT, task)
    assert cfg.task.bench_case in [c.id for c in cfg.task.cases]
    for expectation in cfg.task.expectations:
        assert expectation.case in [c.id for c in cfg.task.cases]


@pytest.mark.parametrize("task", TASK_NAMES)
def test_a_runs_config_yaml_is_what_omegaconf_writes_for_it(task):
    """The config.yaml artifact (pipelab.run_record.config_yaml, libyaml's emitter) equals OmegaConf.to_yaml."""
    config = OmegaConf.to_container(compose_cfg([f"task={task}", "profile=tiny"]), resolve=True)
    assert config_yaml(config) == OmegaConf.to_yaml(OmegaConf.create(config))
    awkward = ["true", "no", "null", "~", "1.5", "1e3", "0x1f", "", " x ", "a: b", "- c", "#d", "é 中 😀", "l\nm\r"]
    config["input"] = {f"k{i}": [text, {text or "e": text}] for i, text in enumerate(awkward)}
    assert yaml.safe_load(config_yaml(config)) == config  # strings that read as something else stay strings


@pytest.mark.parametrize("model", [m for m in group_choices(ROOT, "model") if m != "auto"])
def test_every_model_composes_with_each_of_its_tasks_and_is_pinned(model):
    raw = OmegaConf.load(ROOT / "conf" / "model" / f"{model}.yaml")
    if raw.get("path"):  # local files: pinned by their content, the same weights on every profile
        assert "revision" not in raw and "tiny" not in raw, "a model with `path` has no Hub pin and no stand-in"
    else:
        assert len(str(raw.revision)) == 40 and int(str(raw.revision), 16) >= 0, "pin a full commit sha"
        assert raw.tiny.family, "every Hub model needs a tiny stand-in"
    for task in raw.tasks:
        cfg = compose_cfg([f"task={task}", f"model={model}"])
        validate_config(cfg, ROOT)
        assert cfg.model.hub_id == raw.hub_id


@pytest.mark.parametrize("group", ["device", "profile", "ablation", "decoding", "experiment"])
def test_every_option_of_every_group_composes(group):
    for option in group_choices(ROOT, group):
        overrides = [f"{group}={option}"]
        cfg = compose_cfg(overrides)
        if group == "ablation" and cfg.ablation.tasks:
            assert cfg.task.name in cfg.ablation.tasks  # an ablation brings its task along
        if group == "decoding":
            cfg = compose_cfg([*overrides, "task=text-generation"])
        validate_config(cfg, ROOT)


def test_every_ablation_declares_its_sweep_and_axes():
    for name in group_choices(ROOT, "ablation"):
        cfg = compose_cfg([f"ablation={name}"], with_hydra=True)
        if name == "none":
            continue
        assert cfg.ablation.axes, name
        assert cfg.hydra.sweeper.params, f"ablation {name} sweeps nothing"
        for axis in cfg.ablation.axes:
            assert OmegaConf.select(cfg, axis, default="__missing__") != "__missing__", f"{name}: axis {axis}"


def test_typo_in_a_key_fails_at_compose_time():
    with pytest.raises(ConfigCompositionException, match="tempreature"):
        compose_cfg(["tempreature=0.5"])


def test_non_number_temperature_fails_at_compose_time():
    with pytest.raises(ConfigCompositionException, match="temperature"):
        compose_cfg(["temperature=hot"])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["temperature=0"], "temperature must be > 0"),
        (["temperature=-1.5"], "temperature must be > 0"),
        (["task=text-generation", "task.generation.top_k=0"], "top_k must be > 0"),
        (["task=fill-mask", "task.call.top_k=0"], "top_k must be > 0"),
        (["bench.batch_size=0"], "batch_size must be > 0"),
        (["task=fill-mask", "model=gpt2"], "Models for fill-mask: bert-base-cased, distilroberta-base"),
        (["task=ner", "ablation=temperature"], "ablation 'temperature' applies to text-generation"),
        (["task=text-generation", "decoding=greedy", "task.generation.num_return_sequences=3"], "needs sampling"),
    ],
)
def test_bad_values_are_rejected_with_what_would_be_valid(overrides, message):
    cfg = compose_cfg(overrides)
    with pytest.raises(ConfigError, match=message):
        validate_config(cfg, ROOT)


def test_unknown_group_option_lists_the_available_ones():
    with pytest.raises(ConfigCompositionException) as info:
        compose_cfg(["task=sentiment"])
    assert "text-classification" in str(info.value.__cause__ or info.value)


def test_the_library_imports_without_hydra():
    """Every pipelab module but the Hydra callback (pipelab.sweep) imports with Hydra made unimportable."""
    code = """
import importlib, pkgutil, sys
class NoHydra:
    def find_spec(self, name, path=None, target=None):
        if name == "hydra" or name.startswith("hydra."):
            raise ImportError(f"{name} imported at module level")
sys.meta_path.insert(0, NoHydra())
import pipelab
for module in pkgutil.walk_packages(pipelab.__path__, "pipelab."):
    if module.name != "pipelab.sweep":
        importlib.import_module(module.name)
print("imported", len(sys.modules))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "imported" in done.stdout, done.stderr[-3000:]
