#!/usr/bin/env python3
"""Children and their training + validation FLOPs born after a time in a search's run folder.

Not part of evo: a helper of the throughput benchmarks (bench/search_throughput.sh,
bench/evolved_nets.sh). usage: bench/count_children.py RUN_DIR SINCE_UNIX_SECONDS
prints "CHILDREN FLOPS" for every individual (alive or dead) with birth_time >= SINCE.
"""
import json
import pathlib
import sys

run, since = pathlib.Path(sys.argv[1]), float(sys.argv[2])
children = flops = 0
for m in list(run.glob("alive/*/metrics.json")) + list(run.glob("dead/*/metrics.json")):
    r = json.loads(m.read_text())
    if r["birth_time"] >= since:
        children += 1
        flops += r["flops"]
print(children, flops)
