"""Every sweep file's smoke preset runs end to end through the CLI and writes every figure."""

from pathlib import Path

import pytest

from jaxbench import cli, store

SWEEPS = sorted((Path(__file__).resolve().parents[1] / "sweeps").glob("*.toml"))


@pytest.mark.parametrize("path", SWEEPS, ids=[p.stem for p in SWEEPS])
def test_smoke_preset_end_to_end(path, tmp_path, capsys):
    out = tmp_path / path.stem
    assert cli.main(["sweep", str(path), "--scale", "smoke", "--out", str(out), "--no-progress"]) == 0
    res = store.load(out)
    assert res.meta["scale"] == "smoke" and len(res.table["variant"]) == res.meta["n_variants"]
    pngs = sorted(out.glob("*.png"))
    assert pngs and all(p.with_suffix(".pdf").exists() and p.stat().st_size > 1000 for p in pngs)
    # plotting reads only files: redraw from disk
    assert cli.main(["plot", str(out)]) == 0
    assert capsys.readouterr().out.count(".png") == len(pngs)
