"""Multi-turn PPO: on a hand-built episode, GAE runs over the model's tokens only and the
episode's reward reaches every turn; observation tokens get no reward, advantage or return."""

from __future__ import annotations

import numpy as np
import pytest

from tests.compiler import numpy_ref as ref
from tunix_dsl.compiler import losses
from tunix_dsl.compiler.stages.ppo import token_rewards

# Two episodes of width 12. m: a model token, o: an observation token, .: padding.
EPISODES = ("oommmooommm.",  # an opening observation, a turn, an observation, a turn
            "mmm.........")  # answered in one turn
MASK = np.array([[c == "m" for c in row] for row in EPISODES])
REWARDS = np.array([2.0, -1.0], np.float32)
BETA = 0.1


def _reference(kl: np.ndarray, values: np.ndarray, gamma: float, lam: float
               ) -> tuple[np.ndarray, np.ndarray]:
    """Compress each episode to its model tokens, run textbook GAE, put the results back."""
    advantages, returns = np.zeros(MASK.shape), np.zeros(MASK.shape)
    for b, row in enumerate(MASK):
        steps = np.flatnonzero(row)
        r = -BETA * kl[b, steps].astype(np.float64)
        r[-1] += REWARDS[b]  # the episode's reward on its last model token
        v = values[b, steps].astype(np.float64)
        a, running = np.zeros(len(steps)), 0.0
        for i in reversed(range(len(steps))):
            next_value = v[i + 1] if i + 1 < len(steps) else 0.0
            running = r[i] + gamma * next_value - v[i] + gamma * lam * running
            a[i] = running
        advantages[b, steps], returns[b, steps] = a, a + v
    return advantages, returns


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.9, 0.5)])
def test_gae_over_an_episode_skips_its_observations(gamma: float, lam: float) -> None:
    rng = np.random.default_rng(3)
    kl = np.where(MASK, rng.uniform(0, 0.3, MASK.shape), 0.0).astype(np.float32)
    # the critic's values on observation tokens and padding are never read: NaN proves it
    values = np.where(MASK, rng.normal(size=MASK.shape), np.nan).astype(np.float32)

    rewards = np.asarray(token_rewards(REWARDS, kl, MASK, BETA))
    assert rewards[0, 10] == pytest.approx(REWARDS[0] - BETA * kl[0, 10])  # the last model token
    assert rewards[1, 2] == pytest.approx(REWARDS[1] - BETA * kl[1, 2])
    assert (rewards[~MASK] == 0).all()

    advantages, returns = (np.asarray(x, np.float64) for x in losses.gae(rewards, values, MASK,
                                                                           gamma=gamma, lam=lam))
    expected_adv, expected_ret = _reference(kl, values, gamma, lam)
    np.testing.assert_allclose(advantages, expected_adv, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(returns, expected_ret, rtol=1e-5, atol=1e-6)
    assert (advantages[~MASK] == 0).all() and (returns[~MASK] == 0).all()
    # the closing turn's reward reaches the first turn through the observation between them
    assert abs(advantages[0, 2]) > 0
    # the general numpy reference (real positions as time steps) agrees
    ref_adv, _ = ref.gae(rewards.astype(np.float64), np.nan_to_num(values), MASK, gamma, lam)
    np.testing.assert_allclose(advantages, ref_adv, rtol=1e-5, atol=1e-6)
    # whitening counts model tokens only, and leaves observation tokens at 0
    whitened = np.asarray(losses.masked_whiten(advantages, MASK))
    np.testing.assert_allclose(whitened, ref.whiten(expected_adv, MASK), rtol=1e-4, atol=1e-5)
    assert (whitened[~MASK] == 0).all()


def test_a_turn_bootstraps_from_the_next_turns_first_value() -> None:
    """γ = λ = 1, no KL, no reward: A_t = V_{t'} − V_t across the observation."""
    values = np.where(MASK, np.arange(12, dtype=np.float32)[None, :] + 1.0, 0.0)
    zero = np.zeros(2, np.float32)
    rewards = np.asarray(token_rewards(zero, np.zeros(MASK.shape, np.float32), MASK, 0.0))
    advantages, returns = (np.asarray(x) for x in losses.gae(rewards, values, MASK, gamma=1.0,
                                                               lam=0.0))
    # position 4 ends turn 1; the next model token is position 8 (after 3 observation tokens)
    assert advantages[0, 4] == pytest.approx(values[0, 8] - values[0, 4])
    assert returns[0, 4] == pytest.approx(values[0, 8])
    assert advantages[0, 10] == pytest.approx(-values[0, 10])  # the episode's end: V' = 0
