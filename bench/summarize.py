#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
# Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
"""Print the results table of bench/run-all.sh from its log directory.

    summarize.py LOGDIR

Reads LOGDIR/write.txt (lines "plugin mode config run MiB/s IOPS"),
LOGDIR/fsync.txt and LOGDIR/scale-*.txt (bench-ckpt output), and
prints the figures against the targets of DESIGN.md.  Standard library
only.
"""
import os
import statistics
import sys
from collections import defaultdict

# Targets (DESIGN.md "Performance targets").
RATIO_VS_PLAIN = 0.97     # filter with checkpoints vs the plugin alone
RATIO_VS_ONE = 0.99       # N checkpoints vs 1 checkpoint
CKPT_MS = 10.0            # checkpoint-create / -delete
RSS_MIB = 64.0            # 1000 checkpoints on 1 TiB

CONFIG_LABEL = {
    "plain": "plugin alone",
    "f0": "filter, 0 ckpt",
    "f1": "filter, 1 ckpt",
    "f100": "filter, 100 ckpt",
    "f1000": "filter, 1000 ckpt",
    "f1000s": "filter, 1000 ckpt, state=",
}


def verdict(ok):
    return "met" if ok else "NOT MET"


CONFIGS = ["plain", "f0", "f1", "f100", "f1000", "f1000s"]


def per_run_ratio(runs, base):
    """Median and half the interquartile range of the per-run ratios
    RUNS[i] / BASE[i] (both measured in run i)."""
    r = sorted(runs[i] / base[i] for i in runs if i in base and base[i])
    if not r:
        return None, None
    if len(r) >= 4:
        q = statistics.quantiles(r, n=4)
        half_iqr = (q[2] - q[0]) / 2
    else:
        half_iqr = (r[-1] - r[0]) / 2
    return statistics.median(r), half_iqr


def fmt(v, f="%.3f"):
    return f % v if v is not None else ""


def write_table(path):
    # col[name][(plugin, mode)][config][run] = value
    names = ["mibps", "iops", "us", "uinstr", "cycles"]
    col = {n: defaultdict(lambda: defaultdict(dict)) for n in names}
    with open(path) as f:
        for line in f:
            p = line.split()
            if len(p) < 5 or not p[4]:
                continue
            key, config, run = (p[0], p[1]), p[2], int(p[3])
            for j, n in enumerate(names):
                if len(p) > 4 + j and p[4 + j] not in ("", "-"):
                    col[n][key][config][run] = float(p[4 + j])
    data = col["mibps"]
    if not data:
        print("(no throughput results)")
        return
    keys = sorted(data, key=lambda k: (k[0] != "memory", k))

    print("Write throughput, MiB/s.  median/min/max over the runs; "
          "spread = (max-min)/median;")
    print("vs plain, vs 1 ckpt = median of the per-run ratios (each run "
          "measures every configuration).")
    hdr = "%-7s %-6s %-26s %8s %8s %8s %7s %9s %9s" % (
        "plugin", "mode", "configuration", "median", "min", "max", "spread",
        "vs plain", "vs 1ckpt")
    print(hdr)
    print("-" * len(hdr))
    verdicts = []
    for key in keys:
        cfgs = data[key]
        for config in CONFIGS:
            runs = cfgs.get(config)
            if not runs:
                continue
            vals = list(runs.values())
            med = statistics.median(vals)
            spread = (max(vals) - min(vals)) / med if med else 0
            vp = np_ = v1 = n1 = None
            if config != "plain":
                vp, np_ = per_run_ratio(runs, cfgs.get("plain", {}))
            if config in ("f100", "f1000", "f1000s"):
                v1, n1 = per_run_ratio(runs, cfgs.get("f1", {}))
            print("%-7s %-6s %-26s %8.1f %8.1f %8.1f %6.1f%% %9s %9s" % (
                key[0], key[1], CONFIG_LABEL[config], med, min(vals),
                max(vals), 100 * spread, fmt(vp), fmt(v1)))
            if config in ("f1", "f100", "f1000", "f1000s") and vp is not None:
                verdicts.append(("%s %s %s vs plain >= %.2f" % (
                    key[0], key[1], config, RATIO_VS_PLAIN), vp, np_,
                    RATIO_VS_PLAIN))
            if v1 is not None:
                verdicts.append(("%s %s %s vs 1 ckpt >= %.2f" % (
                    key[0], key[1], config, RATIO_VS_ONE), v1, n1,
                    RATIO_VS_ONE))
    print()

    if any(col["us"][k] for k in keys):
        print("Server cost per write (medians): CPU time of the nbdkit "
              "process (/proc, 10 ms ticks);")
        print("with perf: user-space instructions and all cycles of the "
              "nbdkit process.  x = ratio to plain.")
        hdr = "%-7s %-6s %-26s %9s %6s %11s %6s %10s %6s" % (
            "plugin", "mode", "configuration", "us/write", "x",
            "user instr", "x", "cycles", "x")
        print(hdr)
        print("-" * len(hdr))
        for key in keys:
            def med(n, config):
                v = col[n][key].get(config, {})
                return statistics.median(v.values()) if v else None

            for config in CONFIGS:
                if config not in data[key]:
                    continue
                cells = []
                for n, f in (("us", "%.2f"), ("uinstr", "%.0f"),
                             ("cycles", "%.0f")):
                    v, b = med(n, config), med(n, "plain")
                    cells += [fmt(v, f), fmt(v / b if v and b else None)]
                print("%-7s %-6s %-26s %9s %6s %11s %6s %10s %6s" % (
                    (key[0], key[1], CONFIG_LABEL[config]) + tuple(cells)))
        print()

    print("Throughput targets (median per-run ratio +/- half its "
          "interquartile range;")
    print("'inconclusive' = below the target by less than that noise):")
    for what, value, noise, target in verdicts:
        if value >= target:
            v = "met"
        elif value + noise >= target:
            v = "inconclusive (noise)"
        else:
            v = "NOT MET"
        print("  %-40s %6.3f +/- %.3f  %s" % (what, value, noise, v))
    print()


def parse_kv(line):
    parts = line.split()
    kv = {}
    for p in parts[1:]:
        if "=" in p:
            k, v = p.split("=", 1)
            kv[k] = v
    return parts[0] if parts else "", kv


def scale_tables(logdir):
    fsync = None
    try:
        with open(os.path.join(logdir, "fsync.txt")) as f:
            for line in f:
                key, kv = parse_kv(line)
                if key == "fsync_probe":
                    fsync = kv
    except FileNotFoundError:
        pass
    for variant in ("nostate", "state"):
        path = os.path.join(logdir, "scale-%s.txt" % variant)
        if not os.path.exists(path):
            continue
        rows = {}
        rss = {}
        other = {}
        with open(path) as f:
            for line in f:
                key, kv = parse_kv(line)
                if key == "rss":
                    rss[kv["when"]] = kv
                elif "median_ms" in kv:
                    rows[key] = kv
                else:
                    other[key] = kv
        disk = other.get("disk", {})
        print("Checkpoints on a %s GiB sparse disk (file plugin), %s "
              "checkpoints, %s scattered 4 KiB writes between them, %s:"
              % (int(disk.get("size", 0)) >> 30, disk.get("checkpoints", "?"),
                 disk.get("writes_between", "?"),
                 "state= (metadata fsync'd on each change)"
                 if variant == "state" else "no state="))
        hdr = "  %-34s %5s %8s %8s %8s %8s  %s" % (
            "QMP round trip (ms)", "n", "median", "p90", "p99", "max",
            "target <= %g ms (median)" % CKPT_MS)
        print(hdr)
        labels = [
            ("create_first100", "create, the first 100"),
            ("create_last100", "create, the last 100"),
            ("create_all", "create, all"),
            ("create_at_n", "create with N present"),
            ("delete_newest", "delete newest (merge, N present)"),
            ("delete_middle", "delete from the middle (merge)"),
            ("delete_oldest", "delete oldest (root)"),
        ]
        for key, label in labels:
            kv = rows.get(key)
            if not kv:
                continue
            med = float(kv["median_ms"])
            print("  %-34s %5s %8.2f %8.2f %8.2f %8.2f  %s%s" % (
                label, kv["n"], med, float(kv["p90_ms"]),
                float(kv["p99_ms"]), float(kv["max_ms"]),
                verdict(med <= CKPT_MS),
                "" if float(kv["max_ms"]) <= CKPT_MS else " (tail over)"))
        for key, label in (("query_checkpoints", "query-checkpoints"),
                           ("query_checkpoints_size",
                            "query-checkpoints size=true")):
            if key in other:
                print("  %-34s %5s %8.2f" % (label, 1, float(other[key]["ms"])))
        if "build" in other:
            print("  building all checkpoints and writes: %.1f s" %
                  float(other["build"]["secs"]))
        if "shutdown" in other:
            print("  nbdkit shutdown (SIGTERM to exit): %s ms" %
                  other["shutdown"]["ms"])
        probe = other.get("fsync_probe_after_build") or \
            rows.get("fsync_probe_after_build")
        if probe:
            print("  disk floor after the build (one fsync'd file replace): "
                  "median %.2f ms, p90 %.2f ms" %
                  (float(probe["median_ms"]), float(probe["p90_ms"])))
        for when in ("start", "after_build", "end"):
            if when in rss:
                r = int(rss[when]["rss_kib"]) / 1024
                h = int(rss[when]["hwm_kib"]) / 1024
                note = ""
                if when != "start":
                    note = "  target <= %g MiB: %s" % (
                        RSS_MIB, verdict(h <= RSS_MIB))
                print("  RSS %-11s VmRSS %7.1f MiB  VmHWM %7.1f MiB%s" %
                      (when, r, h, note))
        print()
    if fsync:
        print("Disk floor: one durable file replace (write 4 KiB, fsync, "
              "rename, fsync dir): median %.2f ms, p90 %.2f ms" %
              (float(fsync["median_ms"]), float(fsync["p90_ms"])))


def main():
    if len(sys.argv) != 2:
        print("usage: summarize.py LOGDIR", file=sys.stderr)
        sys.exit(2)
    logdir = sys.argv[1]
    wpath = os.path.join(logdir, "write.txt")
    if os.path.exists(wpath):
        write_table(wpath)
    scale_tables(logdir)


if __name__ == "__main__":
    main()
