"""Pipeline internals: the bench call timed stage by stage on real tiny pipelines, outputs unchanged."""

from __future__ import annotations

import pytest
from conftest import ROOT

from pipelab import runner, stage_timing
from pipelab.dag import compose
from pipelab.pipeline_cache import load_pipeline
from pipelab.weights import resolve_weights


def loaded(task_name: str, data_dir):
    cfg = compose(ROOT, [f"task={task_name}", "profile=tiny", f"data_dir={data_dir}"])
    task, ctx, cases, device, dtype = runner._prepare(cfg, ROOT)
    weights = resolve_weights(cfg.model, cfg.profile, data_dir)
    pipe = load_pipeline(cfg.task.pipeline, weights, device, dtype, cfg.model)[0].pipe
    ctx.pipe = pipe
    case = next(c for c in cases if c.id == cfg.task.bench_case)
    task.annotate(case, ctx)
    return task, pipe, case


@pytest.mark.slow
@pytest.mark.parametrize("task_name", ["text-classification", "question-answering"])  # a Pipeline, a ChunkPipeline
def test_stages_are_timed_without_changing_the_output_or_the_pipeline(task_name, shared_data_dir):
    task, pipe, case = loaded(task_name, shared_data_dir)
    before = task.call(pipe, case)
    outputs = []
    times = stage_timing.time_stages(pipe, lambda: outputs.append(task.call(pipe, case)), calls=3)
    assert set(times) == set(stage_timing.STAGE_METRICS)
    assert times["stage_calls"] == 3 and len(outputs) == 3
    assert all(times[m] > 0 for m in ("preprocess_ms", "forward_ms", "postprocess_ms"))
    assert times["other_ms"] >= 0
    assert all(out == before for out in outputs)
    # The wrappers were instance attributes and are gone: the class's own methods answer again.
    assert not {"preprocess", "_forward", "postprocess"} & set(vars(pipe))


@pytest.mark.slow
def test_a_stage_that_raises_still_leaves_the_pipeline_unwrapped(shared_data_dir):
    task, pipe, case = loaded("text-classification", shared_data_dir)
    with pytest.raises(ValueError, match="text input must be"):
        stage_timing.time_stages(pipe, lambda: pipe(12345), calls=1)  # not a text: the tokenizer raises
    assert not {"preprocess", "_forward", "postprocess"} & set(vars(pipe))


def test_an_object_without_pipeline_stages_gives_no_times():
    assert stage_timing.time_stages(object(), lambda: None) == {}
    with pytest.raises(ValueError, match="calls must be >= 1"):
        stage_timing.time_stages(object(), lambda: None, calls=0)
