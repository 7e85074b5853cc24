"""Every sweep file's smoke preset runs end to end through the CLI and writes every figure."""

import json
from pathlib import Path

import pytest

from jaxbench import cli, store

SWEEPS = sorted((Path(__file__).resolve().parents[1] / "sweeps").glob("*.toml"))


@pytest.mark.parametrize("path", SWEEPS, ids=[p.stem for p in SWEEPS])
def test_smoke_preset_end_to_end(path, smoke_run, capsys):
    if path.stem in ("benign_mnist", "arch_bounds_mnist"):  # real data: `make install` provides it
        from jaxbench import datasets
        try:
            datasets.mnist_files("train")
        except datasets.MissingDataset as e:
            pytest.skip(f"MNIST absent: {e}")
    out = smoke_run(path.stem)  # `jaxbench sweep <path> --scale smoke` (conftest)
    capsys.readouterr()
    res = store.load(out)
    assert res.meta["scale"] == "smoke" and len(res.table["variant"]) == res.meta["n_variants"]
    # one compiled program per bucket (distinct static shape), none per variant or chunk
    assert [b["compiles"] for b in res.meta["buckets"]] == [1] * res.meta["n_buckets"]
    assert len({json.dumps(b["static"], sort_keys=True) for b in res.meta["buckets"]}) == res.meta["n_buckets"]
    pngs = sorted(out.glob("*.png"))
    assert pngs and all(p.with_suffix(".pdf").exists() and p.stat().st_size > 1000 for p in pngs)
    # plotting reads only files: redraw from disk
    assert cli.main(["plot", str(out)]) == 0
    assert capsys.readouterr().out.count(".png") == len(pngs)


def _presets(path):
    import tomllib
    return ["default", *sorted(tomllib.loads(path.read_text()).get("presets", {}).keys() - {"default"})]


@pytest.mark.parametrize("path,scale", [(p, s) for p in SWEEPS for s in _presets(p)],
                         ids=[f"{p.stem}-{s}" for p in SWEEPS for s in _presets(p)])
def test_every_preset_passes_validation(path, scale):
    """Every preset of every sweep file (paper and a file's own ones such as free_energy's `wide`,
    which no test runs) loads with its values checked by the experiment: no unknown key, no bad
    value waits for the user who first runs it."""
    from jaxbench import sweepfile
    sw = sweepfile.load(path, scale)
    assert sw.scale == scale and len(sw.variants) > 0
