"""DVC stage `fetch`: the weights and input files of every job in params.yaml into data/.

    python stages/fetch.py        # profile, tasks and ablations from params.yaml

profile=hub downloads the pinned revisions (safetensors only) into data/hub and the course's input files
into data/assets; profile=tiny builds the random-weight stand-ins into data/tiny and checksums the bundled
offline inputs. Writes data/fetched-<profile>.json, the manifest the run stages depend on.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("PIPELAB_ROOT", str(ROOT))

from pipelab.dag import compose, fetch_plan, load_params  # noqa: E402
from pipelab.devices import resolve_device  # noqa: E402
from pipelab.errors import USER_ERRORS  # noqa: E402
from pipelab.fetch import fetch_assets, fetch_models, load_profile, write_manifest  # noqa: E402


def main() -> int:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    data_dir = ROOT / "data"
    try:
        params = load_params(ROOT / "params.yaml", ROOT)
        defaults = compose(ROOT, [])
        device, _ = resolve_device(defaults.device.name, defaults.device.dtype)
        plan = fetch_plan(ROOT, params, device)
        profile = load_profile(ROOT, plan.profile)
        models = fetch_models(ROOT, plan, data_dir)
        assets = fetch_assets(plan, data_dir, offline=profile.name == "tiny" or bool(profile.offline))
    except USER_ERRORS as exc:
        print(f"fetch: error: {exc}", file=sys.stderr)
        return 2
    # Both folders are DVC outputs: they must exist even when this profile put nothing in one of them.
    (data_dir / plan.profile).mkdir(parents=True, exist_ok=True)
    (data_dir / "assets").mkdir(parents=True, exist_ok=True)
    write_manifest(data_dir / f"fetched-{plan.profile}.json", plan, models, assets)
    print(f"fetch: {len(models)} models and {len(assets)} inputs for profile={plan.profile}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
