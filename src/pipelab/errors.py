"""The errors that mean "the input was wrong" (as opposed to a bug): reported as one clear line, exit code 2."""

from __future__ import annotations

from pipelab.assets import AssetError
from pipelab.config import ConfigError
from pipelab.tracking import TrackingUnavailable
from pipelab.weights import WeightsUnavailable

USER_ERRORS: tuple[type[Exception], ...] = (ConfigError, AssetError, WeightsUnavailable, TrackingUnavailable)
