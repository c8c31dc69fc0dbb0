"""Progress display: a tqdm bar with loss, rate and ETA on a terminal, nothing per batch in a log."""

import fcntl
import os
import re
import struct
import subprocess
import sys
import termios

import pytest

RUN = ["image_classification/main.py", "--model", "ResNet", "--depth", "8", "--data_train", "Synthetic",
       "--data_test", "Synthetic", "--n_train", "600", "--n_test", "16", "--batch_size", "8", "--epochs",
       "1", "--cpu", "--n_threads", "0", "--print_every", "25"]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.mark.parametrize("rows,columns", [(40, 120), (0, 0)], ids=["sized", "no-size"])
def test_bar_on_a_terminal_shows_loss_rate_and_eta(repo_root, tmp_path, rows, columns):
    primary, secondary = os.openpty()  # the child's stdout/stderr are a terminal
    # (0, 0): a terminal that reports no size, as some job runners' pseudo-terminals do.
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    process = subprocess.Popen([sys.executable, *RUN, "--dir_save", str(tmp_path), "--save", "tty"],
                               cwd=repo_root, stdout=secondary, stderr=secondary, env=_env())
    os.close(secondary)
    chunks = []
    while True:
        try:
            data = os.read(primary, 65536)
        except OSError:  # EIO once the child has closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(primary)
    assert process.wait(timeout=120) == 0
    screen = b"".join(chunks).decode(errors="replace")
    assert re.search(r"epoch 1:\s+\d+%\|", screen), screen[-2000:]
    assert re.search(r"loss=\d", screen)  # running loss in the bar
    assert re.search(r"\d+(\.\d+)?(batch/s|s/batch)", screen)  # rate
    assert re.search(r"<\d\d:\d\d", screen)  # ETA
    # The periodic plain line is not echoed while a bar is drawn (it still goes to log.txt).
    assert "[Epoch 1] [25/75]" not in screen
    assert "[Epoch 1] [25/75]" in (tmp_path / "tty" / "log.txt").read_text()


def test_no_bar_when_output_is_not_a_terminal(repo_root, tmp_path):
    result = subprocess.run([sys.executable, *RUN, "--dir_save", str(tmp_path), "--save", "log"],
                            cwd=repo_root, capture_output=True, text=True, env=_env(), timeout=120)
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert "%|" not in output and "\r" not in output  # no bar redraws in a redirected log
    assert "[Epoch 1] [25/75]" in output  # a plain line every --print_every batches instead
