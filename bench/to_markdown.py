#!/usr/bin/env python3
"""Turns Google Benchmark JSON (bench_ops [--device ...] --benchmark_out=FILE) into a markdown table.

Not a plotting tool: one row per benchmark, the median over repetitions when the run has them;
columns op, shape, time, GFLOP/s or GB/s, the SGEMM ceiling and the ratio to it.

usage: python3 bench/to_markdown.py ops.json [more.json ...] > table.md
"""
import json
import sys


def rows(path):
    with open(path) as f:
        data = json.load(f)
    benchmarks = data.get("benchmarks", [])
    # With repetitions, keep the median aggregate; without, the plain iteration rows.
    medians = [b for b in benchmarks if b.get("aggregate_name") == "median"]
    chosen = medians if medians else [b for b in benchmarks if b.get("run_type", "iteration") == "iteration"]
    for b in chosen:
        name = b.get("run_name", b["name"])
        # Drop Google Benchmark's own suffixes (min_time:..., manual_time, ...).
        parts = [p for p in name.split("/") if ":" not in p and p not in ("manual_time", "real_time")]
        yield parts[0], " ".join(parts[1:]), b


def fmt(value, digits=1):
    return "" if value is None else f"{value:.{digits}f}"


def main(paths):
    if not paths:
        sys.exit(__doc__.strip())
    print("| op | shape | time (ms) | GFLOP/s | GB/s | SGEMM GFLOP/s | ratio |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for path in paths:
        for op, shape, b in rows(path):
            unit = b.get("time_unit", "ns")
            scale = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}[unit]
            time_ms = b.get("real_time", 0.0) * scale
            ratio = b.get("ratio")
            print(f"| {op} | {shape} | {time_ms:.3f} | {fmt(b.get('GFLOP/s'))} | {fmt(b.get('GB/s'))} | "
                  f"{fmt(b.get('sgemm_GFLOP/s'))} | {fmt(ratio, 2)} |")


if __name__ == "__main__":
    main(sys.argv[1:])
