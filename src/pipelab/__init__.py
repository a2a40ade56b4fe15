"""pipelab."""

from pipelab.pipelines import register_pipelines

register_pipelines()
