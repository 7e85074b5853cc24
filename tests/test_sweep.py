"""The sweep engine: vmapped == alone, one compilation per bucket, resume, bad input, divergence."""

import functools
import os
import re
import subprocess
import sys
import types

import jax
import numpy as np
import pytest

from conftest import ROOT, TINY, write_sweep
from jaxbench import cli, experiments, store, sweep


def _table(d):
    return store.load(d).table


def test_expansion_presets_and_zip(tmp_path):
    f = write_sweep(tmp_path / "s.toml", TINY + """
[zip]
lr = [0.5, 1.0, 2.0]
alpha = [1.0, 2.0, 4.0]
[presets.smoke]
seeds = [5]
[presets.smoke.fixed]
width = 4
[presets.smoke.grid]
depth = [2, 3]
""")
    sw = sweep.load(f)
    assert len(sw.variants) == 2 * 2 * 3 * 2
    assert {(v["lr"], v["alpha"]) for v in sw.variants} == {(0.5, 1.0), (1.0, 2.0), (2.0, 4.0)}
    sm = sweep.load(f, "smoke")  # the preset moved width from grid to fixed
    assert len(sm.variants) == 2 * 2 * 3 and {v["width"] for v in sm.variants} == {4}
    assert {v["seed"] for v in sm.variants} == {5}
    buckets = sweep.plan(sm)
    assert len(buckets) == 2 and all(len(b.variant_ids) == 6 for b in buckets)


def test_vmapped_chunk_equals_each_variant_alone(tmp_path):
    f = write_sweep(tmp_path / "s.toml", TINY.replace("eta = [0.0, 0.2]", "eta = [0.0, 0.2]\nlr = [0.5, 2.0]"))
    out = sweep.run(f, out=tmp_path / "out", progress=False, plot=False, inner_batch=0)  # one vmap per chunk
    assert [b["inner_batch"] for b in store.load(out).meta["buckets"]] == [0, 0]
    t = _table(out)
    sw = sweep.load(f)
    mod = experiments.get("example")
    for i in (0, 3, 6, 13):
        v = sw.variants[i]
        static = sweep._make_static(mod, {k: v[k] for k in sweep._static_keys(mod)})
        traced = {k: np.float32(v[k]) for k in sweep._traced_keys(mod) if k != "seed"}
        alone = jax.jit(functools.partial(mod.run_one, static))(traced, jax.random.PRNGKey(v["seed"]))
        row = int(np.flatnonzero(t["variant"] == i)[0])
        for k in ("train_loss", "clean_test_err", "weight_move", "steps_to_fit"):
            np.testing.assert_allclose(t[k][row], float(alone[k]), rtol=2e-4, atol=1e-5, err_msg=f"{k} of variant {i}")


def test_compiles_once_per_bucket_not_per_variant(tmp_path):
    f = write_sweep(tmp_path / "s.toml", TINY.replace("[grid]", "[grid]\ndepth = [2, 3]"))
    out = sweep.run(f, out=tmp_path / "out", progress=False, plot=False)
    meta = store.load(out).meta
    assert meta["n_variants"] == 16 and meta["n_buckets"] == 4
    assert [b["traces"] for b in meta["buckets"]] == [1, 1, 1, 1]  # run_one traced once per bucket
    assert [b["compiles"] for b in meta["buckets"]] == [1, 1, 1, 1]  # and compiled once


def test_resume_computes_only_missing_chunks(tmp_path, monkeypatch):
    f = write_sweep(tmp_path / "s.toml", TINY)
    full = sweep.run(f, out=tmp_path / "full", progress=False, plot=False, budget_bytes=1)
    writes = []
    real = store.write_chunk

    def flaky(*a, **k):
        if len(writes) == 3:
            raise KeyboardInterrupt  # the process dies after three chunks
        writes.append(a[1])
        return real(*a, **k)

    monkeypatch.setattr(store, "write_chunk", flaky)
    with pytest.raises(KeyboardInterrupt):
        sweep.run(f, out=tmp_path / "part", progress=False, plot=False, budget_bytes=1)
    assert not (tmp_path / "part" / "table.csv").exists()
    monkeypatch.setattr(store, "write_chunk", lambda *a, **k: (writes.append(a[1]), real(*a, **k)))
    sweep.run(f, out=tmp_path / "part", progress=False, plot=False, budget_bytes=1)
    assert len(writes) == 8 and len(set(writes)) == 8  # 3 before the crash + 5 missing, none twice
    a, b = _table(full), _table(tmp_path / "part")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_diverging_variant_is_flagged_and_its_chunk_mates_finish(tmp_path):
    f = write_sweep(tmp_path / "s.toml", TINY.replace("eta = [0.0, 0.2]", "eta = [0.0]\nlr = [1.0, 1e30]"))
    t = _table(sweep.run(f, out=tmp_path / "o", progress=False, plot=False))
    bad = t["lr"] > 1e20
    assert t["diverged"][bad].all() and not t["diverged"][~bad].any()
    assert np.isfinite(t["train_loss"][~bad]).all()


BAD = {
    "malformed": ("experiment = 'benign_overfitting'\n[grid\nwidth = [1]", "malformed TOML"),
    "unknown_key": (TINY.replace("d = 4", "d = 4\nwidht = 3"), "unknown key 'widht'"),
    "unknown_top": ("colour = 1\n" + TINY, "unknown key 'colour'"),
    "empty_grid": (TINY.replace("width = [4, 8]", "width = []"), "non-empty list"),
    "neg_width": (TINY.replace("width = [4, 8]", "width = [4, -8]"), "width = -8: must be > 0"),
    "zero_width": (TINY.replace("width = [4, 8]", "width = [0]"), "width = 0: must be > 0"),
    "eta_high": (TINY.replace("eta = [0.0, 0.2]", "eta = [0.0, 0.7]"), "eta = 0.7: must lie in [0.0, 0.5]"),
    "eta_neg": (TINY.replace("eta = [0.0, 0.2]", "eta = [-0.1]"), "eta = -0.1"),
    "nan": (TINY.replace("eta = [0.0, 0.2]", "eta = [nan]"), "must be finite"),
    "wrong_type": (TINY.replace("n = 16", "n = 'many'"), "n = 'many': expected int"),
    "bad_scale": (TINY, "no [presets.paper]"),
    "unknown_experiment": (TINY.replace('"example"', '"nope"'), "unknown experiment 'nope'"),
    "cross_check": (TINY.replace("d = 4", "d = 1"), "d = 1: the sphere task needs d >= 2"),
    "inner_batch": (TINY, "--inner-batch must be auto, 0 or a positive integer, got '-2'"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_one_clear_line_nonzero_exit_nothing_written(case, tmp_path, capsys):
    body, expected = BAD[case]
    f = write_sweep(tmp_path / "s.toml", body)
    out = tmp_path / "out"
    args = ["sweep", str(f), "--out", str(out)] + {"bad_scale": ["--scale", "paper"],
                                                    "inner_batch": ["--inner-batch=-2"]}.get(case, [])
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("jaxbench: error:") and expected in err[0], err
    assert not out.exists()


def test_unreadable_file_and_unwritable_output_one_line_nothing_written(tmp_path, capsys):
    """A sweep file that is not UTF-8, --out under an existing file, --out where nothing may be
    created: one line, exit 2, no results."""
    latin = tmp_path / "latin.toml"
    latin.write_bytes(TINY.encode() + "# caf\xe9\n".encode("latin-1"))
    ok = write_sweep(tmp_path / "ok.toml", TINY)
    (tmp_path / "afile").write_text("x")
    cases = [([str(latin), "--out", str(tmp_path / "o1")], "not UTF-8", tmp_path / "o1"),
             ([str(ok), "--out", str(tmp_path / "afile" / "o2")], "cannot write results", tmp_path / "afile"),
             ([str(ok), "--out", "/sys/jaxbench-test-out"], "cannot write results", None)]
    for args, expected, path in cases:
        assert cli.main(["sweep", *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("jaxbench: error:") and expected in err[0], err
    assert not (tmp_path / "o1").exists() and (tmp_path / "afile").read_text() == "x"


def test_missing_file_and_cli_subprocess(tmp_path):
    r = subprocess.run([sys.executable, "-m", "jaxbench", "sweep", str(tmp_path / "nope.toml")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "not found" in r.stderr
    assert not (tmp_path / "results").exists()


def test_dry_run_prints_plan_and_writes_nothing(tmp_path, capsys):
    f = write_sweep(tmp_path / "s.toml", TINY)
    assert cli.main(["sweep", str(f), "--dry-run", "--out", str(tmp_path / "o")]) == 0
    text = capsys.readouterr().out
    assert "8 variants, 2 buckets" in text and "bucket 1: width=8" in text
    assert not (tmp_path / "o").exists()


def test_background_compilation_gives_the_sequential_table(tmp_path, monkeypatch):
    """Buckets traced and compiled in 2 background threads (the default) or one at a time when
    needed (JAXBENCH_COMPILE_THREADS=0): the same table, bit for bit, one compilation per bucket."""
    f = write_sweep(tmp_path / "s.toml", TINY.replace("width = [4, 8]", "width = [4, 8, 16]"))
    tables = {}
    for threads in ("0", "2"):
        monkeypatch.setenv("JAXBENCH_COMPILE_THREADS", threads)
        out = sweep.run(f, out=tmp_path / threads, progress=False, plot=False)
        tables[threads], meta = _table(out), store.load(out).meta
        assert meta["compile_threads"] == int(threads)
        assert [b["compiles"] for b in meta["buckets"]] == [1, 1, 1]
        assert all(b["wait_s"] >= 0 and b["trace_s"] > 0 for b in meta["buckets"])
    for k in tables["0"]:
        np.testing.assert_array_equal(tables["0"][k], tables["2"][k], err_msg=k)
    monkeypatch.setenv("JAXBENCH_COMPILE_THREADS", "many")
    with pytest.raises(sweep.SweepError, match="JAXBENCH_COMPILE_THREADS"):
        sweep.run(f, out=tmp_path / "bad", progress=False, plot=False)
    assert not (tmp_path / "bad").exists()


def test_cpu_fusion_emitters_are_the_experiments_choice_and_change_no_table(tmp_path, monkeypatch):
    """XLA:CPU's elemental emitters (an experiment's ``CPU_FUSION_EMITTERS = False``, or
    JAXBENCH_CPU_FUSION_EMITTERS) compile other code for the same programs: the same table to
    float32 rounding, the choice recorded per bucket, a bad setting one clear error."""
    f = write_sweep(tmp_path / "s.toml", TINY)
    module = experiments.get("example")
    monkeypatch.delenv("JAXBENCH_CPU_FUSION_EMITTERS", raising=False)
    assert sweep.cpu_fusion_emitters(module) is True
    monkeypatch.setattr(module, "CPU_FUSION_EMITTERS", False, raising=False)
    assert sweep.cpu_fusion_emitters(module) is False
    off = sweep.run(f, out=tmp_path / "off", progress=False, plot=False)
    monkeypatch.setenv("JAXBENCH_CPU_FUSION_EMITTERS", "1")  # overrides the experiment's choice
    on = sweep.run(f, out=tmp_path / "on", progress=False, plot=False)
    assert [b["fusion_emitters"] for b in store.load(off).meta["buckets"]] == [False, False]
    assert [b["fusion_emitters"] for b in store.load(on).meta["buckets"]] == [True, True]
    t_off, t_on = _table(off), _table(on)
    for k in t_on:
        np.testing.assert_allclose(np.asarray(t_off[k], float), np.asarray(t_on[k], float),
                                   rtol=1e-5, atol=1e-6, err_msg=k)
    monkeypatch.setenv("JAXBENCH_CPU_FUSION_EMITTERS", "yes")
    with pytest.raises(sweep.SweepError, match="JAXBENCH_CPU_FUSION_EMITTERS"):
        sweep.run(f, out=tmp_path / "bad", progress=False, plot=False)
    assert not (tmp_path / "bad").exists()


def test_every_layout_gives_the_same_table(tmp_path):
    f = write_sweep(tmp_path / "s.toml", TINY.replace("seeds = 2", "seeds = 5").replace("width = [4, 8]", "width = [8]"))
    a = sweep.run(f, out=tmp_path / "vmap", progress=False, plot=False, inner_batch=0)
    ta = _table(a)
    for inner in (1, 3, "auto"):
        b = sweep.run(f, out=tmp_path / f"map{inner}", progress=False, plot=False, inner_batch=inner)
        tb, meta = _table(b), store.load(b).meta
        np.testing.assert_array_equal(ta["variant"], tb["variant"])
        for k in ("train_loss", "clean_test_err", "weight_move", "steps_to_fit"):
            np.testing.assert_allclose(ta[k], tb[k], rtol=2e-4, atol=1e-5, err_msg=f"{k}, inner_batch={inner}")
        for bk in meta["buckets"]:
            assert bk["compiles"] == 1  # chunk sizes are multiples of the sub-batch: no remainder program
            assert bk["chunk_size"] % max(bk["inner_batch"], 1) == 0
        # auto on one CPU device: these tiny variants run as one vmap
        assert [bk["inner_batch"] for bk in meta["buckets"]] == ([0] if inner == "auto" else [inner])
    assert [bk["chunk_size"] for bk in store.load(tmp_path / "map3").meta["buckets"]] == [12]  # 10 variants


def test_an_experiment_can_set_its_cpu_layout():
    """``CPU_INNER_BATCH`` on the module replaces the FLOP rule (run_one's uneven loops); an explicit
    inner_batch still wins."""
    ex = experiments.get("example")
    mod = types.SimpleNamespace(**{k: getattr(ex, k) for k in ("NAME", "PARAMS", "run_one", "plot")},
                                CPU_INNER_BATCH=1)
    mesh = jax.sharding.Mesh(np.array(jax.local_devices()[:1]), ("v",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("v"))
    bucket = sweep.Bucket(dict(width=16, depth=3, n=128, n_test=128, d=16, steps=200, n_log=2), (0,))
    sw = types.SimpleNamespace(module=mod)
    assert sweep._Program(sw, bucket, sharding).inner_batch == (1 if jax.default_backend() == "cpu" else 0)
    assert sweep._Program(sw, bucket, sharding, inner_batch=0).inner_batch == 0


def test_auto_layout_rule_follows_the_flop_count():
    """The per-bucket CPU rule: small variants in one vmap, larger ones in lax.map over vmapped batches."""
    assert sweep.cpu_inner_batch(sweep.CPU_VMAP_BELOW_FLOPS / 2) == 0
    assert sweep.cpu_inner_batch(sweep.CPU_VMAP_BELOW_FLOPS * 2) == sweep.CPU_INNER_BATCH
    mesh = jax.sharding.Mesh(np.array(jax.local_devices()[:1]), ("v",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("v"))
    flops = {}
    for width in (16, 256):
        sw = types.SimpleNamespace(module=experiments.get("example"))  # all a _Program reads here
        bucket = sweep.Bucket(dict(width=width, depth=3, n=128, n_test=128, d=16, steps=200, n_log=2), (0,))
        prog = sweep._Program(sw, bucket, sharding)
        flops[width] = prog.variant_flops
        assert (prog.traces, prog.compiles) == (1, 0)  # the FLOP count reads the bucket's one trace
        assert prog.inner_batch == (0 if width == 16 else sweep.CPU_INNER_BATCH)
    # closed form, loop bodies once: a GD step is 6 n P FLOPs less the input gradient of the first
    # layer (2 n d w, never formed), plus the train + test forward passes (2 (n + n_test) P) of the
    # metrics, traced twice (at step 0 and in the logged segments); P = d w + w^2 + w weights
    for width, f in flops.items():
        n, n_test, d, P = 128, 128, 16, 16 * width + width**2 + width
        assert f == 6 * n * P - 2 * n * d * width + 2 * 2 * (n + n_test) * P


def test_cli_reuses_compiled_programs_from_its_cache(tmp_path):
    """`jaxbench sweep` fills XLA's persistent cache; a --fresh re-run loads from it, same table."""
    f = write_sweep(tmp_path / "s.toml", TINY)
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}  # the CLI's own default
    # every program is cached whatever its compile time (the suite's 0.2 s floor made this flaky
    # under load: a program compiled in 0.15 s, then in 0.25 s, entered the cache on the re-run)
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    cache = tmp_path / "xla"

    def cli_run(out, *extra, cache_dir=str(cache)):
        r = subprocess.run([sys.executable, "-m", "jaxbench", "sweep", str(f), "--out", str(out), "--no-progress",
                            "--no-plot", *extra], capture_output=True, text=True, env={**env, cli.CACHE_ENV: cache_dir})
        assert r.returncode == 0, r.stderr[-2000:]
        return store.load(out).meta

    cli_run(tmp_path / "a")
    first = _table(tmp_path / "a")
    entries = {p.name for p in cache.iterdir()}
    assert entries  # the bucket programs were written to the cache
    cli_run(tmp_path / "a", "--fresh")  # recompute every chunk, programs loaded from the cache
    assert {p.name for p in cache.iterdir()} == entries  # nothing new was compiled
    cli_run(tmp_path / "b", cache_dir="off")
    assert {p.name for p in cache.iterdir()} == entries  # "off": the cache was not touched
    for out in ("a", "b"):
        np.testing.assert_array_equal(_table(tmp_path / out)["train_loss"], first["train_loss"])


def test_matmul_precision_policy_is_baked_into_every_bucket_program(tmp_path, capsys):
    """Full float32 products unless the experiment opts out (GPUs default float32 dots to TF32):
    the compiled program's dots carry the precision, meta.json records it, a bad value is one line."""
    def dot_precisions(f):
        sw = sweep.load(f)
        with sweep._context(sw):
            prog = sweep._Program(sw, sweep.plan(sw)[0], None)
        dots = [ln for ln in prog.compiled(2).as_text().splitlines() if re.search(r"\bdot\(", ln)]
        assert dots
        return {(re.findall(r"operand_precision=\{(\w+),", ln) or ["default"])[0] for ln in dots}

    f = write_sweep(tmp_path / "s.toml", TINY)
    assert dot_precisions(f) == {"highest"}
    src = (ROOT / "jaxbench" / "experiments" / "example.py").read_text()
    for value, expected in (("default", {"default"}), ("tensorfloat32", {"high"}), ("fast", None)):
        (tmp_path / f"ex_{value}.py").write_text(src + f"\nMATMUL_PRECISION = {value!r}\n")
        g = write_sweep(tmp_path / f"{value}.toml", TINY.replace('"example"', f'"ex_{value}.py"'))
        if expected is None:
            assert cli.main(["sweep", str(g), "--out", str(tmp_path / "o")]) == 2
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and "MATMUL_PRECISION = 'fast'" in err[0] and not (tmp_path / "o").exists()
        else:
            assert dot_precisions(g) == expected
    out = sweep.run(f, out=tmp_path / "r", progress=False, plot=False)
    assert store.load(out).meta["matmul_precision"] == "highest"


def test_git_dirty_sees_a_changed_tracked_file(tmp_path):
    """meta.json's git_dirty: false on a clean checkout, true once a tracked file under the folder
    changes (untracked files do not count)."""
    import shutil

    if shutil.which("git") is None:
        pytest.skip("no git")
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "mod.py").write_text("x = 1\n")
    env = ["-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(["git", *env, "add", "."], cwd=tmp_path, check=True)
    subprocess.run(["git", *env, "commit", "-qm", "init"], cwd=tmp_path, check=True)
    (pkg / "new.py").write_text("y = 2\n")
    assert sweep._git_dirty(pkg) is False
    (pkg / "mod.py").write_text("x = 2\n")
    assert sweep._git_dirty(pkg) is True
