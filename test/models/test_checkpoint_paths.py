"""A checkpoint path that is no readable regular file is refused at once, saying what it is
(issue 17: a directory or ``/dev/zero`` was reported as 'not found'; ``/dev/zero`` must never be
read). The loader runs in a child process with a timeout, so a read that never ends fails the
test instead of hanging it."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from lmanet_ros.models.checkpoint import CheckpointError, checkpoint_file

#: The unprivileged user a root test process checks readability as (root reads any file).
NOBODY = 65534


def _kinds(directory: Path) -> dict[str, tuple[str, str]]:
    """name -> (path, words the refusal must contain)."""
    fifo = directory / "weights.fifo"
    os.mkfifo(fifo)
    empty = directory / "empty.pth"
    empty.touch()
    dangling = directory / "dangling.pth"
    dangling.symlink_to(directory / "gone.pth")
    return {
        "directory": (str(directory), "is a directory, not a file"),
        "dev_zero": ("/dev/zero", "is not a regular file: it is a character device"),
        "fifo": (str(fifo), "is not a regular file: it is a FIFO (named pipe)"),
        "empty": (str(empty), "is empty (0 bytes)"),
        "missing": (str(directory / "nowhere.pth"), "checkpoint file not found"),
        "dangling_link": (str(dangling), "a symbolic link to a missing file"),
    }


_LOAD = """
import sys
from lmanet_ros.models import build_model, load_checkpoint
try:
    load_checkpoint(build_model("erfnet", num_classes=20), sys.argv[1])
except (FileNotFoundError, ValueError) as exc:
    print(type(exc).__name__, exc)
"""


@pytest.fixture(scope="module")
def kinds(tmp_path_factory):
    return _kinds(tmp_path_factory.mktemp("checkpoint_paths"))


@pytest.mark.parametrize("kind", ["directory", "dev_zero", "fifo", "empty", "missing",
                                  "dangling_link"])
def test_what_the_path_is_is_said(kinds, kind):
    path, words = kinds[kind]
    error = FileNotFoundError if kind in ("missing", "dangling_link") else CheckpointError
    with pytest.raises(error, match=words.replace("(", r"\(").replace(")", r"\)")):
        checkpoint_file(path)


@pytest.mark.parametrize("kind", ["dev_zero", "fifo", "directory"])
def test_the_loader_fails_fast_without_reading(kinds, kind):
    path, words = kinds[kind]
    done = subprocess.run([sys.executable, "-c", _LOAD, path], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("CheckpointError") and words in done.stdout, done.stdout


def test_a_socket_is_not_a_regular_file(tmp_path):
    path = tmp_path / "weights.sock"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        with pytest.raises(CheckpointError, match="it is a socket"):
            checkpoint_file(path)


def test_an_unreadable_file_is_named():
    with tempfile.TemporaryDirectory(dir="/tmp") as name:  # reachable by an unprivileged user
        directory = Path(name)
        directory.chmod(0o755)
        path = directory / "secret.pth"
        path.write_bytes(b"weights")
        path.chmod(0o000)
        # imported first (the interpreter may be private to root), then privileges dropped
        code = ("import os, sys; from lmanet_ros.models.checkpoint import checkpoint_file, "
                f"CheckpointError\nif os.geteuid() == 0:\n    os.setuid({NOBODY})\n"
                "try:\n    checkpoint_file(sys.argv[1])\n"
                "except CheckpointError as exc:\n    print(exc)")
        done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                              text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"checkpoint {path} is not readable: Permission denied" in done.stdout, done.stdout


def test_a_regular_file_is_returned_expanded(tmp_path, monkeypatch):
    path = tmp_path / "weights.pth"
    path.write_bytes(b"x")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert checkpoint_file("~/weights.pth") == path
