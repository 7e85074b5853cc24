"""`jaxbench` command line (also ``python -m jaxbench``).

    jaxbench sweep SWEEP.toml [--scale smoke|default|paper] [--out DIR] [--dry-run] [--fresh]
                              [--memory-budget GiB] [--distributed [--coordinator H:P ...]]
    jaxbench plot RESULTS_DIR
    jaxbench list [--dir sweeps]
    jaxbench report [--results results] [--out results/REPORT.md] [--readme README.md]
    jaxbench tpu-sweep --tpu NAME --zone ZONE [--sweep FILE ...] [--scale paper] [--dry-run]

Exit code 0 on success; 2 with one line on stderr for bad input.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

CACHE_ENV = "JAXBENCH_CACHE_DIR"


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
    s.add_argument("--no-plot", action="store_true", help="write tables only (draw later: jaxbench plot)")
    s.add_argument("--memory-budget", type=float, default=None, metavar="GiB",
                   help="memory per chunk per device, GiB (default: half the accelerator's memory, "
                        "a quarter of RAM on CPU); chunk sizes come from XLA's memory analysis")
    s.add_argument("--max-chunk", type=int, default=None, help="most variants in one chunk (default 1024)")
    s.add_argument("--inner-batch", default="auto", metavar="auto|0|N",
                   help="chunk layout on one device: lax.map over sub-batches of N vmapped variants, "
                        "0 = one vmap over the chunk, auto (default) = chosen per bucket")
    s.add_argument("--distributed", action="store_true",
                   help="multi-process run via jax.distributed (auto-detected on Cloud TPU)")
    s.add_argument("--coordinator", default=None, help="host:port of process 0 (or JAXBENCH_COORDINATOR)")
    s.add_argument("--num-processes", type=int, default=None, help="or JAXBENCH_NUM_PROCESSES")
    s.add_argument("--process-id", type=int, default=None, help="or JAXBENCH_PROCESS_ID")
    pl = sub.add_parser("plot", help="redraw the figures of a results directory")
    pl.add_argument("results_dir")
    rp = sub.add_parser("report", help="claim checks of every results directory -> REPORT.md")
    rp.add_argument("--results", default="results", help="folder of results directories (default results)")
    rp.add_argument("--out", default=None, help="report file (default <results>/REPORT.md)")
    rp.add_argument("--readme", default=None, help="also regenerate this README's verdict table")
    ls = sub.add_parser("list", help="list sweep files and their presets")
    ls.add_argument("--dir", default="sweeps")
    t = sub.add_parser("tpu-sweep", help="run sweeps on a Cloud TPU VM slice with gcloud")
    t.add_argument("--tpu", required=True, help="TPU VM name")
    t.add_argument("--zone", required=True)
    t.add_argument("--project", default=None)
    t.add_argument("--sweep", action="append", default=None, help="sweep file (repeatable; default: all)")
    t.add_argument("--scale", default="paper")
    t.add_argument("--dry-run", action="store_true", help="print every command, run none")
    return p


def compilation_cache() -> str | None:
    """Turns on XLA's persistent compilation cache for CLI sweeps and returns its folder.

    A re-run of a sweep (a resume, ``--fresh``, the same buckets in another sweep file) then
    loads its compiled bucket programs instead of compiling them again. The folder is
    ``$JAXBENCH_CACHE_DIR`` (default ``~/.cache/jaxbench/xla``; it grows with every new program
    and may be deleted at any time); ``JAXBENCH_CACHE_DIR=off`` disables it, and a cache already
    set up for JAX (``JAX_COMPILATION_CACHE_DIR``) is used as it is.
    """
    import jax

    if jax.config.jax_compilation_cache_dir:
        return jax.config.jax_compilation_cache_dir
    where = os.environ.get(CACHE_ENV, str(Path.home() / ".cache" / "jaxbench" / "xla"))
    if where.strip().lower() in ("", "off", "0", "none"):
        return None
    jax.config.update("jax_compilation_cache_dir", where)
    return where


def _sweep(args) -> int:
    from jaxbench import sweep

    budget = None
    if args.memory_budget is not None:
        if not args.memory_budget > 0:
            raise sweep.SweepError(f"--memory-budget must be > 0, got {args.memory_budget}")
        budget = int(args.memory_budget * 2**30)
    sw = sweep.load(args.sweep_file, args.scale)  # validates before anything is written
    if args.distributed:
        from jaxbench import distributed
        try:
            distributed.initialize(args.coordinator, args.num_processes, args.process_id)
        except ValueError as e:
            raise sweep.SweepError(str(e)) from None
    if args.max_chunk is not None and args.max_chunk <= 0:
        raise sweep.SweepError(f"--max-chunk must be > 0, got {args.max_chunk}")
    inner = args.inner_batch
    if inner != "auto":
        if not inner.isdigit():
            raise sweep.SweepError(f"--inner-batch must be auto, 0 or a positive integer, got {inner!r}")
        inner = int(inner)
    chunk = {"max_chunk": args.max_chunk} if args.max_chunk else {}
    compilation_cache()
    if args.dry_run:
        print(sweep.dry_run(args.sweep_file, args.scale, budget_bytes=budget, inner_batch=inner, **chunk))
        print(f"  results -> {args.out or sweep.default_out(sw)}")
        return 0
    out = sweep.run(args.sweep_file, args.scale, out=args.out, fresh=args.fresh,
                    progress=not args.no_progress, budget_bytes=budget, plot=not args.no_plot,
                    inner_batch=inner, **chunk)
    print(f"results in {out}")
    return 0


def _plot(args) -> int:
    from jaxbench import experiments, store

    res = store.load(args.results_dir)
    for p in experiments.of_results(res.meta).plot(Path(args.results_dir)):
        print(p)
    return 0


def _report(args) -> int:
    from jaxbench import report
    from jaxbench.sweep import SweepError

    try:
        print(report.write_report(args.results, args.out, args.readme))
    except ValueError as e:
        raise SweepError(str(e)) from None
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


def _tpu(args) -> int:
    from jaxbench import sweep, tpu

    files = args.sweep or [str(p) for p in sorted(Path("sweeps").glob("*.toml"))]
    for f in files:
        sweep.load(f, args.scale)  # fail before any gcloud command on a bad sweep
    cmds = tpu.commands(args.tpu, args.zone, files, args.scale, project=args.project)
    return tpu.execute(cmds, dry_run=args.dry_run)


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    from jaxbench.sweep import SweepError

    try:
        return {"sweep": _sweep, "plot": _plot, "list": _list, "report": _report, "tpu-sweep": _tpu}[args.cmd](args)
    except (SweepError, FileNotFoundError) as e:
        sys.stderr.write(f"jaxbench: error: {e}\n")
        return 2
    except OSError as e:  # unwritable folder, disk full, ...: every file is written atomically
        where = f": {e.filename}" if e.filename else ""
        sys.stderr.write(f"jaxbench: error: {e.strerror or e}{where}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("jaxbench: interrupted (finished chunks are kept; re-run to resume)\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
