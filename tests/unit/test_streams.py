"""stdout is for results: work output, a child process's included, goes where we say."""

from __future__ import annotations

import subprocess
import sys

from mlflow_retrain.adapters.streams import stdout_into


def test_this_process_and_its_children_write_into_the_stream(tmp_path, capfd):
    log = tmp_path / "work.log"
    with log.open("w") as stream, stdout_into(stream):
        print("from us", flush=True)
        subprocess.run([sys.executable, "-c", "print('from a child')"], check=True)
    print("result")
    assert log.read_text().splitlines() == ["from us", "from a child"]
    assert capfd.readouterr().out == "result\n"
