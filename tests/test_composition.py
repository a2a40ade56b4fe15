"""pipelab.composition: compositions that share their defaults lists and merges give Hydra's own configs."""

from __future__ import annotations

import shutil

import pytest
from conftest import ROOT
from hydra import initialize_config_dir
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import ConfigCompositionException
from hydra.types import RunMode
from omegaconf import OmegaConf

from pipelab import dag
from pipelab.composition import shared_compositions
from pipelab.config import register_schema


@pytest.fixture
def hydra_of(request):
    """Hydra's own composer over a conf/ folder, as `stages/run.py` sets it up."""
    register_schema()

    def start(conf):
        GlobalHydra.instance().clear()
        context = initialize_config_dir(config_dir=str(conf), version_base="1.3")
        context.__enter__()
        request.addfinalizer(lambda: context.__exit__(None, None, None))
        return GlobalHydra.instance().hydra

    return start


def test_every_config_of_the_tiny_grid_is_the_one_hydra_composes_alone(hydra_of, monkeypatch):
    """Each sweep's own config (MULTIRUN) and each job's (RUN), with and without shared work, as YAML."""
    params = dag.load_params(ROOT / "params.yaml", ROOT, profile="tiny")
    sweeps = [sweep for task in params.tasks for sweep in dag.task_sweeps(params, task)]
    jobs = [point for sweep in sweeps for point in dag.sweep_points(ROOT, sweep)]  # (composes with its own Hydra)
    sweeps = [sweep.overrides for sweep in sweeps]
    assert len(jobs) > len(sweeps) > 20
    hydra = hydra_of(ROOT / "conf")

    def composed() -> list[str]:
        configs = [hydra.compose_config("config", list(o), run_mode=RunMode.MULTIRUN) for o in sweeps]
        configs += [hydra.compose_config("config", list(o), run_mode=RunMode.RUN) for o in jobs]
        return [OmegaConf.to_yaml(c) for c in configs]

    merges = []
    real = ConfigLoaderImpl._compose_config_from_defaults_list
    monkeypatch.setattr(
        ConfigLoaderImpl, "_compose_config_from_defaults_list", lambda *a, **k: merges.append(1) or real(*a, **k)
    )
    alone = composed()
    assert len(merges) == len(sweeps) + len(jobs)
    merges.clear()
    with shared_compositions():
        shared = composed()
    assert shared == alone
    # Shared: the merges of the same group choices (a sweep's own config and its jobs over values, the course
    # sweep and an ablation's default point), about half of them in this grid
    assert len(merges) < 0.6 * (len(sweeps) + len(jobs))


def test_a_job_takes_its_own_copy_and_its_own_value_overrides(hydra_of):
    hydra = hydra_of(ROOT / "conf")
    with shared_compositions():
        first = hydra.compose_config("config", ["task=fill-mask", "profile=tiny", "seed=1"], run_mode=RunMode.RUN)
        first.task.name = "changed after composing"
        second = hydra.compose_config("config", ["task=fill-mask", "profile=tiny", "seed=2"], run_mode=RunMode.RUN)
    assert (second.seed, second.task.name) == (2, "fill-mask")
    assert list(second.hydra.overrides.task) == ["task=fill-mask", "profile=tiny", "seed=2"]


def test_the_shared_work_lasts_for_its_block_only(hydra_of, tmp_path):
    """An edit of conf/ between two commands is seen: nothing composed is kept after the block."""
    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "conf", conf)
    hydra = hydra_of(conf)
    overrides = ["task=fill-mask", "profile=tiny"]
    with shared_compositions():
        before = hydra.compose_config("config", overrides, run_mode=RunMode.RUN)
    task_file = conf / "task" / "fill-mask.yaml"
    task_file.write_text(task_file.read_text().replace("top_k: 5", "top_k: 7"))
    with shared_compositions():
        after = hydra.compose_config("config", overrides, run_mode=RunMode.RUN)
    assert (before.task.call.top_k, after.task.call.top_k) == (5, 7)


def test_a_group_left_missing_is_skipped_by_a_sweep_and_required_of_a_job_as_hydra_does(hydra_of, tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "conf", conf)
    primary = conf / "config.yaml"
    primary.write_text(primary.read_text().replace("- decoding: null ", "- decoding: ???  "))
    hydra = hydra_of(conf)
    sweep = ["task=text-generation", "profile=tiny", "decoding=greedy,sample"]

    def composed() -> tuple[str, str]:
        own = hydra.compose_config("config", sweep, run_mode=RunMode.MULTIRUN)  # skips the '???' group
        job = hydra.compose_config("config", [*sweep[:2], "decoding=sample"], run_mode=RunMode.RUN)
        with pytest.raises(ConfigCompositionException, match="You must specify 'decoding'"):
            hydra.compose_config("config", sweep[:2], run_mode=RunMode.RUN)
        return OmegaConf.to_yaml(own), OmegaConf.to_yaml(job)

    alone = composed()
    with shared_compositions():
        assert composed() == alone


def test_a_bad_choice_gets_hydras_own_error_inside_the_block(hydra_of):
    hydra = hydra_of(ROOT / "conf")
    with shared_compositions(), pytest.raises(ConfigCompositionException, match="no_such_model"):
        hydra.compose_config("config", ["task=fill-mask", "model=no_such_model"], run_mode=RunMode.RUN)
