"""DVC stage `offline_plots`: an HTML template that makes `dvc plots show` work without a network.

    python stages/offline_plots.py data/vega/dvc_plots_template.html

DVC's default page loads vega from a CDN (blank offline). This writes a template with vega, vega-lite and
vega-embed inline (vl-convert-python's bundle, ~0.9 MB); .dvc/config names it as `plots.html_template`.
Bundling takes ~10 s, so it is a stage of its own that runs once, not part of aggregate.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import vl_convert

from pipelab_tools.vega_page import offline_plots_template


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="where to write the template")
    out = parser.parse_args().out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(offline_plots_template(vl_convert.javascript_bundle()), encoding="utf-8")
    print(f"offline_plots: wrote {out} (vl-convert {vl_convert.__version__} bundle inline)")


if __name__ == "__main__":
    main()
