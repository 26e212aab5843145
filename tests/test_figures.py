"""Release figures: training curves from a run's metrics, and the comparison plot of several runs."""

import pytest


def test_training_curves_plot_from_a_runs_metrics(tmp_path):
    from doubleunet_segment.release.figures import plot_training_curves
    from PIL import Image

    csv_path = tmp_path / "metrics.csv"
    csv_path.write_text("epoch,train_loss,val_mean_dice,lr,seconds\n1,2.5,0.1,0.0003,10\n2,2.0,0.4,0.0003,10\n")
    png = plot_training_curves(csv_path, tmp_path / "curves.png", "test")
    with Image.open(png) as img:
        assert img.width > 500 and img.height > 200


def test_run_comparison_plot_names_each_run_and_refuses_bad_arguments(tmp_path, capsys):
    from doubleunet_segment.release.figures import main
    from PIL import Image

    runs = []
    for axis, dice in ((0, "0.78"), (1, "0.70")):
        path = tmp_path / f"axis{axis}.csv"
        path.write_text(f"epoch,train_loss,val_mean_dice,lr,seconds\n1,2.5,0.1,0.0003,10\n2,2.0,{dice},0.0003,10\n")
        runs.append(f"axis {axis}={path}")
    main(["compare", *runs, "-o", str(tmp_path / "axes.png")])
    with Image.open(tmp_path / "axes.png") as img:
        assert img.width > 400
    with pytest.raises(SystemExit):
        main(["compare", str(tmp_path / "axis0.csv"), "-o", str(tmp_path / "x.png")])
    assert "LABEL=METRICS_CSV" in capsys.readouterr().err
