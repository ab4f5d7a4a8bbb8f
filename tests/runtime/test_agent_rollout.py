"""Multi-turn rollout: tool-call parsing, tool failures as observations, observation masks,
KV-cache continuation against a full re-prefill, and episode rewards on the model's tokens."""

from __future__ import annotations

import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tunix_dsl.compiler import losses_rl
from tunix_dsl.data.tokenizers import ByteTokenizer
from tunix_dsl.models.config import ModelConfig
from tunix_dsl.models.sampler import SamplingConfig, left_pad
from tunix_dsl.models.transformer import Transformer, gather_logps
from tunix_dsl.runtime.agent_env import PythonEnv, Reply, ToolRunner, ToolsEnv
from tunix_dsl.runtime.agent_rollout import (
    AgentRollout,
    AgentSettings,
    Episodes,
    ObservationFraming,
    episode_append,
    episode_prefill,
    episode_turn,
)
from tunix_dsl.runtime.tool_calls import ToolCall, parse_tool_calls, render_tool_call

TOK = ByteTokenizer()
PAD, EOS = TOK.pad_id, TOK.eos_id


@pytest.fixture(scope="module")
def model() -> Transformer:
    cfg = ModelConfig.from_preset("pico", TOK.vocab_size, tie_embeddings=False, n_layers=1)
    model = Transformer(cfg, rngs=nnx.Rngs(0))
    nnx.update(model, jax.tree.map(lambda p: 4 * p, nnx.state(model, nnx.Param)))
    return model


# ---------------------------------------------------------------- parsing


def test_hermes_calls_parse_in_order():
    text = ('Let me compute. <tool_call>{"name": "calculate", "arguments": {"expression": '
            '"2*3"}}</tool_call> and <tool_call>\n{"name": "now", "arguments": "{}"}\n</tool_call>')
    assert parse_tool_calls(text) == [ToolCall("calculate", {"expression": "2*3"}),
                                      ToolCall("now", {})]
    assert parse_tool_calls("the answer is 6") == []
    assert parse_tool_calls(render_tool_call("f", {"x": 1})) == [ToolCall("f", {"x": 1})]


@pytest.mark.parametrize(("text", "error"), [
    ('<tool_call>{"name": "f", "arguments": {</tool_call>', "not valid JSON"),
    ("<tool_call>[1, 2]</tool_call>", "must be a JSON object"),
    ('<tool_call>{"arguments": {}}</tool_call>', 'has no "name"'),
    ('<tool_call>{"name": "f", "arguments": [1]}</tool_call>', '"arguments" of `f`'),
    ('<tool_call>{"name": "f", "arguments": {}}', "unterminated <tool_call>"),
])
def test_malformed_calls_come_back_with_an_error(text, error):
    (call,) = parse_tool_calls(text)
    assert call.error is not None and error in call.error


# ---------------------------------------------------------------- tools


def test_exception_timeout_unknown_and_bad_json_become_observations():
    release = threading.Event()

    def boom(x: int) -> int:
        raise RuntimeError(f"no {x}")

    def hang() -> str:
        release.wait()
        return "late"

    runner = ToolRunner({"boom": boom, "hang": hang, "double": lambda x: 2 * x}, timeout=0.05)
    try:
        calls = [ToolCall("double", {"x": 21}), ToolCall("boom", {"x": 1}), ToolCall("hang", {}),
                 ToolCall("nope", {}), *parse_tool_calls("<tool_call>{oops</tool_call>"),
                 ToolCall("double", {"y": 1})]
        out = runner.run(calls)
    finally:
        release.set()
        runner.close()
    assert out[0] == "42"
    assert out[1] == "error: `boom` raised RuntimeError: no 1"
    assert out[2] == "error: `hang` timed out after 0.05 s"
    assert out[3].startswith("error: there is no tool `nope` (tools: boom, double, hang)")
    assert out[4].startswith("error: the tool call is not valid JSON")
    assert out[5].startswith("error: `double` raised TypeError")
    assert runner.stats.calls == {"double": 2, "boom": 1, "hang": 1, "<unknown>": 1, "<malformed>": 1}
    assert runner.stats.errors["double"] == 1 and runner.stats.errors["hang"] == 1


def test_tools_env_answers_calls_and_ends_on_an_answer():
    runner = ToolRunner({"add": lambda a, b: a + b}, timeout=5.0)
    env = ToolsEnv(runner, max_tool_calls=2)
    env.start([{}, {}])
    call = render_tool_call("add", {"a": 2, "b": 3})
    first = env.step([0, 1], [call + call, "5"])
    assert first[0].observation == "5\n5" and first[1].observation is None
    (second,) = env.step([0], [call])  # the third call of episode 0: over max_tool_calls
    assert second.observation is not None and "used its 2 tool calls" in second.observation
    runner.close()


# ---------------------------------------------------------------- rollout


class Scripted:
    """A python-style environment: replies `obs<turn>` twice, then ends (reward per turn)."""

    role = "user"
    schemas = ()  # no tools for the chat template

    def start(self, rows):
        self.turn = [0] * len(rows)
        return [None] * len(rows)

    def step(self, episodes, texts):
        out = []
        for e in episodes:
            self.turn[e] += 1
            done = self.turn[e] == 3
            out.append(Reply(None if done else f"obs{self.turn[e]}", reward=float(e), role="user"))
        return out


def _rollout(model, env, turns=4, new=5, obs=24, temperature=1.0):
    settings = AgentSettings(turns, new, obs)
    sampling = SamplingConfig(new, temperature=temperature, num_samples=2, stop_ids=(EOS,),
                              pad_id=PAD)
    prompts = [[TOK.bos_id, *TOK.encode("hi")], [TOK.bos_id, *TOK.encode("a longer one")]]
    tokens, mask = left_pad(prompts, PAD)
    agent = AgentRollout(env, TOK, settings, sampling)
    rows = [{"answer": "1"}] * 4
    episodes = agent.rollout(model, tokens, mask, rows, jax.random.key(3))
    return agent, tokens, mask, episodes


def test_observations_are_framed_by_the_chat_template():
    framing = ObservationFraming.of(TOK, "tool")
    assert (framing.end_of_turn, framing.before, framing.after) == ("\n", "tool: ", "\nassistant: ")
    # as an SFT transcript ends an assistant reply: the template's text, then eos
    settings, sampling = AgentSettings(2, 4, 32), SamplingConfig(4, pad_id=PAD, stop_ids=(EOS,))
    agent = AgentRollout(ToolsEnv(ToolRunner({}, 1.0), 1), TOK, settings, sampling)
    ids, cut = agent.observation_ids("42")
    assert ids == [*TOK.encode("\n"), EOS, *TOK.encode("tool: 42\nassistant: ")] and not cut
    assert agent.observation_ids("9" * 20) == (ids[:2] + TOK.encode("tool: ") + TOK.encode("9" * 12)
                                               + TOK.encode("\nassistant: "), True)
    agent.env.runner.close()


def test_masks_cover_exactly_the_models_tokens(model):
    agent, _, _, ep = _rollout(model, Scripted())
    obs_ids = {k: agent.observation_ids(f"obs{k}")[0] for k in (1, 2)}
    for row in range(4):
        assert ep.turns[row] == 3  # the scripted environment ends after its third turn
        # walk the row: turn tokens (own), then the framed observation (not own), ...
        at = 0
        own_runs = []
        while at < ep.real[row].sum():
            start = at
            while at < len(ep.own[row]) and ep.own[row, at]:
                at += 1
            own_runs.append((start, at))
            if len(own_runs) < 3:
                k = len(own_runs)
                ids = obs_ids[k]
                assert list(ep.tokens[row, at:at + len(ids)]) == ids
                assert ep.real[row, at:at + len(ids)].all() and not ep.own[row, at:at + len(ids)].any()
                at += len(ids)
        texts = [TOK.decode(ep.tokens[row, a:b]) for a, b in own_runs]
        assert texts == ep.turn_texts[row]
        assert ep.real[row, at:].sum() == 0 and (ep.tokens[row, at:] == PAD).all()
        assert (ep.logps[row][~ep.own[row]] == 0).all()
    assert ep.rewards.tolist() == [0.0, 3.0, 6.0, 9.0]  # three turns × the episode's index


def test_kv_continuation_equals_a_full_reprefill(model):
    _, tokens, mask, ep = _rollout(model, Scripted())
    batch = ep.batch(tokens, mask, generations=2)
    assert ep.own.sum() > 3 * 4  # real multi-token turns
    full = model(jnp.asarray(batch["tokens"][:, :-1]), attention_mask=jnp.asarray(
        batch["attention_mask"][:, :-1]), positions=jnp.asarray(batch["positions"][:, :-1]))
    width = ep.tokens.shape[1]
    logps = np.asarray(gather_logps(full[:, -width:], jnp.asarray(batch["tokens"][:, -width:])))
    # (weights scaled ×4 make logits large: the tolerance is 1e-5 absolute + 1e-5 relative)
    np.testing.assert_allclose(np.where(ep.own, logps, 0.0), ep.logps, atol=1e-5, rtol=1e-5)


def test_appending_to_the_cache_gives_the_logits_of_a_full_forward(model):
    """prefill → a turn → [last token + observation] appended: the next-token logits equal
    those of one forward over the whole history."""
    prompt = [TOK.bos_id, *TOK.encode("q: 12+30")]
    ids, mask = left_pad([prompt, prompt[:3]], PAD)
    config = SamplingConfig(6, temperature=1.0, stop_ids=(EOS,), pad_id=PAD)
    graphdef, state = nnx.split(model)
    logits, cache = episode_prefill(graphdef, state, ids, mask, 40, 1)
    out, end = episode_turn(graphdef, state, logits, cache, jax.random.key(0), config, jnp.ones(2, bool))
    observation = TOK.encode("\ntool: 42\nassistant: ")
    chunk, chunk_mask, histories = [], [], []
    for row in range(2):
        n = int(out.lengths[row])
        turn = [int(t) for t in out.tokens[row, :n]]
        tail = ([turn[-1]] if bool(end.real[row]) else []) + observation
        chunk.append(tail + [PAD] * (20 - len(tail)))
        chunk_mask.append([True] * len(tail) + [False] * (20 - len(tail)))
        histories.append([int(t) for t, m in zip(ids[row], mask[row], strict=True) if m] + turn
                         + observation)
    cached, _ = episode_append(graphdef, state, end.cache, jnp.asarray(chunk), jnp.asarray(chunk_mask))
    for row, history in enumerate(histories):
        reference = model(jnp.asarray([history]))[0, -1]
        np.testing.assert_allclose(np.asarray(cached[row]), np.asarray(reference), atol=1e-5)


def test_a_multi_token_stop_sequence_ends_the_turn(model):
    """`</tool_call>` is several tokens with the byte tokenizer: a turn ends right after the
    model writes the whole sequence (here: a greedy path's own tokens 2..4)."""
    ids, mask = left_pad([[TOK.bos_id, *TOK.encode("x = ")]], PAD)
    graphdef, state = nnx.split(model)
    logits, cache = episode_prefill(graphdef, state, ids, mask, 20, 1)
    active, key = jnp.ones(1, bool), jax.random.key(0)
    free = SamplingConfig(12, temperature=0.0, pad_id=PAD)
    path = [int(t) for t in episode_turn(graphdef, state, logits, cache, key, free, active)[0].tokens[0]]
    stop = tuple(path[2:5])
    expected = next(i + 3 for i in range(len(path)) if tuple(path[i:i + 3]) == stop)
    config = SamplingConfig(12, temperature=0.0, pad_id=PAD, stop_sequences=(stop,))
    sample, _ = episode_turn(graphdef, state, logits, cache, key, config, active)
    assert int(sample.lengths[0]) == expected
    assert [int(t) for t in sample.tokens[0, :expected]] == path[:expected]
    assert (np.asarray(sample.tokens[0, expected:]) == PAD).all()


def test_episode_rewards_reach_only_the_models_tokens():
    """A hand-built 2-episode batch: the advantage of each episode weighs its own tokens
    and nothing else (observations and padding get weight 0)."""
    own = np.array([[1, 1, 0, 0, 1, 0], [1, 0, 0, 1, 1, 1]], bool)
    real = np.array([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]], bool)
    ep = Episodes(np.arange(12, dtype=np.int32).reshape(2, 6), real, own, np.zeros((2, 6), np.float32),
                  np.array([2, 2]), [["a", "b"], ["c", "d"]], np.zeros(2, np.float32))
    batch = ep.batch(np.array([[1, 2]]), np.array([[True, True]]), generations=2)
    assert batch["completion_mask"] is own and batch["lengths"].tolist() == [3, 4]
    assert batch["attention_mask"][:, 2:].tolist() == real.tolist()
    assert batch["positions"][0].tolist() == [0, 1, 2, 3, 4, 5, 6, 6]
    advantages = losses_rl.group_advantages(jnp.asarray([1.0, 0.0]), 2, scale_by_std=True)
    weights = losses_rl.aggregation_weights(jnp.asarray(own), "sequence-mean-token-mean", norm=6.0)
    per_token = np.asarray(advantages[:, None] * weights)
    assert (per_token[~own] == 0).all()
    assert (per_token[0][own[0]] > 0).all() and (per_token[1][own[1]] < 0).all()
    np.testing.assert_allclose(per_token.sum(axis=1), np.asarray(advantages) / 2, rtol=1e-5)


def test_python_environment_opening_and_rewards(model):
    class Guess:
        def reset(self, row):
            return "guess"

        def step(self, action):
            return "again", 0.5, False

    _, _, _, ep = _rollout(model, PythonEnv(Guess, "guess"), turns=2, obs=32)
    opening = [*TOK.encode("\n"), EOS, *TOK.encode("user: guess\nassistant: ")]
    for row in range(4):
        assert list(ep.tokens[row, :len(opening)]) == opening and not ep.own[row, :len(opening)].any()
    assert ep.turns.tolist() == [2, 2, 2, 2] and ep.rewards.tolist() == [1.0] * 4
