"""`tnx run` checks every input and output location before the first step (runtime/preflight.py)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from tunix_dsl.api import load
from tunix_dsl.runtime import preflight as preflight_module
from tunix_dsl.runtime.cli_commands import main as tnx
from tunix_dsl.runtime.preflight import export_destination, preflight
from tunix_dsl.runtime.run_dir import claim_source, source_conflict

HEAD = """pipeline pf { seed = 0 }
tokenizer t = bytes()
model m = transformer(preset = "pico", tokenizer = t)
dataset sums = synthetic("addition", digits = 1, count = 16, seed = 1)
"""
STAGE = "stage {name}: sft {{ model = {model}\n data = {data}\n steps = 1\n batch_size = 2 }}\n"
GOOD_ROW = '{"q": "1+1=", "a": "2"}'


def write(work: Path, body: str, name: str = "p.tnx") -> Path:
    (work / name).write_text(HEAD + body)
    return work / name


def codes_at(work: Path, body: str, run_dir: Path | None = None) -> list[tuple[str, int, str]]:
    pipeline = load(str(write(work, body)))
    assert pipeline.ok, pipeline.diagnostics
    found = preflight(pipeline, run_dir or work / "run")
    return [(p.diagnostic.code, p.diagnostic.span.line, p.diagnostic.message) for p in found]


def test_run_reports_every_problem_at_once_before_any_stage_trains(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "qa.jsonl").write_text("\n".join(
        [GOOD_ROW] * 5 + ['{"q": 3, "a": "x"}', '{"q": "2+2="}', '{"q": "1=", "a": ""}', "nope"]) + "\n")
    (tmp_path / "rewards.py").write_text("def other(prompts, completions):\n    return []\n")
    (tmp_path / "taken").write_text("a file where a folder should go")
    body = ('dataset qa = jsonl("qa.jsonl", prompt = "q", completion = "a")\n'
            'model big = hf("ckpt/missing")\n'
            'reward r = python("rewards.py:score")\n'
            + STAGE.format(name="first", model="m", data="sums")
            + STAGE.format(name="second", model="first.model", data="qa")
            + STAGE.format(name="third", model="big", data="sums")
            + 'eval e { models = [first.model]\n data = sums\n metric = r }\n'
            f'export second.model to "{tmp_path}/taken/second" as "hf"\n'  # absolute: --run-dir below
            'export third.model to "out/third" as "hf"\n')
    tnx_file = write(tmp_path, body)
    code = tnx("run", [str(tnx_file), "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    where = str(tnx_file)
    for expected in (f"error[TNX371]: dataset `qa`: 4 bad rows in \"qa.jsonl\"\n --> {where}:5:20",
                     "error[TNX372]: checkpoint \"ckpt/missing\" of model `big` does not exist",
                     f"{where}:6:16",
                     "error[TNX374]: reward `r`: \"rewards.py\" defines no top-level `score` "
                     "(functions there: `other`)", f"{where}:7:19",
                     f"error[TNX375]: cannot export to \"{tmp_path}/taken/second\"", f"{where}:23:24"):
        assert expected in err, expected
    rows = [f"{tmp_path / 'qa.jsonl'}:{n}: " for n in (6, 7, 8, 9)]
    assert all(r in err for r in rows)  # every bad row, in one run
    assert "error: pre-flight check found 4 problem(s); nothing was trained" in err
    assert not (tmp_path / "run").exists()  # not even the run directory was made

    assert tnx("plan", [str(tnx_file), "--run-dir", str(tmp_path / "run")]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "first         will not run: the run stops before its first step (TNX371 at "
        f"{where}:5:20)",
        "second        will not run: TNX371 dataset `qa`: 4 bad rows in \"qa.jsonl\"",
        "third         will not run: TNX372 checkpoint \"ckpt/missing\" of model `big` does not exist",
    ]
    assert tnx("plan", [str(tnx_file), "--run-dir", str(tmp_path / "run"), "--format", "json"]) == 1
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == ["first", "second", "third"]
    assert rows[2]["status"].startswith("will not run: TNX372")


def test_an_empty_pipeline_has_nothing_to_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "empty.tnx").write_text("# nothing here yet\n")
    assert tnx("run", [str(tmp_path / "empty.tnx"), "--run-dir", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert "error[TNX376]: pipeline `empty` has no stage, eval or export: nothing to run" in err
    assert not (tmp_path / "run").exists()


def test_reward_files_are_read_not_imported(tmp_path: Path) -> None:
    (tmp_path / "r.py").write_text(
        "raise SystemExit('importing me would end the run')\n"
        "from math import sqrt as imported\n"
        "def score(prompts, completions, **columns):\n    return [0.0] * len(completions)\n")
    (tmp_path / "broken.py").write_text("def score(:\n")
    body = ('reward a = python("r.py:score")\nreward b = python("r.py:imported")\n'
            'reward c = python("r.py:missing")\nreward d = python("broken.py:score")\n'
            'reward e = python("nope.py:score")\n'
            'eval x { models = [m]\n data = sums\n metric = a }\neval y { models = [m]\n data = sums\n'
            ' metric = b }\neval z { models = [m]\n data = sums\n metric = c }\n'
            'eval w { models = [m]\n data = sums\n metric = d }\neval v { models = [m]\n data = sums\n'
            ' metric = e }\n')
    assert codes_at(tmp_path, body) == [
        ("TNX374", 7, "reward `c`: \"r.py\" defines no top-level `missing` (functions there: `score`)"),
        ("TNX374", 8, "reward `d`: \"broken.py\":1 does not parse: invalid syntax"),
        ("TNX374", 9, "reward `e`: file \"nope.py\" does not exist"),
    ]


def test_rl_stages_have_their_data_rewards_and_critic_checked(tmp_path: Path) -> None:
    # The held-out prompts are scored by the stage's rewards, so they need the rewards' columns too.
    (tmp_path / "train.jsonl").write_text('{"prompt": "1+1=", "answer": "2"}\n')
    (tmp_path / "held.jsonl").write_text('{"prompt": "1+2="}\n')
    body = ('dataset train = jsonl("train.jsonl")\ndataset held = jsonl("held.jsonl")\n'
            'model critic = hf("no_critic", tokenizer = t)\n'
            'reward right = exact_match(field = "answer")\nreward mine = python("gone.py:score")\n'
            'stage solve: ppo { policy = m\n critic = critic\n data = train\n eval_data = held\n'
            ' eval_every = 1\n rewards = [right, mine]\n steps = 1\n batch_size = 4 }\n')
    assert codes_at(tmp_path, body) == [
        ("TNX371", 6, 'dataset `held`: 1 bad row in "held.jsonl"'),
        ("TNX372", 7, 'checkpoint "no_critic" of model `critic` does not exist'),
        ("TNX374", 9, 'reward `mine`: file "gone.py" does not exist'),
    ]


def _safetensors(path: Path, header: bytes) -> None:
    path.write_bytes(struct.pack("<Q", len(header)) + header)


def test_hf_checkpoints_need_config_weights_and_tokenizer(tmp_path: Path) -> None:
    config = {"architectures": ["LlamaForCausalLM"], "hidden_size": 64, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 128,
              "vocab_size": 300, "max_position_embeddings": 128, "rms_norm_eps": 1e-5}
    for name in ("only_config", "bad_weights", "sharded"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps(config))
    (tmp_path / "bad_weights" / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{{{")
    (tmp_path / "sharded" / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    _safetensors(tmp_path / "sharded" / "model-00001-of-00002.safetensors", b'{"__metadata__": {}}')
    body = ('model one = hf("only_config")\nmodel two = hf("bad_weights", tokenizer = t)\n'
            'model three = hf("sharded", tokenizer = t)\n'
            'export one to "out/1" as "hf"\nexport two to "out/2" as "hf"\nexport three to "out/3" as "hf"\n')
    found = codes_at(tmp_path, body)
    assert [(code, line) for code, line, _ in found] == [("TNX372", 5)] * 2 + [("TNX372", 6), ("TNX372", 7)]
    messages = [m for _, _, m in found]
    assert "no model.safetensors or model.safetensors.index.json" in messages[0]
    assert "no tokenizer.json" in messages[1] and "(or set `tokenizer =` on the model)" in messages[1]
    assert messages[2].endswith("model.safetensors is not a safetensors file (bad header length)")
    assert messages[3].endswith("weights file model-00002-of-00002.safetensors is missing")


def test_outputs_must_be_writable_and_probes_leave_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "file").write_text("keep me")
    (tmp_path / "existing").mkdir()
    (tmp_path / "existing" / "user.txt").write_text("user data")
    body = 'export m to "file/out" as "hf"\nexport m to "existing" as "hf"\nexport m to "new/deep" as "hf"\n'
    assert [c[:2] for c in codes_at(tmp_path, body)] == [("TNX375", 5)]
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert not (tmp_path / "new").exists() and (tmp_path / "file").read_text() == "keep me"

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(preflight_module.tempfile, "mkstemp", refuse)
    found = codes_at(tmp_path, body, run_dir=tmp_path / "run")
    assert [c[:2] for c in found] == [("TNX375", 1), ("TNX375", 5), ("TNX375", 6), ("TNX375", 7)]
    assert found[0][2].startswith(f"run directory {tmp_path / 'run'} is not writable: {tmp_path} "
                                  "is not writable (Permission denied)")
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_exports_follow_run_dir_and_models_leave_memory_after_their_last_reader(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from tunix_dsl.runtime.executor import Executor

    body = (STAGE.format(name="first", model="m", data="sums")
            + STAGE.format(name="second", model="first.model", data="sums")
            + 'export second.model to "out/second" as "hf"\n')
    pipeline = load(str(write(tmp_path, body)))
    lines: list[str] = []
    executor = Executor(pipeline, tmp_path / "run", log=lines.append, export_root=tmp_path / "run" / "exports")
    executor.run()
    assert (tmp_path / "run" / "exports" / "out" / "second" / "config.json").is_file()
    assert not (tmp_path / "out").exists()  # two --run-dir runs never share an export folder
    # `m` is read only by `first`, `first.model` only by `second`, `second.model` by the export.
    released = [line.strip() for line in lines if "released" in line]
    assert released == ["released model `m` from memory (nothing later reads it)",
                        "released `first.model` from memory (nothing later reads it)",
                        "released `second.model` from memory (nothing later reads it)"]
    assert executor.outputs == {} and executor._decl_models == {}
    order = [line.strip().split(" ")[0] for line in lines if line.startswith(("stage ", "  released"))]
    assert order == ["stage", "released", "stage", "released", "released"]

    # Without --run-dir, relative exports stay next to the .tnx file, as before.
    assert export_destination("out/x", tmp_path, None) == tmp_path / "out" / "x"
    assert export_destination("/abs/x", tmp_path, tmp_path / "run" / "exports") == Path("/abs/x")


def test_two_files_with_one_pipeline_name_do_not_share_a_run_directory(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    first = write(tmp_path, 'export m to "out/m" as "hf"\n')
    default_run = tmp_path / "runs" / "pf"
    default_run.mkdir(parents=True)
    claim_source(default_run, str(first))  # what a run of p.tnx left behind
    (default_run / "stages").mkdir()
    (default_run / "stages" / "keep.txt").write_text("finished work")
    before = sorted(str(p) for p in default_run.rglob("*"))
    other = write(tmp_path, 'export m to "out/other" as "hf"\n', name="other.tnx")
    assert tnx("run", [str(other)]) == 1
    err = capsys.readouterr().err
    assert f"error: run directory {default_run} belongs to {first}, not {other}" in err
    assert "pass --run-dir" in err and "rename one of the pipelines" in err and "Traceback" not in err
    assert sorted(str(p) for p in default_run.rglob("*")) == before  # nothing deleted or added
    assert tnx("plan", [str(other)]) == 1
    assert f"belongs to {first}, not {other}" in capsys.readouterr().err
    assert tnx("run", [str(other), "--run-dir", str(tmp_path / "own")]) == 0
    assert (tmp_path / "own" / "exports" / "out" / "other" / "config.json").is_file()


def test_a_project_folder_copied_whole_keeps_its_run_directory(tmp_path: Path) -> None:
    import shutil

    (tmp_path / "a" / "runs" / "pf").mkdir(parents=True)
    (tmp_path / "a" / "p.tnx").write_text(HEAD)
    claim_source(tmp_path / "a" / "runs" / "pf", str(tmp_path / "a" / "p.tnx"))
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    assert source_conflict(tmp_path / "b" / "runs" / "pf", str(tmp_path / "b" / "p.tnx")) is None
    assert "belongs to" in source_conflict(tmp_path / "b" / "runs" / "pf", str(tmp_path / "b" / "q.tnx"))


def test_a_run_directory_copied_to_another_depth_still_names_the_same_file(tmp_path: Path) -> None:
    """A relative route whose surplus `..` stop at the filesystem root (a run directory
    under /tmp copied one level up or down) still leads to the file that made it."""
    import json

    source, run = tmp_path / "p.tnx", tmp_path / "run"
    run.mkdir()
    source.write_text(HEAD)
    route = "../" * (len(run.resolve().parts) + 3) + str(source.resolve()).lstrip("/")
    (run / "source.json").write_text(json.dumps({"file": route}))
    assert source_conflict(run, str(source)) is None
    message = source_conflict(run, str(tmp_path / "q.tnx"))
    assert message is not None and f"belongs to {source.resolve()}, not" in message


def test_preflight_reads_files_without_jax() -> None:
    import subprocess
    import sys

    code = "import sys, tunix_dsl.runtime.preflight; print(sorted({'jax', 'flax'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
