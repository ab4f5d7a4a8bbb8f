"""Multi-process runs: two `tnx run` processes on this machine form one jax.distributed job.

Each process has 2 CPU devices (`--xla_force_host_platform_device_count=2`)
and joins through a localhost coordinator; together they run the same
4-device mesh that one process with 4 devices runs. Every process is a
subprocess with a timeout, so a hang (a collective one process never joins)
fails the test instead of blocking the suite.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

HERE = Path(__file__).resolve().parent
PIPELINE = HERE / "multihost_small.tnx"
RL_PIPELINE = HERE / "multihost_rl.tnx"
LAUNCHER = HERE / "multihost_run.py"
TIMEOUT_S = 300


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return int(sock.getsockname()[1])


def _start(run_dir: Path, process: int, processes: int, devices: int, port: int,
           kill: str = "-", pipeline: Path = PIPELINE) -> subprocess.Popen[str]:
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    job = ([] if processes == 1 else
           ["--coordinator", f"localhost:{port}", "--num-processes", str(processes),
            "--process-id", str(process)])
    return subprocess.Popen(
        [sys.executable, str(LAUNCHER), kill, "--", str(pipeline), "--run-dir", str(run_dir), *job],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(procs: list[subprocess.Popen[str]]) -> list[tuple[int, str, str]]:
    """Wait for every process (killing all of them when one hangs past the timeout)."""
    deadline = time.monotonic() + TIMEOUT_S
    out = []
    try:
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            out.append((proc.returncode, stdout, stderr))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return out


def _jobs(*jobs: tuple[Path, int, int], pipeline: Path = PIPELINE) -> list[list[tuple[int, str, str]]]:
    """Run jobs side by side, each `(run_dir, processes, devices per process)`; every process
    must succeed. The outputs per job, per process."""
    started = []
    for run_dir, processes, devices in jobs:
        port = _free_port()
        started.append([_start(run_dir, i, processes, devices, port, pipeline=pipeline)
                        for i in range(processes)])
    results = _finish([proc for procs in started for proc in procs])
    out, at = [], 0
    for procs in started:
        out.append(results[at: at + len(procs)])
        at += len(procs)
    for job, job_results in zip(jobs, out, strict=True):
        for i, (code, stdout, stderr) in enumerate(job_results):
            assert code == 0, f"{job}: process {i} exited {code}:\n{stdout[-3000:]}\n{stderr[-3000:]}"
    return out


def _weights(run_dir: Path) -> dict[str, np.ndarray]:
    return load_file(str(run_dir / "exports" / "exported" / "model.safetensors"))


def _steps(run_dir: Path, stage: str) -> list[int]:
    lines = (run_dir / "stages" / stage / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["step"] for line in lines]


def test_two_processes_train_like_one_and_resume_after_a_kill(tmp_path: Path) -> None:
    _, two = _jobs((tmp_path / "one", 1, 4), (tmp_path / "two", 2, 2))

    # The same global batches and steps: the trained weights agree within float32 reduction order.
    single, multi = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    assert single.keys() == multi.keys() and single
    for name in single:
        np.testing.assert_allclose(multi[name], single[name], rtol=0, atol=1e-6, err_msg=name)

    # Process 0 alone printed and wrote: one run.log header, each metrics row once, the summary.
    (_, out0, _), (_, out1, _) = two
    assert "report:" in out0 and "multi-process job: process 0 of 2" in out0
    # gloo's own "[Gloo] Rank N is connected to M peer ranks..." lines are all there is; its
    # threads write them unsynchronised, so a line may be a fragment of one (or blank)
    gloo = re.compile(r"^\s*(\[Gloo\].*|(Rank \d+)?\s*is connected to \d+ peer ranks.*|.*peer ranks is\s*:\s*\d+)?\s*$")
    assert [line for line in out1.splitlines() if not gloo.match(line)] == []
    log = (tmp_path / "two" / "run.log").read_text()
    assert log.count("==== ") == 1 and "process 0 of 2" in log
    assert _steps(tmp_path / "two", "base") == list(range(1, 9))
    assert (tmp_path / "two" / "stages" / "base" / "output" / "tnx_finished.json").is_file()

    # SIGKILL one process mid-stage (after step 5 of `base`, checkpointed at 3); its partner
    # then waits in a collective and is killed too.
    killed = tmp_path / "killed"
    port = _free_port()
    procs = [_start(killed, 0, 2, 2, port), _start(killed, 1, 2, 2, port, kill="base:5:SIGKILL")]
    try:
        assert procs[1].wait(timeout=TIMEOUT_S) == -signal.SIGKILL
    finally:
        procs[0].kill()
        _finish(procs)
    assert not (killed / "stages" / "base" / "output").exists()

    # Re-run both: they resume; SIGTERM on process 1 alone after step 7 stops both processes
    # after the same step, with a checkpoint of it (not a multiple of checkpoint_every).
    port = _free_port()
    stopped = _finish([_start(killed, 0, 2, 2, port), _start(killed, 1, 2, 2, port, kill="base:7:SIGTERM")])
    assert [code for code, _, _ in stopped] == [3, 3], stopped
    log = (killed / "run.log").read_text()
    assert "resuming at step 3" in log, log
    assert "stopped by SIGTERM on process 1 in stage `base` at step 7/8" in log, log
    assert (killed / "stages" / "base" / "checkpoints" / "7").is_dir()

    # And once more: the run ends bit-identical to the uninterrupted one.
    _jobs((killed, 2, 2))
    assert "resuming at step 7" in (killed / "run.log").read_text()
    resumed = _weights(killed)
    for name in multi:
        np.testing.assert_array_equal(resumed[name], multi[name], err_msg=name)
    assert _steps(killed, "base") == list(range(1, 9))


@pytest.mark.parametrize(("args", "message"), [
    (["--coordinator", "localhost:1234"], "go together"),
    (["--coordinator", "nohost", "--num-processes", "2", "--process-id", "0"], "HOST:PORT"),
    (["--coordinator", "h:1", "--num-processes", "2", "--process-id", "2"], "expected 0 … 1"),
])
def test_incomplete_or_wrong_job_flags_are_usage_errors(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str) -> None:
    from tunix_dsl.runtime.cli_commands import main

    code = main("run", [str(PIPELINE), "--run-dir", str(tmp_path / "run"), *args])
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_launcher_jax_cannot_join_asks_for_the_flags(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from tunix_dsl.runtime.cli_commands import main

    monkeypatch.setenv("WORLD_SIZE", "4")
    code = main("run", [str(PIPELINE), "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "WORLD_SIZE=4" in err and "--coordinator HOST:PORT" in err
    assert not (tmp_path / "run").exists()


def test_single_process_environments_are_not_a_job() -> None:
    from tunix_dsl.runtime.distributed import multi_process_job

    assert multi_process_job({"SLURM_NTASKS": "1", "TPU_WORKER_HOSTNAMES": "localhost",
                              "WORLD_SIZE": "1"}) is None


def test_single_process_helpers_need_no_job(tmp_path: Path) -> None:
    """With one process the collectives are the local values and `on_primary` just runs."""
    import jax

    from tunix_dsl.compiler.sharding import make_mesh
    from tunix_dsl.runtime.distributed import agree, gather, local_rows, on_primary

    assert gather([3, 0]).tolist() == [[3, 0]]
    agree("anything", "text")  # nothing to compare with
    assert on_primary("write", lambda: 7) == 7
    mesh = make_mesh({"data": -1}, jax.devices())
    assert local_rows(mesh, 8) == (0, 8)  # every row of a micro-batch is this process's


def _rl_record(run_dir: Path) -> tuple[list[dict[str, float]], object]:
    """What an RL run decided: per-step rewards and held-out rewards, and the eval results."""
    stage = run_dir / "stages" / "solve"
    keep = ("step", "reward", "reward/correct", "reward/two_digits", "completion_length")
    steps = [{k: v for k, v in json.loads(line).items() if k in keep}
             for name in ("metrics.jsonl", "eval.jsonl") for line in (stage / name).read_text().splitlines()]
    return steps, json.loads((run_dir / "evals.json").read_text())


def test_rl_and_evals_run_on_two_processes_like_one_and_resume_after_a_kill(tmp_path: Path) -> None:
    """GRPO (rollout, reference, host rewards, update, held-out reward) and an `eval` block on a
    2-process job sample the same completions as one process on the same 4-device mesh."""
    _jobs((tmp_path / "one", 1, 4), (tmp_path / "two", 2, 2), pipeline=RL_PIPELINE)
    single, multi = _rl_record(tmp_path / "one"), _rl_record(tmp_path / "two")
    assert multi == single and len(single[0]) == 4 + 2  # 4 steps, 2 held-out evaluations
    assert [r["step"] for r in single[0][4:]] == [2, 4]
    # Gradients agree to float32 reduction order (gloo's all-reduce vs in-process); Adam divides
    # the near-zero gradients of GRPO's rarely-seen embedding rows by their own tiny scale, which
    # makes rounding differences up to ~1e-5 of a 1.2e-2 total update (4 steps at lr 3e-3) there.
    one, two = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    for name in one:
        np.testing.assert_allclose(two[name], one[name], rtol=0, atol=5e-5, err_msg=name)

    # SIGKILL process 1 after GRPO step 3 (checkpointed at 2), then re-run both: bit-identical.
    killed = tmp_path / "killed"
    port = _free_port()
    procs = [_start(killed, 0, 2, 2, port, pipeline=RL_PIPELINE),
             _start(killed, 1, 2, 2, port, kill="solve:3:SIGKILL", pipeline=RL_PIPELINE)]
    try:
        assert procs[1].wait(timeout=TIMEOUT_S) == -signal.SIGKILL
    finally:
        procs[0].kill()
        _finish(procs)
    assert not (killed / "stages" / "solve" / "output").exists()
    _jobs((killed, 2, 2), pipeline=RL_PIPELINE)
    assert "resuming at step 2" in (killed / "run.log").read_text()
    assert _rl_record(killed) == multi
    resumed = _weights(killed)
    for name in two:
        np.testing.assert_array_equal(resumed[name], two[name], err_msg=name)


def test_async_rollout_and_environments_are_refused_with_several_processes(tmp_path: Path) -> None:
    from tunix_dsl.api import load
    from tunix_dsl.runtime.distributed import unsupported

    assert unsupported(load(str(RL_PIPELINE))) is None and unsupported(load(str(PIPELINE))) is None
    text = RL_PIPELINE.read_text().replace("beta             = 0.04", 'beta = 0.04\n  rollout = "async"')
    (tmp_path / "async.tnx").write_text(text)
    pipeline = load(str(tmp_path / "async.tnx"))
    assert pipeline.ok and 'rollout = "async" cannot run with several processes' in (unsupported(pipeline) or "")
    calculator = load(str(HERE.parents[1] / "examples" / "agent_calculator.tnx"))
    assert calculator.ok and "an `environment`" in (unsupported(calculator) or "")


def test_rewards_that_differ_between_hosts_stop_the_job_by_name(tmp_path: Path) -> None:
    """Each process scores every completion itself: a reward that depends on the host stops
    every process with a message naming the stage, before an update trains on mixed copies."""
    (tmp_path / "host_reward.py").write_text(
        "import jax\n\n"
        "def by_host(prompts, completions, **columns):\n"
        "    return [float(jax.process_index())] * len(completions)\n")
    (tmp_path / "job.tnx").write_text("""
tokenizer chars = bytes()
model tiny = transformer(preset = "pico", tokenizer = chars, n_layers = 1)
dataset sums = synthetic("addition", digits = 1, count = 16, seed = 1)
reward host = python("host_reward.py:by_host")
stage solve: grpo {
  policy = tiny
  data = sums
  rewards = [host]
  generations = 2
  batch_size = 8
  max_prompt_len = 8
  max_new_tokens = 2
  beta = 0.0
  steps = 1
  optimizer = adamw(lr = 1e-3)
}
""")
    port = _free_port()
    results = _finish([_start(tmp_path / "run", i, 2, 2, port, pipeline=tmp_path / "job.tnx") for i in range(2)])
    assert [code for code, _, _ in results] == [1, 1], results
    err = results[0][2]
    assert "disagree on the rewards of stage `solve`" in err and "Traceback" not in err, err
    assert not (tmp_path / "run" / "stages" / "solve" / "output").exists()
