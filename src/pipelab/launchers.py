"""Hydra launchers beyond one process: pipelab's defaults on each plugin's schema, what a launcher needs before a
sweep starts, and where a job's own log is.

``conf/hydra/launcher/<name>.yaml`` holds pipelab's defaults for the plugin launcher of the same name
(``hydra/launcher=submitit_slurm``, ``submitit_local``, ``ray``). A file there and the plugin's structured config
of the same name collide: Hydra 1.3 merges them with a deprecation warning ("automatic schema matching", to be
removed). So :func:`register_launcher_schemas` moves each such plugin schema to ``launcher_schema/<name>`` and the
file extends it (``- /launcher_schema/<name>@_here_``): every key of the plugin stays typed and overridable as
``hydra.launcher.<key>=...``, pipelab's defaults need no ``+`` anywhere, and nothing warns. A launcher whose plugin
is not installed gets a stand-in, so the config still composes and a sweep stops with a message naming the extra.
Jobs that compose again in another process (submitit) get this ConfigStore with Hydra's singleton state.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from pipelab.config import ConfigError

SCHEMA_GROUP = "launcher_schema"
_MISSING = f"{__name__}.MissingLauncher"

# Commands a launcher runs on the machine that starts the sweep (its `_target_` -> the commands).
_COMMANDS = {
    "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher": ("sbatch", "srun"),
}


def register_launcher_schemas(conf_dir: Path) -> None:
    """Move the plugin schema of each ``conf/hydra/launcher/<name>.yaml`` to ``launcher_schema/<name>`` (idempotent)."""
    from hydra.core.config_store import ConfigStore
    from hydra.core.plugins import Plugins

    Plugins.instance()  # imports every installed hydra_plugins module, which fills ConfigStore with its launchers
    store = ConfigStore.instance()
    plugin_launchers = store.repo.get("hydra", {}).get("launcher", {})
    for path in sorted((conf_dir / "hydra" / "launcher").glob("*.yaml")):
        name = path.stem
        plugin = plugin_launchers.pop(f"{name}.yaml", None)
        if plugin is not None:
            store.store(group=SCHEMA_GROUP, name=name, node=plugin.node, provider=plugin.provider)
        elif f"{name}.yaml" not in store.repo.get(SCHEMA_GROUP, {}):  # not moved by an earlier call
            stand_in = {"_target_": _MISSING, "launcher": name}
            store.store(group=SCHEMA_GROUP, name=name, node=stand_in, provider="pipelab")


def launcher_name(config: Any) -> str:
    """The `hydra/launcher` choice of a composed config (``basic`` when none was chosen)."""
    return str(config.hydra.runtime.choices.get("hydra/launcher") or "basic")


def check_launcher(config: Any) -> None:
    """Fail before a sweep opens anything when its launcher cannot run here, saying what to do instead."""
    name = launcher_name(config)
    target = str(config.hydra.launcher.get("_target_", ""))
    if target == _MISSING:
        raise ConfigError(missing_plugin_message(name))
    missing = [c for c in _COMMANDS.get(target, ()) if shutil.which(c) is None]
    if missing:
        raise ConfigError(
            f"hydra/launcher={name} hands each job to SLURM, but {' and '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not on this machine's PATH. Start the sweep on a SLURM "
            "login node (where sbatch and srun work), or try the same sweep on this machine with "
            "hydra/launcher=submitit_local"
        )


def missing_plugin_message(name: str) -> str:
    return (
        f"hydra/launcher={name} needs its Hydra launcher plugin, which is not installed: "
        f"pip install -e '.[{name}]' (pipelab's `{name}` extra)"
    )


class MissingLauncher:
    """The stand-in for a launcher whose plugin is not installed: instantiating it raises the install command."""

    def __init__(self, launcher: str, **_: Any) -> None:
        raise ConfigError(missing_plugin_message(launcher))


def job_log() -> str | None:
    """Where this job's stdout goes when a launcher sends it to a file instead of the sweep's terminal."""
    if os.environ.get("SUBMITIT_EXECUTOR"):  # set by submitit in every job it starts, local or SLURM
        import submitit

        return str(submitit.JobEnvironment().paths.stdout)
    return None
