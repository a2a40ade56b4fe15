"""Hydra compositions that share their work: the jobs of a sweep over values compose their configs once.

Hydra 1.3 composes a config in three steps: the defaults list, from the config-group choices (``model=``,
``ablation=``, ...); the merge of the configs that list names; then the value overrides (``bench.batch_size=8``)
applied to the merged config, with the ``hydra.*`` bookkeeping. The first two steps read only the group choices,
so the five jobs of ``ablation=batch_size`` repeat them five times: ~70% of a ~0.25 s composition.

Inside :func:`shared_compositions`, the two steps are remembered by what they read: the defaults list by the
config sources, the primary config name and every override that is not a value override (Hydra's own
``Overrides`` sorts them; sweep overrides are left out, as Hydra leaves them out), and the merged config by that
defaults list. A composition that finds them takes the defaults list with its own value overrides and its own
deep copy of the merged config, and Hydra does the rest as always; one that does not composes as Hydra does.
A sweep's own config, composed in the sweep's process before its jobs, is one of them, so the jobs that choose
no other group, composed on every core, find both steps done. The configs come out the same (a test compares
every sweep's and job's config of the tiny grid).

The memory lasts for one block only (one command of `stages/run.py`, one fetch plan): conf/ and the structured
configs do not change inside it. A process forked inside the block (the sweeper's composers) starts with what
the block has composed so far. It patches two private functions of hydra-core 1.3.8, which is pinned.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_active: dict[str, dict[Any, Any]] | None = None


@contextmanager
def shared_compositions() -> Iterator[None]:
    """Compositions in this block share the defaults lists and merged configs of their config-group choices."""
    global _active
    if _active is not None:  # nested: the outer block's memory serves
        yield
        return
    from hydra._internal import config_loader_impl

    loader = config_loader_impl.ConfigLoaderImpl
    own_defaults, own_merge = config_loader_impl.create_defaults_list, loader._compose_config_from_defaults_list
    _active = {"defaults": {}, "merged": {}}
    memory = _active

    def create_defaults_list(
        repo: Any, config_name: str | None, overrides_list: list[Any], prepend_hydra: bool, skip_missing: bool
    ) -> Any:
        from hydra._internal.defaults_list import Overrides

        def compose(skip: bool) -> Any:
            return own_defaults(
                repo=repo,
                config_name=config_name,
                overrides_list=overrides_list,
                prepend_hydra=prepend_hydra,
                skip_missing=skip,
            )

        try:
            values = Overrides(repo=repo, overrides_list=overrides_list).config_overrides
        except Exception:  # noqa: BLE001 (Hydra's own call below raises its own error for this list)
            return compose(skip_missing)
        value_ids = {id(o) for o in values}
        choices = tuple(o.input_line for o in overrides_list if id(o) not in value_ids and not o.is_sweep_override())
        key = (_sources(repo), config_name, choices, prepend_hydra)
        found = memory["defaults"].get(key)
        if found is None:
            # Composed as a job is (skip_missing=False) even for a sweep's own config (True: skip a group left
            # '???'): Hydra reads the flag only at a '???', and where none is met both give the same list, so
            # the sweep's list serves its jobs. With a '???', the sweep's own call does as Hydra does, unshared.
            try:
                found = compose(False)
            except Exception:
                if not skip_missing:
                    raise
                return compose(True)
            memory["defaults"][key] = found
            return found
        return dataclasses.replace(found, config_overrides=values)

    def compose_config_from_defaults_list(self: Any, defaults: list[Any], repo: Any) -> Any:
        key = (
            _sources(repo),
            tuple((d.config_path, d.parent, d.package, d.is_self, d.primary, d.override_key) for d in defaults),
        )
        if key not in memory["merged"]:
            memory["merged"][key] = own_merge(self, defaults, repo)
        return copy.deepcopy(memory["merged"][key])

    config_loader_impl.create_defaults_list = create_defaults_list
    loader._compose_config_from_defaults_list = compose_config_from_defaults_list  # type: ignore[method-assign]
    try:
        yield
    finally:
        config_loader_impl.create_defaults_list = own_defaults
        loader._compose_config_from_defaults_list = own_merge  # type: ignore[method-assign]
        _active = None


def _sources(repo: Any) -> tuple[tuple[str, str, str], ...]:
    return tuple((s.scheme(), s.path, s.provider) for s in repo.get_sources())
