"""What a run ran on: Python, platform, library versions, CPU count, git commit, device name."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any


def environment(root: Path, device: str) -> dict[str, Any]:
    import torch
    import transformers

    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        ).stdout.strip()
    except OSError:
        commit = ""
    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cpu_count": os.cpu_count(),
        # torch's intra-op threads (OMP_NUM_THREADS): a latency comparison needs to know them
        "torch_threads": torch.get_num_threads(),
        "git_commit": commit or "unknown",
        "device_name": device,
    }
    if device == "cuda":
        info["device_name"] = torch.cuda.get_device_name(0)
    return info
