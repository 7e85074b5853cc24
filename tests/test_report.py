"""jaxbench.report: claim checks -> REPORT.md; experiments of one's own, by module and by file."""

import os
import re
import shutil
import subprocess
import sys

import numpy as np

from conftest import ROOT, TINY, write_sweep
from jaxbench import cli, report, store

def _readme_blocks():
    """The README's own-experiment example (its Python file and its sweep file), as printed there."""
    text = (ROOT / "README.md").read_text()
    code = re.search(r"```python\n(# ~/lab/slope.py.*?)```", text, re.S).group(1)
    toml = re.search(r"```toml\n(# ~/lab/slope.toml.*?)```", text, re.S).group(1)
    return code, toml


OWN, README_SWEEP = _readme_blocks()

SWEEP = '''
experiment = "{name}"
seeds = 2
[fixed]
n = 64
[grid]
a = [-1.0, 0.5, 2.0]
'''


def test_own_experiment_by_module_and_by_file(tmp_path):
    """An experiment module written outside the repository runs unchanged, named by import path
    (on PYTHONPATH) or by file (relative to the sweep file); table, figure and report follow."""
    lab = tmp_path / "lab"
    (lab / "mylab").mkdir(parents=True)
    (lab / "mylab" / "__init__.py").write_text("")
    (lab / "mylab" / "slope.py").write_text(OWN)
    shutil.copy(lab / "mylab" / "slope.py", tmp_path / "slope_here.py")
    env_path = {"PYTHONPATH": f"{lab}:{ROOT}"}
    for name, where in (("mylab.slope", "by_module"), ("slope_here.py", "by_file")):
        f = write_sweep(tmp_path / f"{where}.toml", SWEEP.format(name=name))
        out = tmp_path / "results" / where
        r = subprocess.run([sys.executable, "-m", "jaxbench", "sweep", str(f), "--out", str(out), "--no-progress"],
                           capture_output=True, text=True, cwd=tmp_path, env={**_env(), **env_path})
        assert r.returncode == 0, r.stderr[-2000:]
        t = store.load(out).table
        assert len(t["variant"]) == 6 and np.all(np.abs(t["a_hat"] - t["a"]) < 0.2)
        assert (out / "slope.png").stat().st_size > 1000

    r = subprocess.run([sys.executable, "-m", "jaxbench", "report", "--results", str(tmp_path / "results")],
                       capture_output=True, text=True, cwd=tmp_path, env={**_env(), **env_path})
    assert r.returncode == 0, r.stderr[-2000:]
    text = (tmp_path / "results" / "REPORT.md").read_text()
    assert text.count("least squares recovers a") == 2 and "**reproduced**" in text
    assert "](by_file/slope.png)" in text


def test_readme_example_runs_as_printed(tmp_path):
    (tmp_path / "slope.py").write_text(OWN)
    f = write_sweep(tmp_path / "slope.toml", README_SWEEP)
    assert cli.main(["sweep", str(f), "--out", str(tmp_path / "results" / "slope"), "--no-progress"]) == 0
    t = store.load(tmp_path / "results" / "slope").table
    assert len(t["variant"]) == 4 * 2 * 3 and (tmp_path / "results" / "slope" / "slope.png").exists()
    assert [c.verdict for c in report.checks_of(tmp_path / "results" / "slope")] == ["reproduced"]


def _env():
    return dict(os.environ)


def test_unknown_and_incomplete_experiments_are_one_line_errors(tmp_path, capsys):
    (tmp_path / "half.py").write_text("NAME = 'half'\nPARAMS = {}\n")
    for name, expected in (("nope", "unknown experiment 'nope'"), ("missing.py", "experiment file not found"),
                           ("half.py", "lacks run_one, plot")):
        f = write_sweep(tmp_path / "s.toml", TINY.replace('"example"', f'"{name}"'))
        assert cli.main(["sweep", str(f), "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expected in err[0], err
        assert not (tmp_path / "o").exists()


def test_report_on_committed_results_has_every_sweep_and_verdict(tmp_path):
    out = report.write_report(ROOT / "results", tmp_path / "REPORT.md")
    text = out.read_text()
    for d in report.sweep_dirs(ROOT / "results"):
        assert f"## {d.name}" in text
        rows = report.checks_of(d) or []
        for c in rows:
            assert f"**{c.verdict}**" in text


def test_a_failing_criterion_reads_not_reproduced(tmp_path):
    """The same check on a doctored table (the fitted slopes off by 1) flips its verdict."""
    f = write_sweep(tmp_path / "s.toml", SWEEP.format(name="own.py"))
    (tmp_path / "own.py").write_text(OWN)
    out = tmp_path / "res" / "own"
    assert cli.main(["sweep", str(f), "--out", str(out), "--no-progress", "--no-plot"]) == 0
    assert [c.verdict for c in report.checks_of(out)] == ["reproduced"]
    csv = (out / "table.csv").read_text().splitlines()
    col = csv[0].split(",").index("a_hat")
    doctored = [csv[0]] + [",".join(str(float(v) + 1) if i == col else v for i, v in enumerate(r.split(",")))
                           for r in csv[1:]]
    (out / "table.csv").write_text("\n".join(doctored) + "\n")
    assert [c.verdict for c in report.checks_of(out)] == ["not reproduced"]
    assert "| **not reproduced** |" in report.render(tmp_path / "res", tmp_path / "res" / "REPORT.md")
