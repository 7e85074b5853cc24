"""Compilation's share of a sweep: every default preset, cold (no persistent cache), one per process.

For each sweep file and each setting of JAXBENCH_COMPILE_THREADS (0 = each bucket traced and
compiled when its first chunk needs it, on the main thread: the engine before background
compilation; 2 = the default, buckets prepared ahead in two threads while chunks run), runs
`jaxbench sweep FILE --scale default` in a fresh process and reads its meta.json:

* buckets, compile seconds per bucket (min / median / max; with threads these overlap),
* trace seconds (Python: jaxpr of run_one), chunk seconds (execution), wall,
* waited: seconds the main loop waited for programs (the compilation a user sees), and the
  compile share = waited / wall.

    python benchmarks/compile.py                                  # all sweeps, threads 0 and 2 (~50 min)
    python benchmarks/compile.py --sweeps ntk_convergence,info_bounds --threads 2
    python benchmarks/compile.py --sweeps info_linear --threads 2 --emitters 1,0   # XLA:CPU emitters
    python benchmarks/compile.py --write                          # also the RESULTS.md section
    python benchmarks/compile.py --from-results results           # read a finished `make sweep`
                                                                  # (one sweep per process already)

Run it on an otherwise idle machine: compilation slows far more than execution under load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
SECTION = "## Compilation share of the default sweeps"


def run(sweep: str, threads: int, scale: str, emitters: str = "auto") -> dict:
    """``emitters``: "auto" (the experiment's ``CPU_FUSION_EMITTERS``), "1" or "0" (forced)."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "JAXBENCH_CACHE_DIR": "off", "JAXBENCH_COMPILE_THREADS": str(threads)}
        env.pop("JAX_COMPILATION_CACHE_DIR", None)
        env.pop("JAXBENCH_CPU_FUSION_EMITTERS", None)
        if emitters != "auto":
            env["JAXBENCH_CPU_FUSION_EMITTERS"] = emitters
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "jaxbench", "sweep", str(ROOT / "sweeps" / f"{sweep}.toml"),
                            "--scale", scale, "--out", str(Path(tmp) / "out"), "--no-progress", "--no-plot"],
                           capture_output=True, text=True, env=env, cwd=ROOT)
        wall = time.perf_counter() - t0
        if r.returncode:
            return {"sweep": sweep, "threads": threads, "emitters": emitters, "error": r.stderr[-500:]}
        meta = json.loads((Path(tmp) / "out" / "meta.json").read_text())
    return row(sweep, threads, meta, wall)


def row(sweep: str, threads, meta: dict, wall: float) -> dict:
    """One table row from a sweep's meta.json (`wall`: the process's wall, NaN when not timed)."""
    comp = [b["compile_s"] for b in meta["buckets"]]
    emit = {b.get("fusion_emitters", True) for b in meta["buckets"]}
    return {"sweep": sweep, "threads": threads, "emitters": "on" if emit == {True} else "off" if emit == {False} else "mixed",
            "buckets": len(comp), "compile_min": min(comp),
            "compile_median": statistics.median(comp), "compile_max": max(comp), "compile_sum": sum(comp),
            "trace_sum": sum(b.get("trace_s", 0.0) for b in meta["buckets"]),
            "waited": meta.get("compile_wait_s_total", sum(comp)), "chunk_s": meta["chunk_seconds_total"],
            "sweep_wall": meta["wall_s_this_run"], "process_wall": wall,
            "share": meta.get("compile_wait_s_total", sum(comp)) / meta["wall_s_this_run"]}


def _num(x: float) -> str:
    return "–" if x != x else f"{x:.1f}"  # NaN: not timed (--from-results)


def table(rows) -> str:
    head = ("| sweep | threads | XLA:CPU fusion emitters | buckets | compile s/bucket min / median / max | trace s | waited s | chunks s "
            "| sweep wall s | process wall s | compile share |")
    out = [head, "|" + "---|" * 11]
    for r in rows:
        if "error" in r:
            out.append(f"| {r['sweep']} | {r['threads']} | {r.get('emitters', '?')} | error: {r['error'].splitlines()[-1] if r['error'] else '?'} |")
            continue
        out.append(f"| {r['sweep']} | {r['threads']} | {r['emitters']} | {r['buckets']} | {r['compile_min']:.1f} / "
                   f"{r['compile_median']:.1f} / {r['compile_max']:.1f} | {r['trace_sum']:.1f} | {r['waited']:.1f} | "
                   f"{r['chunk_s']:.1f} | {r['sweep_wall']:.1f} | {_num(r['process_wall'])} | {100 * r['share']:.0f}% |")
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sweeps", default=None, help="comma-separated names (default: every sweeps/*.toml)")
    ap.add_argument("--threads", default="0,2", help="JAXBENCH_COMPILE_THREADS settings to compare")
    ap.add_argument("--emitters", default="auto",
                    help="JAXBENCH_CPU_FUSION_EMITTERS settings to compare: auto (each experiment's own), 1, 0")
    ap.add_argument("--scale", default="default")
    ap.add_argument("--write", action="store_true", help="replace the section in benchmarks/RESULTS.md")
    ap.add_argument("--json", default=None, help="also write the rows as JSON here")
    ap.add_argument("--from-results", default=None, metavar="DIR",
                    help="no runs: read DIR/*/meta.json of a finished `make sweep` (run it cold: "
                         "JAXBENCH_CACHE_DIR=off or a fresh cache directory)")
    args = ap.parse_args(argv)
    names = args.sweeps.split(",") if args.sweeps else sorted(p.stem for p in (ROOT / "sweeps").glob("*.toml"))
    rows = []
    for name in names:
        if args.from_results:
            meta_file = Path(args.from_results) / name / "meta.json"
            if meta_file.exists():
                meta = json.loads(meta_file.read_text())
                rows.append(row(name, meta.get("compile_threads", "?"), meta, float("nan")))
            continue
        for threads in (int(t) for t in args.threads.split(",")):
            for emitters in args.emitters.split(","):
                rows.append(run(name, threads, args.scale, emitters))
                print(table(rows[-1:]).splitlines()[-1], flush=True)
    text = table(rows)
    load = os.getloadavg()
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    if args.write:
        body = (f"{SECTION}\n\n`python benchmarks/compile.py --write` ({time.strftime('%Y-%m-%d')}, "
                f"{os.cpu_count()} cores, load average after the run {load[0]:.1f}); cold: no persistent "
                f"cache, one sweep per process{' (read from ' + args.from_results + ')' if args.from_results else ''}. threads 0 = each bucket compiled on the main thread "
                f"when first needed; 2 = two background threads (the default).\n\n{text}\n")
        old = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
        if SECTION in old:
            head, rest = old.split(SECTION, 1)
            tail = rest[rest.find("\n## "):] if "\n## " in rest else ""
            old = head.rstrip() + "\n\n" + body + tail
        else:
            old = old.rstrip() + "\n\n" + body
        RESULTS.write_text(old)
    return 0


if __name__ == "__main__":
    sys.exit(main())
