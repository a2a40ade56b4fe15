"""The process-wide pipeline cache: one load per model, least recently used dropped beyond a count or budget."""

from __future__ import annotations

import pytest

from pipelab import pipeline_cache
from pipelab.dag import compose
from pipelab.models import pipeline_task, resolve_model
from pipelab.weights import resolve_weights

TASKS = ("fill-mask", "text-classification", "ner")


@pytest.fixture(scope="module")
def models(root, shared_data_dir):
    """(task, weights, model config) of three tiny models, built once."""
    out = []
    for task in TASKS:
        cfg = compose(root, [f"task={task}", "profile=tiny", f"data_dir={shared_data_dir}"])
        resolve_model(cfg, root, "cpu")
        out.append((pipeline_task(cfg), resolve_weights(cfg.model, cfg.profile, shared_data_dir), cfg.model))
    return out


@pytest.fixture(autouse=True)
def empty_cache():
    pipeline_cache._PIPELINES.clear()
    yield
    pipeline_cache._PIPELINES.clear()


def _load(model, **limits):  # noqa: ANN001, ANN202
    task, weights, model_cfg = model
    return pipeline_cache.load_pipeline(task, weights, "cpu", "float32", model_cfg, **limits)[1]


def test_least_recently_used_is_dropped_beyond_max_models(models):
    a, b, c = models
    before = pipeline_cache.cache_stats()
    hits = [_load(m, max_models=2) for m in (a, b, a, c, a, b)]
    after = pipeline_cache.cache_stats()
    # a, b load; a hits (b is now the oldest); c evicts b; a hits; b loads again and evicts c
    assert hits == [False, False, True, False, True, False]
    assert after["loads"] - before["loads"] == 4
    assert after["evictions"] - before["evictions"] == 2
    assert after["held"] == 2


def test_a_memory_budget_drops_models_before_the_next_load(models):
    a, b, _ = models
    _load(a)
    held = pipeline_cache._PIPELINES[next(iter(pipeline_cache._PIPELINES))]
    assert held.weight_bytes > 0
    budget_mb = held.weight_bytes * 1.5 / 1024**2  # room for one of these models, not for two
    before = pipeline_cache.cache_stats()
    assert _load(b, max_memory_mb=budget_mb) is False
    assert pipeline_cache.cache_stats()["evictions"] - before["evictions"] == 1
    assert pipeline_cache.cache_stats()["held"] == 1
    assert _load(a, max_memory_mb=None) is False  # a was dropped: it loads again


def test_the_limits_are_checked_with_the_config(root):
    from pipelab.config import ConfigError, validate_config

    for override, message in [
        ("pipeline_cache.max_models=0", "pipeline_cache.max_models"),
        ("pipeline_cache.max_memory_mb=-5", "pipeline_cache.max_memory_mb"),
    ]:
        cfg = compose(root, ["task=fill-mask", "profile=tiny", override])
        with pytest.raises(ConfigError, match=message):
            validate_config(cfg, root)
