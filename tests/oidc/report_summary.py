#!/usr/bin/env python3
"""Prints the parts of Node.js diagnostic reports (`node --report-on-signal`,
written on SIGUSR2) that say why a process is stuck: where its JavaScript
stands, how much CPU it has used in how long, and its open handles. With no
report file it says so: the process did not get to JavaScript's interrupt
check (blocked in native code or never scheduled)."""
import json
import sys

if len(sys.argv) < 2 or not any(not a.endswith("*.json") for a in sys.argv[1:]):
    print("node report: none was written within 3 s of SIGUSR2 (the report waits for the event loop:\n"
          "  the process is stuck in synchronous code, or was not scheduled)")
    sys.exit(0)
for path in sys.argv[1:]:
    try:
        with open(path, encoding="utf-8") as f:
            report = json.load(f)
    except (OSError, ValueError) as e:
        print(f"node report {path}: unreadable ({e})")
        continue
    usage = report.get("resourceUsage", {})
    header = report.get("header", {})
    print(f"node report {path}:")
    print(f"  node {header.get('nodejsVersion')}, written {header.get('dumpEventTime')}")
    print(
        "  cpu: user {} s, kernel {} s, {}% of one core".format(
            usage.get("userCpuSeconds"), usage.get("kernelCpuSeconds"), usage.get("cpuConsumptionPercent")
        )
    )
    stack = report.get("javascriptStack", {})
    print(f"  javascript: {stack.get('message')}")
    for frame in stack.get("stack", [])[:25]:
        print(f"    {frame}")
    handles = [h.get("type") for h in report.get("libuv", [])]
    print(f"  libuv handles: {', '.join(handles) or 'none'}")
