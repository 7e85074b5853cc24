"""Cloud TPU launch: the gcloud steps that run a sweep on every worker of a TPU VM slice.

1. pack the committed project (``git archive HEAD``);
2. copy it to every worker (``--worker=all``);
3. install it there in a venv, with the TPU build of jax (``jax[tpu]``);
4. start the sweep on all workers at once with ``--distributed`` (JAX auto-detects the slice's
   coordinator, process count and ids), each worker logging to ``~/jaxbench/sweep-<stem>.log``;
5. copy the merged results from worker 0 back into ``results/``.

Every step is idempotent, so re-running the same command after a pre-emption resumes the sweep
from the chunks still on the workers' disks.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

ARCHIVE = "jaxbench-src.tar.gz"
REMOTE = "~/jaxbench"


def _gcloud(verb: str, tpu: str, zone: str, project: str | None, *rest: str, worker: str = "all") -> list[str]:
    cmd = ["gcloud", "compute", "tpus", "tpu-vm", verb]
    if verb == "ssh":
        cmd.append(tpu)
    cmd += list(rest) + [f"--zone={zone}", f"--worker={worker}"]
    return cmd + ([f"--project={project}"] if project else [])


def commands(tpu: str, zone: str, sweeps: list[str], scale: str = "paper", project: str | None = None) -> list[list[str]]:
    """The full command sequence (argv lists) for running ``sweeps`` at ``scale`` on slice ``tpu``."""
    install = (f"mkdir -p {REMOTE} && tar xzf ~/{ARCHIVE} -C {REMOTE} && cd {REMOTE} && "
               "(test -x .venv/bin/python || python3 -m venv .venv) && "
               ".venv/bin/pip install -q -e . && .venv/bin/pip install -q 'jax[tpu]'")
    cmds = [
        ["git", "archive", "--format=tar.gz", "-o", f"/tmp/{ARCHIVE}", "HEAD"],
        _gcloud("scp", tpu, zone, project, f"/tmp/{ARCHIVE}", f"{tpu}:~/{ARCHIVE}"),
        _gcloud("ssh", tpu, zone, project, f"--command={install}"),
    ]
    for f in sweeps:
        stem = Path(f).stem
        out = f"results/{stem}" if scale == "default" else f"results/{stem}-{scale}"
        run = (f"cd {REMOTE} && .venv/bin/jaxbench sweep {shlex.quote(f)} --scale {scale} --distributed "
               f"--no-progress > sweep-{stem}.log 2>&1")
        cmds.append(_gcloud("ssh", tpu, zone, project, f"--command={run}"))
        cmds.append(["mkdir", "-p", "results"])
        cmds.append(_gcloud("scp", tpu, zone, project, "--recurse", f"{tpu}:{REMOTE}/{out}", "results/", worker="0"))
    return cmds


def execute(cmds: list[list[str]], dry_run: bool = False) -> int:
    """Prints each command; runs it unless dry_run. Stops at the first failure (its exit code)."""
    for cmd in cmds:
        print(shlex.join(cmd), flush=True)
        if not dry_run:
            r = subprocess.run(cmd)
            if r.returncode:
                sys.stderr.write(f"jaxbench: error: command failed ({r.returncode}): {shlex.join(cmd)}\n")
                return r.returncode
    return 0
