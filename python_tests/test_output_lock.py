"""One writer per output folder: a second run into the same --out is refused, a killed holder leaves no stale lock."""

import os
import signal
import subprocess
import sys

import pytest

from sim2real_fast import cli
from sim2real_fast._lock import LOCK_NAME, FolderBusyError, output_lock


def _holder(folder):
    """A child process holding ``folder``'s lock until killed; returns once it holds it."""
    code = ("import sys, time; from sim2real_fast._lock import output_lock\n"
            "with output_lock(sys.argv[1], 'sim2real run (test holder)'):\n"
            "    print('held', flush=True); time.sleep(120)\n")
    child = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    return child


def test_a_second_writer_is_refused_and_a_killed_holder_leaves_no_stale_lock(tmp_path):
    folder = tmp_path / "out"
    child = _holder(folder)
    try:
        with pytest.raises(FolderBusyError, match=rf"sim2real run \(test holder\) \(pid {child.pid}\) is writing there"):
            with output_lock(folder, "second"):
                pass
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    with output_lock(folder, "third") as path:  # the kernel released the killed holder's lock
        assert path.read_text() == f"third (pid {os.getpid()})"


def test_a_folder_the_lock_made_is_removed_when_nothing_was_written(tmp_path):
    with output_lock(tmp_path / "empty", "run"):
        pass
    assert not (tmp_path / "empty").exists()
    with output_lock(tmp_path / "used", "run"):
        (tmp_path / "used" / "results.json").write_text("{}")
    assert sorted(p.name for p in (tmp_path / "used").iterdir()) == [LOCK_NAME, "results.json"]


@pytest.mark.parametrize("argv", [
    ["run", "--quick", "--methods", "source_only"],
    ["dqm", "--quick", "--task", "faults", "--methods", "source_only"],
    ["generate", "train", "--events", "50", "--epochs", "1"],
    ["translate", "train", "--method", "style", "--sim", "sim.root", "--real", "real.root"],
])
def test_the_commands_refuse_a_busy_out_in_one_line(tmp_path, capsys, argv):
    folder = tmp_path / "out"
    child = _holder(folder)
    try:
        with pytest.raises(SystemExit) as exit_info:
            cli.main([*argv, "--out", str(folder)])
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err
    assert f"{folder}: sim2real run (test holder) (pid {child.pid}) is writing there" in err.strip().splitlines()[-1]
