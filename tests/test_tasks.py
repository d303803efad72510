"""Issue 21's options and tasks: each through its library function against an independent
reference (NumPy, scikit-learn, Optax, a closed form) and end to end through ``jnn train``
(the run folder and the final line); bad values give one clear line and exit 2.

The command-line runs are in-process (``jnn.cli.main``), tiny (1-3 epochs, a few units) and
each combines several options that its checks tell apart."""

import contextlib
import io
import json
import re

import chex
import jax
import numpy as np
import optax
import pytest
from sklearn.decomposition import PCA
from sklearn.metrics import mean_absolute_error, mean_squared_error

import jnn.data as data
from jnn import cli, losses, monitor, nn
from jnn.runs import RunConfig, _builders, _preprocess, _setup, _tasks

TINY = ["--no-progress", "--no-plots", "--overwrite"]


def _train(*argv):
    printed, errors = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(errors):
        rc = cli.main(["train", *argv])
    return rc, printed.getvalue(), errors.getvalue()


def _summary(out):
    return json.loads((out / "summary.json").read_text())


# --------------------------------------------------------------------------- library functions


def test_digit_attributes_against_a_hand_table():
    # even, five or more, prime, closed loop (0, 4, 6, 8, 9), written out digit by digit.
    table = {
        0: (1, 0, 0, 1), 1: (0, 0, 0, 0), 2: (1, 0, 1, 0), 3: (0, 0, 1, 0), 4: (1, 0, 0, 1),
        5: (0, 1, 1, 0), 6: (1, 1, 0, 1), 7: (0, 1, 1, 0), 8: (1, 1, 0, 1), 9: (0, 1, 0, 1),
    }  # fmt: skip
    y = np.array([3, 0, 9, 9, 1, 4, 2, 8, 7, 6, 5])
    np.testing.assert_array_equal(data.digit_attributes(y), np.array([table[d] for d in y]))
    with pytest.raises(ValueError, match=r"digits in \[0, 10\)"):
        data.digit_attributes(np.array([3, 10]))


def test_check_attributes_accepts_0_1_only():
    np.testing.assert_array_equal(data.check_attributes(np.array([0, 1, 1])), [[0], [1], [1]])
    with pytest.raises(ValueError, match=r"needs 0/1 labels.*\[2\]"):
        data.check_attributes(np.array([[0, 1], [2, 1]]), "y_train")


def test_quantile_bins_against_numpy():
    y = np.random.default_rng(0).gamma(2.0, 50.0, size=401)
    bins = data.fit_quantile_bins(y, 4)
    np.testing.assert_allclose(bins.edges, np.percentile(y, [25, 50, 75]))
    labels = data.to_bins(bins, y)
    counts = np.bincount(labels, minlength=4)
    assert counts.min() >= 100 and counts.max() <= 101  # equally many per bin
    for b in range(4):  # every bin predicts its training median
        assert bins.values[b] == np.median(y[labels == b])
    np.testing.assert_allclose(data.from_bins(bins, labels[:5]), bins.values[labels[:5]])
    data.fit_quantile_bins(y, 2)  # just inside
    with pytest.raises(ValueError, match="k >= 2"):
        data.fit_quantile_bins(y, 1)


def test_regression_errors_against_scikit_learn():
    rng = np.random.default_rng(1)
    y, p = rng.normal(size=50) * 30 + 150, rng.normal(size=50) * 30 + 150
    got = _tasks.regression_errors(y, p)
    assert got["rmse"] == pytest.approx(np.sqrt(mean_squared_error(y, p)), rel=1e-12)
    assert got["mae"] == pytest.approx(mean_absolute_error(y, p), rel=1e-12)


def test_attribute_hits_against_a_loop():
    rng = np.random.default_rng(2)
    y, logits = rng.integers(0, 2, (40, 3)), rng.normal(size=(40, 3))
    got = _tasks.attribute_hits(y, logits)
    per = [np.mean([(logits[i, a] > 0) == y[i, a] for i in range(40)]) for a in range(3)]
    np.testing.assert_allclose(got["attribute_accuracy"], per)
    every = np.mean([all((logits[i, a] > 0) == y[i, a] for a in range(3)) for i in range(40)])
    assert got["all_attributes_right"] == pytest.approx(every)


@pytest.mark.parametrize("kind", ["pca", "whiten"])
def test_preprocess_against_scikit_learn(kind):
    ds = data.load_digits()
    config = RunConfig.from_options(preprocess=kind, pca_dims=12)
    stats = _preprocess.fit(config, ds.x_train)
    ours = _preprocess.apply(config, stats, ds.x_test)
    ref = PCA(12, whiten=kind == "whiten", svd_solver="full").fit(ds.x_train.astype(np.float64))
    # jnn whitens by sqrt(variance + 1e-5); scikit-learn by sqrt(variance).
    np.testing.assert_allclose(ours, ref.transform(ds.x_test), rtol=2e-3, atol=2e-3)
    with pytest.raises(ValueError, match="--pca-dims 65 is larger than the 64 features"):
        _preprocess.fit(dataclass_replace(config, pca_dims=65), ds.x_train)
    _preprocess.fit(dataclass_replace(config, pca_dims=64), ds.x_train)  # just inside


def dataclass_replace(config, **changes):
    import dataclasses

    return dataclasses.replace(config, **changes)


def test_builders_follow_the_new_options():
    config = RunConfig.from_options(
        activation="maxout", pieces=3, input_noise=0.2, init="constant", loss="svm",
        schedule="linear", widths=(8,), epochs=4,
    )  # fmt: skip
    model = _builders.build_model(config, 10, (64,))
    assert model.layers[0] == nn.GaussianNoise(0.2)
    assert isinstance(model.layers[1], nn.Maxout) and model.layers[1].pieces == 3
    params, _ = model.init(jax.random.key(0), (2, 64))
    for w in (params["maxout_1"]["w"], params["dense_3"]["w"]):  # the head too
        chex.assert_trees_all_equal(w, np.full(w.shape, 0.01, np.float32))
    assert _builders.build_loss(config) is losses.multiclass_hinge
    schedule = _builders.build_schedule(config, 5)
    reference = optax.linear_schedule(3e-3, 0.0, 20)
    for t in (0, 7, 19, 20, 30):
        np.testing.assert_allclose(schedule(t), reference(t), rtol=1e-6)
    normal = RunConfig.from_options(init="normal", model="cnn", norm="instance", widths=(64,))
    cnn = _builders.build_model(normal, 10, (40, 1))
    assert isinstance(cnn.layers[1], nn.InstanceNorm)
    w = cnn.init(jax.random.key(1), (2, 40, 1))[0]["conv_0"]["w"]
    assert abs(float(np.std(w)) / 0.01 - 1) < 0.1  # 320 draws of N(0, 0.01^2)


def test_identical_units_threshold_inside_and_outside():
    w = np.full((5, 4), 0.5)
    w[2, 3] += 0.5e-6  # relative spread 1e-6 * 0.5 / 0.5000005: just inside 1e-6
    assert list(monitor.identical_units({"dense_0": {"w": w, "b": np.arange(4.0)}})) == ["dense_0"]
    w[2, 3] += 2e-6  # just outside
    assert monitor.identical_units({"dense_0": {"w": w}}) == {}
    conv = np.ones((3, 2, 6))  # a conv layer's filters, one per output channel
    assert list(monitor.identical_units({"conv_1": {"w": conv}})) == ["conv_1"]
    assert monitor.identical_units({"dense_0": {"w": np.ones((4, 1))}}) == {}  # one unit
    found = monitor.diagnose([], params={"dense_0": {"w": conv}})
    assert found[0].startswith("identical units in dense_0: symmetry never broken")


# --------------------------------------------------------------------------- end to end


def test_constant_init_svm_whiten_l1_max_norm_linear_end_to_end(tmp_path):
    out = tmp_path / "run"
    argv = [
        "--dataset", "digits", "--widths", "16,16", "--epochs", "2", "--dropout", "0",
        "--init", "constant", "--loss", "svm", "--preprocess", "whiten", "--pca-dims", "20",
        "--l1", "1e-3", "--max-norm", "0.5", "--schedule", "linear", "--out", str(out), *TINY,
    ]  # fmt: skip
    rc, printed, _ = _train(*argv)
    assert rc == 0, printed
    assert re.search(r"^test accuracy \d+\.\d\d% \(loss", printed.splitlines()[-1])
    assert "identical units in dense_0: symmetry never broken" in printed
    summary = _summary(out)
    stored = json.loads((out / "config.json").read_text())
    assert stored["loss"] == "svm" and stored["pca_dims"] == 20 and stored["max_norm"] == 0.5
    # the linear schedule's last update: lr * (1 - (T - 1) / T), T = 2 epochs x 10 steps
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["learning_rate"] == pytest.approx(3e-3 / 20, rel=1e-5)
    # The stored transform is the one evaluation uses on --resume: spoil it and the result
    # changes; a fresh fit would not notice.
    with np.load(out / "preprocess.npz") as f:
        stored_stats = {k: f[k] for k in f.files}
    assert stored_stats["components"].shape == (20, 64)
    rc, again, _ = _train("--out", str(out), "--resume", "--no-progress", "--no-plots")
    assert rc == 0 and _summary(out)["test_accuracy"] == summary["test_accuracy"]
    np.savez(out / "preprocess.npz", **{**stored_stats, "mean": stored_stats["mean"] + 50.0})
    rc, spoiled, _ = _train("--out", str(out), "--resume", "--no-progress", "--no-plots")
    # (the constant init's scores barely depend on the input: the first layer's outputs do)
    first = lambda s: s["activation_stats"]["dense_0"]["mean"]
    assert rc == 0 and first(_summary(out)) != pytest.approx(first(summary), rel=1e-3)
    # --l1 and --max-norm reach the training step (jnn.regularizers' tests prove the step).
    config = RunConfig.from_json(stored)
    assert _setup.step_options(config, None) == {"l1": 1e-3, "max_norm": 0.5}


def test_attributes_on_a_digits_cnn_with_instance_norm_and_input_noise(tmp_path):
    out = tmp_path / "attrs"
    rc, printed, _ = _train(
        "--dataset", "digits", "--model", "cnn", "--widths", "4", "--norm", "instance",
        "--init", "normal", "--input-noise", "0.1", "--task", "attributes", "--epochs", "1",
        "--out", str(out), "--no-progress", "--overwrite",
    )  # fmt: skip
    assert rc == 0, printed
    line = printed.splitlines()[-1]
    m = re.fullmatch(
        r"test accuracy (\d+\.\d\d)% \(mean over 4 attributes; all attributes right "
        r"(\d+\.\d\d)%\)",
        line,
    )
    assert m, line
    summary = _summary(out)
    per = summary["attributes"]["attribute_accuracy"]
    assert list(per) == ["even", "five_or_more", "prime", "closed_loop"]
    assert float(m[1]) == pytest.approx(100 * np.mean(list(per.values())), abs=0.006)
    assert not (out / "accuracy.png").exists() and (out / "loss.png").exists()
    report = (out / "report.md").read_text()
    assert "no accuracy curve" in report and "| closed_loop |" in report


def test_diabetes_regression_and_bins_side_by_side(tmp_path):
    rc, printed, _ = _train(
        "--dataset", "diabetes", "--widths", "16", "--epochs", "3", "--out", str(tmp_path / "r"),
        *TINY,
    )  # fmt: skip
    assert rc == 0, printed
    m = re.fullmatch(r"test RMSE (\S+) \(MAE (\S+)\)", printed.splitlines()[-1])
    assert m and float(m[2]) < float(m[1]) < 200, printed
    assert _summary(tmp_path / "r")["test_rmse"] == pytest.approx(float(m[1]), rel=1e-3)
    rc, printed, _ = _train(
        "--dataset",
        "diabetes",
        "--bins",
        "4",
        "--widths",
        "16",
        "--epochs",
        "3",
        "--out",
        str(tmp_path / "b"),
        *TINY,
    )
    assert rc == 0, printed
    assert re.fullmatch(r"test RMSE \S+ \(MAE \S+\)", printed.splitlines()[-1])
    assert "plain regression (same network, L2 loss): test RMSE" in printed
    report = (tmp_path / "b" / "report.md").read_text()
    assert "| classifier over 4 quantile bins (this run) |" in report
    assert "| regression, L2 loss (same network and options) |" in report


def _npz(path, y_train, y_test):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(len(y_train) + len(y_test), 6)).astype(np.float32)
    np.savez(
        path, x_train=x[: len(y_train)], y_train=y_train, x_test=x[len(y_train) :], y_test=y_test
    )
    return path


def test_data_files_pose_their_task(tmp_path):
    rng = np.random.default_rng(3)
    floats = _npz(tmp_path / "reg.npz", rng.normal(size=120) + 0.5, rng.normal(size=30))
    rc, printed, _ = _train(
        "--data",
        str(floats),
        "--widths",
        "8",
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--out",
        str(tmp_path / "a"),
        *TINY,
    )
    assert rc == 0 and "regression" in printed.splitlines()[0], printed
    assert printed.splitlines()[-1].startswith("test RMSE ")
    multi = _npz(tmp_path / "multi.npz", rng.integers(0, 2, (120, 3)), rng.integers(0, 2, (30, 3)))
    rc, printed, _ = _train(
        "--data",
        str(multi),
        "--widths",
        "8",
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--out",
        str(tmp_path / "b"),
        *TINY,
    )
    assert rc == 0, printed
    assert "(mean over 3 attributes; all attributes right" in printed.splitlines()[-1]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--input-noise", "-1"], "argument --input-noise: expected a finite number >= 0"),
        (["--max-norm", "0"], "argument --max-norm: expected a number > 0"),
        (["--bins", "1", "--dataset", "diabetes"], "--bins must be >= 2, got 1"),
        (["--bins", "2", "--dataset", "digits"], "--bins discretises a regression target"),
        (["--preprocess", "pca", "--pca-dims", "65"], "--pca-dims 65 is larger than the 64"),
        (["--task", "attributes", "--dataset", "many-classes", "--classes", "20"], "attributes"),
        (["--activation", "maxout", "--model", "cnn"], "--activation maxout needs --model mlp"),
        (["--norm", "instance"], "--norm instance needs --model cnn"),
    ],
)
def test_bad_values_exit_2_with_one_line(tmp_path, argv, message):
    out = tmp_path / "bad"
    rc, _, errors = _train(*argv, "--epochs", "1", "--out", str(out), "--no-progress")
    assert rc == 2
    assert message in errors.strip().splitlines()[-1]
    assert not out.exists()


def test_attributes_on_labels_that_are_not_0_1_exit_2(tmp_path):
    bad = _npz(tmp_path / "bad.npz", np.tile([[0, 2], [1, 0]], (60, 1)), np.tile([[0, 1]], (30, 1)))
    rc, _, errors = _train(
        "--data", str(bad), "--task", "attributes", "--batch-size", "16", "--out",
        str(tmp_path / "o"), *TINY,
    )  # fmt: skip
    assert rc == 2 and "--task attributes needs 0/1 labels" in errors.strip().splitlines()[-1]
