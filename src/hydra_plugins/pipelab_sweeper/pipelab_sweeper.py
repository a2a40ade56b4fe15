"""Hydra's basic sweeper, with each job's config composed once instead of twice, on every core.

Hydra's ``BasicSweeper`` composes every job's config to check the batch before launching any of it, and its
launcher then composes each job again to run it. A composition of pipelab's config takes ~0.2 s, which is
most of what a tiny job costs (a DVC stage of 16 jobs spent 10 s of its 18 in composing). This sweeper composes
the batch's configs to check them in one forked process per core (nothing is timed yet; :func:`fork_map`
composes here, one by one, when another thread runs, e.g. the terminal's status line), keeps them (up to ``KEEP``)
and its launcher takes them instead of composing again; a launcher that runs its jobs in other processes
(joblib, submitit, Ray) composes there as before, since the kept configs are not sent along. Everything else is
the basic sweeper's: the same expansion of the command line and of ``hydra.sweeper.params``, the same job
order, the same configs, an illegal job still stopping the sweep with Hydra's own error before any job runs.

Hydra instantiates sweepers from the ``hydra_plugins`` package only, hence this module's place; Hydra also
imports it outside sys.modules to scan it, which postponed annotations (`from __future__`) would break in a dataclass.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper, BasicSweeperConf
from hydra.core.config_store import ConfigStore
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from pipelab.forked import fork_map

# Configs kept between the check and the launch: a batch larger than this composes its later jobs twice, as the
# basic sweeper does, rather than hold them all (one composed config is ~0.4 MB of OmegaConf nodes).
KEEP = 256


@dataclass
class PipelabSweeperConf(BasicSweeperConf):
    _target_: str = "hydra_plugins.pipelab_sweeper.pipelab_sweeper.PipelabSweeper"


ConfigStore.instance().store(group="hydra/sweeper", name="pipelab", node=PipelabSweeperConf, provider="pipelab")


class ComposedOnce:
    """The sweep's config loader, handing out once each job config composed ahead by :meth:`compose_ahead`.

    Every other call goes to Hydra's own loader. Pickled (for a launcher's worker processes) without the kept
    configs.
    """

    def __init__(self, loader: Any, keep: int = KEEP) -> None:
        self._loader = loader
        self._keep = keep
        self._kept: dict[tuple[int, tuple[str, ...]], DictConfig] = {}
        self.composed = 0  # compositions done through this loader (the sweep's jobs), for tests and benchmarks

    def compose_ahead(self, master_config: DictConfig, batch: Sequence[Sequence[str]]) -> None:
        """Compose each job's config of `batch`, on every core, and keep them for their launch (up to `keep`).

        A job that does not compose is composed again here, in order, so that Hydra's own exception and message
        stop the sweep, as the basic sweeper's check does.
        """
        global _ahead
        _ahead = (self._loader, master_config)
        try:
            composed = fork_map(_compose_job, [list(overrides) for overrides in batch])
        finally:
            _ahead = None
        for overrides, config in zip(batch, composed, strict=True):
            if config is None:
                config = self._compose(master_config, overrides)  # raises
            else:
                self.composed += 1
            if len(self._kept) < self._keep:
                self._kept[(id(master_config), tuple(overrides))] = config

    def load_sweep_config(self, master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        kept = self._kept.pop((id(master_config), tuple(sweep_overrides)), None)
        return kept if kept is not None else self._compose(master_config, sweep_overrides)

    def _compose(self, master_config: DictConfig, overrides: Sequence[str]) -> DictConfig:
        self.composed += 1
        return self._loader.load_sweep_config(master_config, list(overrides))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # not set yet (unpickling): never ask the loader for this object's own fields
            raise AttributeError(name)
        return getattr(self._loader, name)

    def __getstate__(self) -> dict[str, Any]:
        return {"_loader": self._loader, "_keep": self._keep, "_kept": {}, "composed": 0}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


# What the forked composers read: the loader and the sweep's config, set around a fork_map (a fork inherits them).
_ahead: tuple[Any, DictConfig] | None = None


def _compose_job(overrides: list[str]) -> DictConfig | None:
    """One job's config, composed by the sweep's loader (what Hydra's check does), or None if it raised."""
    assert _ahead is not None
    loader, master_config = _ahead
    try:
        return loader.load_sweep_config(master_config, overrides)
    except Exception:  # noqa: BLE001 (composed again by the sweep's process, which raises Hydra's error there)
        return None


class PipelabSweeper(BasicSweeper):
    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.loader = ComposedOnce(hydra_context.config_loader)
        context = HydraContext(config_loader=self.loader, callbacks=hydra_context.callbacks)  # type: ignore[arg-type]
        super().setup(hydra_context=context, task_function=task_function, config=config)

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        assert self.config is not None
        self.loader.compose_ahead(self.config, batch)
