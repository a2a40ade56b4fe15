"""Run one pipelab job, or a sweep with -m:

    python stages/run.py task=fill-mask profile=tiny
    python stages/run.py -m task=text-generation temperature=0.7,1.0,1.5

Thin on purpose: Hydra composes conf/, pipelab.runner does the work.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("PIPELAB_ROOT", str(ROOT))

if __name__ == "__main__":
    from pipelab.warm import run_warm

    # This command again, in a process forked from a server that imported torch, transformers and MLflow once
    # (pipelab.warm): the next command within a minute starts at once. PIPELAB_WARM=off runs it here.
    _code = run_warm(ROOT)
    if _code is not None:
        sys.exit(_code)

import hydra  # noqa: E402  (after the warm path: a command that forks imports nothing more, ~0.3 s less)
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from hydra.types import RunMode  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from pipelab.composition import shared_compositions  # noqa: E402
from pipelab.config import register_schema  # noqa: E402
from pipelab.errors import USER_ERRORS  # noqa: E402

register_schema()


def _multirun_without_a_mode_composition() -> None:
    """With -m, skip the composition Hydra does only to read `hydra.mode` (~0.2 s of every sweep, ~6 s of the DAG).

    Hydra 1.3 composes the whole config once more before a run or a sweep (`Hydra.get_mode`) to learn whether
    the config sets `hydra.mode`. With -m the answer cannot change what runs: None or MULTIRUN both give a
    multirun with `hydra.mode=MULTIRUN` among the overrides (RUN would too, after a warning), and conf/ sets no
    `hydra.mode` (a test checks), so the sweep's configs are the same. Without -m, Hydra asks as before.
    """
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import get_args_parser

    asks = Hydra.get_mode
    if getattr(asks, "multirun_answered", False):  # already in place (stages/sweep_task.py runs this per sweep)
        return

    def get_mode(self: Hydra, config_name: str | None, overrides: list[str]) -> RunMode | None:
        if get_args_parser().parse_known_args()[0].multirun:  # sys.argv, as hydra.main parsed it
            return None
        return asks(self, config_name, overrides)

    get_mode.multirun_answered = True  # type: ignore[attr-defined]
    Hydra.get_mode = get_mode  # type: ignore[method-assign]


_multirun_without_a_mode_composition()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> str:
    from pipelab.runner import run_job

    try:
        return run_job(cfg, ROOT).status
    except USER_ERRORS as exc:
        print(f"pipelab: error: {exc}", file=sys.stderr, flush=True)
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # this job fails; Hydra runs the others, then exits non-zero
        sys.exit(2)


if __name__ == "__main__":
    with shared_compositions():  # a sweep's jobs that differ in values only compose once (pipelab.composition)
        main()
