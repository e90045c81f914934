"""The ``merge_command`` typer function, registered on a throwaway app as retain/cli.py does."""

import typer
from typer.testing import CliRunner

from retain.merging.cli import merge_command

app = typer.Typer()
app.command("merge")(merge_command)


@app.command("noop")
def _noop() -> None:  # a second command keeps "merge" a subcommand, as in the real app
    pass


def test_cli_merges_and_reports_user_errors_on_one_line(tiny, tmp_path):
    runner = CliRunner()
    out = tmp_path / "m"
    res = runner.invoke(app, ["merge", "--method", "ties", "--base", str(tiny["base"]),
                              str(tiny["ft1"]), str(tiny["ft2"]), "--out", str(out),
                              "--density", "0.5", "--weights", "1,1", "--shard-size", "40KB"])
    assert res.exit_code == 0, res.output
    assert (out / "model.safetensors.index.json").exists()
    res = runner.invoke(app, ["merge", "--method", "ties", str(tiny["ft1"]), "--out",
                              str(tmp_path / "x")])
    assert res.exit_code == 2
    assert res.output.strip().splitlines() == ["error: merge method 'ties' merges task vectors: "
                                               "give --base"]
    res = runner.invoke(app, ["merge", "--method", "linear", str(tiny["ft1"]), str(tiny["ft2"]),
                              "--out", str(tmp_path / "y"), "--seed", "3"])
    assert res.exit_code == 2 and "has no option 'seed'" in res.output


def test_cli_config_file(tiny, tmp_path):
    cfg = tmp_path / "merge.yaml"
    cfg.write_text(f"method: slerp\nmodels: [{tiny['ft1']}, {tiny['ft2']}]\n"
                   f"options: {{alpha: 0.3}}\nout: {tmp_path / 'z'}\n")
    res = CliRunner().invoke(app, ["merge", "--config", str(cfg)])
    assert res.exit_code == 0, res.output
    assert "slerp" in (tmp_path / "z" / "README.md").read_text()
