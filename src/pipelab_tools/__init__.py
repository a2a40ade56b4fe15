"""What works around the grid and is never imported by a run: fetching its inputs (fetch), logging records to
MLflow later (sync), the reports (report/), comparisons of two result sets (compare) and the offline plots page
(vega_page).

Kept out of the ``pipelab`` package so that the DAG's run stages can depend on ``src/pipelab`` as one folder:
editing a report re-runs `aggregate`, not the grid (tests/test_dag.py checks that no run module imports this
package).
"""
