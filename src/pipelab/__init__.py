"""pipelab."""

import os

# MLflow's usage telemetry sends events from background threads: nothing a reproducible, often offline run should
# do, and a running thread keeps pipelab from forking (pipelab.forked: the sweeper's compositions, fetch's, the
# report's figures). MLFLOW_DISABLE_TELEMETRY=false in the environment turns it back on.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from pipelab.pipelines import register_pipelines  # noqa: E402

register_pipelines()
