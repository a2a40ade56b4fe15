"""DVC stage `fetch`: the weights and input files of every job in params.yaml into data/.

    python stages/fetch.py                 # profile, tasks and ablations from params.yaml
    python stages/fetch.py --plan          # what it would download (repo, pin, safetensors source, bytes); no download
    python stages/fetch.py --check-pins    # every conf/model pin, asked of the Hub (exists, safetensors reachable)

profile=hub first plans every model and input against the Hub (or the cache) and stops, before any download,
when one would be refused; then it downloads the pinned revisions into data/hub (safetensors from the pin or
its bot conversion pull request) and the course's input files from their dataset repos. profile=tiny builds the
random-weight stand-ins into data/tiny and checksums the bundled offline inputs. Writes data/fetched-<profile>.json,
the manifest the run stages depend on. The Hub is $HF_ENDPOINT (default https://huggingface.co).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("PIPELAB_ROOT", str(ROOT))
import pipelab  # noqa: E402,F401  (the defaults it sets in the environment, which every run stage has too)

# The environment DVC gave this stage, as the run stages have it when they ask for their warm server (the
# imports below add MLflow's HTTP bounds to it, as the run stages' imports do only later).
STAGE_ENV = dict(os.environ)

from pipelab.dag import compose, fetch_plan, load_params, run_environment  # noqa: E402
from pipelab.devices import resolve_device  # noqa: E402
from pipelab.errors import USER_ERRORS  # noqa: E402
from pipelab.hub import HubUnreachable  # noqa: E402
from pipelab_tools.fetch import (  # noqa: E402
    check_pins,
    fetch_assets,
    fetch_models,
    format_plan,
    load_profile,
    plan_rows,
    write_manifest,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--plan", action="store_true", help="print what would be downloaded, download nothing")
    what.add_argument("--check-pins", action="store_true", help="check every conf/model pin against the Hub")
    parser.add_argument("--profile", help="profile to plan or fetch (default: params.yaml's)")
    args = parser.parse_args()
    data_dir = ROOT / "data"
    try:
        if args.check_pins:
            rows = check_pins(ROOT, data_dir)
            print(format_plan(rows))
            return 2 if any(r.refused for r in rows) else 0
        params = load_params(ROOT / "params.yaml", ROOT, profile=args.profile)
        if os.environ.get("DVC_STAGE") and not args.plan:  # in a DVC run: the run stages come next
            from pipelab.warm import start_early

            start_early(ROOT, run_environment(params, STAGE_ENV))  # their server imports while this stage works
        for task in params.left_out:  # DVC's foreach reads the stage list from params.yaml, not from conf/task
            print(
                f"fetch: note: dvc repro does not run task {task}: add `{task}: {{ablations: []}}` under tasks in "
                "params.yaml",
                file=sys.stderr,
            )
        defaults = compose(ROOT, [])
        device, _ = resolve_device(defaults.device.name, defaults.device.dtype)
        plan = fetch_plan(ROOT, params, device)
        profile = load_profile(ROOT, plan.profile)
        if profile.name != "tiny":
            rows = plan_rows(ROOT, plan, data_dir)
            print(format_plan(rows), flush=True)
            if any(r.refused for r in rows):
                print("fetch: nothing was downloaded: fix the refused entries above first", file=sys.stderr)
                return 2
        else:
            print(f"fetch: profile=tiny builds {len(plan.models)} models locally and downloads nothing", flush=True)
        if args.plan:
            return 0
        models = fetch_models(ROOT, plan, data_dir)
        assets = fetch_assets(plan, data_dir, stand_ins=profile.name == "tiny", local_only=bool(profile.offline))
    except (*USER_ERRORS, HubUnreachable) as exc:
        print(f"fetch: error: {exc}", file=sys.stderr)
        return 2
    # A DVC output: it must exist even when this profile put nothing in it.
    (data_dir / plan.profile).mkdir(parents=True, exist_ok=True)
    write_manifest(data_dir / f"fetched-{plan.profile}.json", plan, models, assets)
    print(f"fetch: {len(models)} models and {len(assets)} inputs for profile={plan.profile}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
