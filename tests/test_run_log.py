"""The runner's messages go to the console and to WORKDIR/run.log."""

import logging

from tf_advscale import runner


def test_run_log_writes_the_console_line_to_the_workdir_file_and_undoes_itself(tmp_path, capsys):
    (tmp_path / "run.log").write_text("earlier run\n")  # a resumed run appends
    with runner.run_log(str(tmp_path)) as log:
        log.info("Resuming %s at epoch %s, step %s of %s", tmp_path, 1, 4, 8)
    expected = f"Resuming {tmp_path} at epoch 1, step 4 of 8"
    assert capsys.readouterr().out == expected + "\n"  # as print() wrote it
    lines = (tmp_path / "run.log").read_text().splitlines()
    assert lines[0] == "earlier run" and len(lines) == 2
    assert lines[1].endswith(" " + expected), lines[1]  # timestamped
    # Left as found: no handler stays on the logger, nothing more is written.
    assert logging.getLogger("tf_advscale.runner").handlers == []
    runner._log.warning("after the run")
    assert (tmp_path / "run.log").read_text().splitlines() == lines
