"""examples/gradcheck.py runs and its report passes (a correct model)."""

import pathlib
import runpy

EXAMPLE = pathlib.Path(__file__).parent.parent / "examples" / "gradcheck.py"


def test_example_checks_a_real_model(capsys):
    main = runpy.run_path(str(EXAMPLE))["main"]
    report = main(["--steps", "2", "--examples", "8", "--hidden", "16"])
    out = capsys.readouterr().out
    assert report.ok, out
    assert "gradient check passed" in out and "batchnorm_1/scale" in out
    assert {row.name for row in report.rows} >= {"dense_0/w", "dense_4/b", "dense_6/w"}
