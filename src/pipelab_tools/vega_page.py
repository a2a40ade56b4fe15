"""The HTML template that makes `dvc plots show` work offline (stages/offline_plots.py writes it).

DVC's default page loads vega from a CDN and stays blank without a network; this one carries vega, vega-lite and
vega-embed inline. Not part of pipelab_tools.report: the aggregate stage never needs it, and it needs no records.
"""

from __future__ import annotations

# DVC fills {plot_divs} (and {refresh_tag}); without a {scripts} placeholder it adds none of its <script> tags,
# which load vega from a CDN and leave the page blank offline.
_OFFLINE_PAGE = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>pipelab: DVC plots</title>
    <script type="text/javascript">
BUNDLE
    </script>
    <style>
        body { font-family: sans-serif; }
        table { border-spacing: 15px; }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def offline_plots_template(bundle: str) -> str:
    """An HTML template for `dvc plots show` with the vega, vega-lite and vega-embed code inline.

    `bundle` is ``vl_convert.javascript_bundle()``: one classic script that defines ``window.vegaEmbed``,
    which DVC's plot divs call.
    """
    for marker in ("</script", "{plot_divs}", "{refresh_tag}", "{scripts}"):
        if marker in bundle:
            raise ValueError(f"the vega bundle contains {marker!r}: it cannot be inlined in DVC's template")
    return _OFFLINE_PAGE.replace("BUNDLE", bundle)
