"""The training launcher's supervision: a failed rank fails the job with its log, and
neither a failure nor a stop signal leaves a rank behind (torchrun, real processes)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from process_helpers import alive

from movierec.models import launch

RANK_SCRIPT = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    rank = int(os.environ["RANK"])
    Path(sys.argv[1], f"pid-{rank}").write_text(str(os.getpid()))
    print(f"rank {rank} up", flush=True)
    if rank == int(sys.argv[2]):
        raise SystemExit(f"rank {rank} failed on purpose")
    time.sleep(120)
""")


def _pids(folder: Path) -> list[int]:
    return [int(p.read_text()) for p in folder.glob("pid-*")]


@pytest.fixture()
def rank_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "ranky.py").write_text(RANK_SCRIPT)
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return tmp_path


def test_a_failed_rank_fails_the_job_with_its_log_and_leaves_no_rank(
        rank_module: Path, capfd: pytest.CaptureFixture[str]) -> None:
    logs = rank_module / "logs"
    cmd = launch.torchrun_command("ranky", 2, [str(rank_module), "1"], logs)
    code = launch.run(cmd, logs, grace=2.0)
    err = capfd.readouterr().err
    assert code != 0
    assert "rank 1 failed on purpose" in err
    assert str(logs) in err
    pids = _pids(rank_module)
    assert len(pids) == 2
    assert not any(alive(pid) for pid in pids)


def test_a_stop_signal_stops_every_rank(rank_module: Path) -> None:
    logs = rank_module / "logs"
    code = (f"import sys; from pathlib import Path; from movierec.models import launch; "
            f"cmd = launch.torchrun_command('ranky', 2, [{str(rank_module)!r}, '-1'], "
            f"Path({str(logs)!r})); sys.exit(launch.run(cmd, Path({str(logs)!r}), grace=2.0))")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).parents[1])
    deadline = time.monotonic() + 60
    while len(_pids(rank_module)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(_pids(rank_module)) == 2, "the ranks never started"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 128 + signal.SIGTERM
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in _pids(rank_module)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(pid) for pid in _pids(rank_module))


def test_multi_node_commands_use_a_static_rendezvous(tmp_path: Path) -> None:
    nodes = launch.Nodes(count=3, rank=2, master="train-0.train", port=29511)
    cmd = launch.torchrun_command("m", 4, ["--x"], tmp_path, nodes)
    assert "--standalone" not in cmd
    assert {"--nnodes=3", "--node-rank=2", "--rdzv-backend=static",
            "--master-addr=train-0.train", "--master-port=29511"} <= set(cmd)
    assert cmd[-3:] == ["-m", "m", "--x"]
    paddle = launch.paddle_command("m", 2, [], tmp_path, ips=["a", "b"])
    assert paddle[paddle.index("--ips") + 1] == "a,b"
