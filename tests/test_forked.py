"""fork_map: a process per core only where a fork is safe, the results in the items' order either way."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

from pipelab.forked import fork_map

FORKED = """import json, os, time
from pipelab.forked import fork_map
def pid(item):
    time.sleep(0.2)  # long enough that every worker takes an item
    return [item, os.getpid()]
print(json.dumps({"parent": os.getpid(), "results": fork_map(pid, range(6))}))"""


def _pid(item: int) -> tuple[int, int]:
    return item, os.getpid()


def test_a_process_with_one_thread_forks_a_worker_per_core_and_keeps_the_order():
    done = subprocess.run([sys.executable, "-c", FORKED], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout)
    assert [item for item, _ in out["results"]] == list(range(6))
    workers = {pid for _, pid in out["results"]}
    if len(os.sched_getaffinity(0)) > 1:
        assert out["parent"] not in workers and 1 < len(workers) <= len(os.sched_getaffinity(0))
    else:
        assert workers == {out["parent"]}


def test_with_another_thread_running_the_items_are_computed_here_in_order():
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)  # it could hold a lock across a fork: no fork then
    thread.start()
    try:
        assert fork_map(_pid, range(5)) == [(i, os.getpid()) for i in range(5)]
    finally:
        stop.set()
        thread.join()
