"""hydra/sweeper=pipelab (the default): Hydra's basic sweeper, with each job's config composed once."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

import pytest
from conftest import ROOT
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.types import RunMode
from omegaconf import OmegaConf

from hydra_plugins.pipelab_sweeper.pipelab_sweeper import ComposedOnce

# stages/run.py as a shell runs it, with Hydra's own loader counting the job configs it composes.
COUNTING_RUN = """
import os, runpy, sys
from hydra._internal.config_loader_impl import ConfigLoaderImpl
counts = os.environ["COUNTS"]  # a file: the sweeper composes its jobs in forked processes
def counting(real, kind):
    def counted(self, *args, **kwargs):
        with open(counts, "a") as f:
            f.write(f"{kind} {os.getpid()}\\n")
        return real(self, *args, **kwargs)
    return counted
ConfigLoaderImpl.load_sweep_config = counting(ConfigLoaderImpl.load_sweep_config, "job")
ConfigLoaderImpl.load_configuration = counting(ConfigLoaderImpl.load_configuration, "all")
# the merges Hydra itself does: those pipelab.composition did not share
merging = ConfigLoaderImpl._compose_config_from_defaults_list
ConfigLoaderImpl._compose_config_from_defaults_list = counting(merging, "merge")
sys.argv = [sys.argv[1], *sys.argv[2:]]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
finally:
    lines = [line.split() for line in open(counts)] if os.path.exists(counts) else []
    jobs = [pid for kind, pid in lines if kind == "job"]
    print(f"job configs composed: {len(jobs)}; configs composed in all: {sum(k == 'all' for k, _ in lines)}; "
          f"jobs composed in {len(set(jobs) - {str(os.getpid())})} other processes; "
          f"merges: {sum(k == 'merge' for k, _ in lines)}", flush=True)
"""


def sweep(tmp_path, data_dir, name: str, *overrides: str, flag: str = "-m") -> subprocess.CompletedProcess:
    args = [
        *([flag] if flag else []),
        "task=fill-mask",
        "profile=tiny",
        "tracking.enabled=false",
        "bench.warmup=0",
        "bench.min_iterations=1",
        "bench.min_duration_s=0",
        f"data_dir={data_dir}",
        f"results_dir={tmp_path / name / 'results'}",
        f"hydra.sweep.dir={tmp_path / name / 'multirun'}",
        *overrides,
    ]
    # PIPELAB_WARM=off: the counting patch must be in the process that composes
    env = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PATH": "/usr/bin:/bin", "PIPELAB_WARM": "off"}
    env["COUNTS"] = str(tmp_path / f"{name}-compositions.txt")
    return subprocess.run(
        [sys.executable, "-c", COUNTING_RUN, str(ROOT / "stages" / "run.py"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_a_sweep_composes_each_job_once_into_the_configs_of_hydras_basic_sweeper(tmp_path, shared_data_dir):
    ours = sweep(tmp_path, shared_data_dir, "pipelab", "seed=1,2,3")
    basic = sweep(tmp_path, shared_data_dir, "basic", "seed=1,2,3", "hydra/sweeper=basic")
    for result in (ours, basic):
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
        assert "3 jobs: 3 FINISHED" in result.stdout
    # Once per job, plus the sweep's own config; Hydra's mode composition is skipped under -m (stages/run.py);
    # the jobs' configs on every core (in one forked process per core, on a machine with more than one)
    others = min(3, len(os.sched_getaffinity(0))) if len(os.sched_getaffinity(0)) > 1 else 0
    assert f"job configs composed: 3; configs composed in all: 4; jobs composed in {others} other" in ours.stdout
    # Hydra's own sweeper: to check the batch, then to launch each job, all in the sweep's process
    assert "job configs composed: 6; configs composed in all: 7; jobs composed in 0 other" in basic.stdout
    for job in ("0", "1", "2"):
        configs = [
            OmegaConf.load(tmp_path / name / "multirun" / job / ".hydra" / "config.yaml")
            for name in ("pipelab", "basic")
        ]
        for config in configs:  # the same job config, but for the folder this test gave each sweep's records
            config.results_dir = None
        assert configs[0] == configs[1]
        assert configs[0].seed == int(job) + 1
        overrides = [
            (tmp_path / name / "multirun" / job / ".hydra" / "overrides.yaml").read_text()
            for name in ("pipelab", "basic")
        ]
        assert overrides[0].replace("/pipelab/", "/basic/") == overrides[1]
        # A multirun, with hydra.mode=MULTIRUN among the Hydra overrides once: what Hydra's get_mode gives
        hydra = OmegaConf.load(tmp_path / "pipelab" / "multirun" / job / ".hydra" / "hydra.yaml").hydra
        assert hydra.mode == "MULTIRUN" and list(hydra.overrides.hydra).count("hydra.mode=MULTIRUN") == 1


def test_a_sweep_over_values_merges_its_configs_once(tmp_path, shared_data_dir):
    result = sweep(tmp_path, shared_data_dir, "values", "seed=1,2,3")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "3 jobs: 3 FINISHED" in result.stdout
    # The sweep's own config merges once; its three jobs (composed on every core) take copies of that merge
    assert "; merges: 1" in result.stdout
    jobs = [OmegaConf.load(tmp_path / "values" / "multirun" / job / ".hydra" / "config.yaml") for job in "012"]
    assert [job.seed for job in jobs] == [1, 2, 3]


def test_no_config_sets_hydra_mode_so_a_multirun_need_not_compose_to_learn_it():
    """stages/run.py skips Hydra's mode composition under -m: exact only while no config file sets hydra.mode."""
    setting = [
        str(path.relative_to(ROOT))
        for path in sorted((ROOT / "conf").rglob("*.yaml"))
        if "mode" in ((OmegaConf.load(path) or {}).get("hydra") or {})
    ]
    assert setting == []


def test_hydra_mode_on_the_command_line_still_makes_a_multirun(tmp_path, shared_data_dir):
    # Without -m, Hydra composes to learn the mode, as before: hydra.mode=MULTIRUN sweeps
    result = sweep(tmp_path, shared_data_dir, "mode", "seed=1,2", "hydra.mode=MULTIRUN", flag="")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 jobs: 2 FINISHED" in result.stdout
    assert "configs composed in all: 4" in result.stdout  # the mode's, the sweep's, one per job


def test_a_job_that_does_not_compose_stops_the_sweep_before_any_job_runs(tmp_path, shared_data_dir):
    result = sweep(tmp_path, shared_data_dir, "bad", "seed=1,not_a_number")
    assert result.returncode != 0
    assert "not_a_number" in result.stderr and "seed" in result.stderr  # Hydra's message names the value and key
    assert not (tmp_path / "bad" / "results").exists()  # the first, legal job never ran
    assert not (tmp_path / "bad" / "multirun" / "0").exists()


@pytest.fixture
def loader_and_master():
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        hydra = GlobalHydra.instance().hydra
        assert hydra is not None
        master = hydra.compose_config("config", ["task=fill-mask", "profile=tiny"], run_mode=RunMode.MULTIRUN)
        yield hydra.config_loader, master


def test_a_kept_config_is_handed_out_once_and_never_pickled(loader_and_master):
    real, master = loader_and_master
    loader = ComposedOnce(real, keep=1)
    loader.compose_ahead(master, [["seed=7"], ["seed=8"]])  # the second beyond `keep`: checked, not kept
    assert loader.composed == 2
    # A launcher's worker process gets the loader without the kept config, and composes its job itself.
    worker = pickle.loads(pickle.dumps(loader))
    assert worker.load_sweep_config(master, ["seed=7"]).seed == 7 and worker.composed == 1
    # In this process the launch takes the kept config once; a second launch of the same job composes again.
    assert loader.load_sweep_config(master, ["seed=7"]).seed == 7 and loader.composed == 2
    assert loader.load_sweep_config(master, ["seed=8"]).seed == 8 and loader.composed == 3
    assert loader.load_sweep_config(master, ["seed=7"]).seed == 7 and loader.composed == 4
    assert loader.get_search_path() is real.get_search_path()  # everything else is Hydra's own loader
