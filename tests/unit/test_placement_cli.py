"""`sgs placement`: plan a generated survey, explain, diff and plot it; bad files exit 2 naming line and field."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from sgs.cli.main import app

runner = CliRunner()


def test_plan_explain_diff_and_plot_a_generated_survey(tmp_path: Path) -> None:
    survey, sites = tmp_path / "survey.csv", tmp_path / "sites.yaml"
    made = runner.invoke(
        app, ["placement", "generate", str(survey), "--wide", "600", "--deep", "200", "--sites-out", str(sites)]
    )
    assert made.exit_code == 0, made.output
    plan, greedy, png = tmp_path / "plan.csv", tmp_path / "greedy.csv", tmp_path / "plan.png"
    planned = runner.invoke(app, ["placement", "plan", str(survey), "--sites", str(sites), "--out", str(plan)])
    assert planned.exit_code == 0, planned.output
    assert "800 observations" in planned.output and "plan digest sha256:" in planned.output
    assert plan.read_text().startswith("dimension,value,primary,secondary\nobservation,1,")
    again = runner.invoke(
        app, ["placement", "plan", str(survey), "--sites", str(sites), "--out", str(tmp_path / "b.csv")]
    )
    assert again.exit_code == 0 and (tmp_path / "b.csv").read_bytes() == plan.read_bytes()
    why = runner.invoke(
        app, ["placement", "explain", "5", "--survey", str(survey), "--sites", str(sites), "--plan", str(plan)]
    )
    assert why.exit_code == 0, why.output
    assert "placed with its unit: HEALPix order" in why.output and "←" in why.output
    base = ["placement", "plan", str(survey), "--sites", str(sites), "--baseline", "greedy", "--out", str(greedy)]
    assert runner.invoke(app, base).exit_code == 0
    diff = runner.invoke(app, ["placement", "diff", str(plan), str(greedy)])
    assert diff.exit_code == 0 and "observations: 800 in both" in diff.output, diff.output
    drawn = runner.invoke(
        app,
        ["placement", "plot", "--survey", str(survey), "--plan", str(plan), "--sites", str(sites), "--out", str(png)],
    )
    assert drawn.exit_code == 0, drawn.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000


def test_bad_files_and_a_past_horizon_are_refused_naming_line_and_field(tmp_path: Path) -> None:
    survey, sites = tmp_path / "survey.csv", tmp_path / "sites.yaml"
    survey.write_text("id,time,ra,dec,tiles\n1,2027-03-01T00:00:00Z,1,2,5\n1,2027-03-01T01:00:00Z,1,2,6\n")
    sites.write_text("- {name: sdc-a, cores: 10, storageTb: 1}\n- {name: sdc-b, cores: 10, storageTb: 1}\n")
    duplicate = runner.invoke(app, ["placement", "plan", str(survey), "--sites", str(sites)])
    assert duplicate.exit_code == 2
    assert "line 3: id: duplicate observation id 1 (first on line 2)" in duplicate.output
    survey.write_text("id,time,ra,dec,tiles\n1,2027-03-01T00:00:00Z,1,2,5\n")
    sites.write_text("- {name: sdc-a, cores: 10, storageTb: 1}\n- {name: sdc-b, weight: 3}\n")
    zero = runner.invoke(app, ["placement", "plan", str(survey), "--sites", str(sites)])
    assert zero.exit_code == 2 and "line 2 (sdc-b): capacity: zero cores and storage with weight 3 > 0" in zero.output
    sites.write_text("- {name: sdc-a, cores: 10, storageTb: 1}\n")
    past = runner.invoke(
        app, ["placement", "plan", str(survey), "--sites", str(sites), "--now", "2028-01-01T00:00:00Z"]
    )
    assert past.exit_code == 2 and "horizon.end: 2027-03-02T00:00:00+00:00 is in the past" in past.output, past.output
