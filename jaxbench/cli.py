"""`jaxbench` command line (also ``python -m jaxbench``).

    jaxbench sweep SWEEP.toml [--scale smoke|default|paper] [--out DIR] [--dry-run] [--fresh]
    jaxbench plot RESULTS_DIR
    jaxbench list [--dir sweeps]

Exit code 0 on success; 2 with one line on stderr for bad input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse prints usage too; keep it short)
        sys.stderr.write(f"jaxbench: error: {message}\n")
        sys.exit(2)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="jaxbench", description="Simulation sweeps for theory of overparameterized ReLU networks.")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser)
    s = sub.add_parser("sweep", help="run or resume a sweep")
    s.add_argument("sweep_file")
    s.add_argument("--scale", default="default", help="preset: smoke, default or paper")
    s.add_argument("--out", default=None, help="results directory (default results/<sweep>[-<scale>])")
    s.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    s.add_argument("--fresh", action="store_true", help="discard finished chunks and start over")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.add_argument("--memory-budget", type=float, default=None, metavar="GiB",
                   help="bytes per chunk budget in GiB (default 2)")
    pl = sub.add_parser("plot", help="redraw the figures of a results directory")
    pl.add_argument("results_dir")
    ls = sub.add_parser("list", help="list sweep files and their presets")
    ls.add_argument("--dir", default="sweeps")
    return p


def _sweep(args) -> int:
    from jaxbench import sweep

    budget = None
    if args.memory_budget is not None:
        if not args.memory_budget > 0:
            raise sweep.SweepError(f"--memory-budget must be > 0, got {args.memory_budget}")
        budget = int(args.memory_budget * 2**30)
    sw = sweep.load(args.sweep_file, args.scale)  # validates before anything is written
    if args.dry_run:
        print(sweep.describe(sw, sweep.plan(sw, budget_bytes=budget)))
        print(f"  results -> {args.out or sweep.default_out(sw)}")
        return 0
    out = sweep.run(args.sweep_file, args.scale, out=args.out, fresh=args.fresh,
                    progress=not args.no_progress, budget_bytes=budget)
    print(f"results in {out}")
    return 0


def _plot(args) -> int:
    from jaxbench import experiments, store

    res = store.load(args.results_dir)
    for p in experiments.get(res.meta["experiment"]).plot(Path(args.results_dir)):
        print(p)
    return 0


def _list(args) -> int:
    import tomllib

    from jaxbench import sweep

    files = sorted(Path(args.dir).glob("*.toml"))
    if not files:
        raise sweep.SweepError(f"no sweep files in {args.dir}/")
    for f in files:
        raw = tomllib.loads(f.read_text())
        counts = []
        for scale in ("smoke", "default", "paper"):
            try:
                counts.append(f"{scale}={len(sweep.load(f, scale).variants)}")
            except sweep.SweepError:
                pass
        print(f"{f}: {raw.get('experiment')} — {raw.get('description', '')}\n    variants: {', '.join(counts)}")
    return 0


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    from jaxbench.sweep import SweepError

    try:
        return {"sweep": _sweep, "plot": _plot, "list": _list}[args.cmd](args)
    except (SweepError, FileNotFoundError) as e:
        sys.stderr.write(f"jaxbench: error: {e}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("jaxbench: interrupted (finished chunks are kept; re-run to resume)\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
