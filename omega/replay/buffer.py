"""A host-side sequence replay buffer for model-based agents (MuZero): numpy only, no JAX.

Layout
------
Data is stored per env, time-major, in ring buffers of ``C = ceil(max_size / N)`` slots::

    obs[key]        [N, C, ...]   obs[key][e, s] was seen when action[e, s] was chosen
    action          [N, C]        int32
    reward          [N, C]        float32, reward of that step
    terminated      [N, C]        bool, the step ended the episode in a terminal state
    truncated       [N, C]        bool, the step hit a time limit (not terminal)
    truncation_value [N, C]       float32, value of the real final obs of a truncated episode
    search_policy   [N, C, A]     float32, the search's visit distribution at obs[e, s]
                                  (reanalyze replaces it with fresher ones)
    behaviour_policy [N, C, A]    float32, the policy the action was sampled from: the
                                  acting search's, never replaced
    root_value      [N, C]        float32, the search's value estimate of obs[e, s] (0 when
                                  ``add`` got none: the n-step targets then bootstrap from 0)
    outcome         [N, C]        int8, 1 / -1 once the step's episode ended in success /
                                  failure, 0 while it runs (success: terminal reward > 0)
    priority        [N, C]        float64, raw priority of a sequence starting at that step
    memory          [N, C, ...]   recurrent learners only: the encoder memory (carry) before
                                  obs[e, s], e.g. [L, E] perceiver latents, float32: L * E * 4
                                  bytes per step, usually far more than the observation
    first           [N, C]        bool, recurrent learners only: obs[e, s] starts an episode
                                  (the encoder resets its memory there)

``search_policy`` and ``behaviour_policy`` are kept only for a learner whose ``add`` passes
``search_policy`` (MuZero); without them the buffer needs ``num_actions`` (for the random
actions past an episode end) and its batches have no policy targets.

All envs advance in lock-step (one :class:`~omega.agents.base.Trajectory` adds ``T`` steps
to every env), so one counter ``time`` (steps added per env) indexes the whole buffer:
step ``tau`` of env ``e`` lives in slot ``tau % C``. The live steps are
``[oldest, time)``: the ``C`` newest, and only those at most ``max_age`` env steps old
(ages and sizes count steps summed over envs, like the training budget).

Sampling
--------
``sample`` draws ``B`` sequence starts ``(e, tau)`` from the live steps (uniformly or in
proportion to ``priority ** alpha``, optionally with a fixed fraction from successful
episodes) and returns unroll targets for ``K + 1`` positions ``tau .. tau + K``:

- values: n-step returns ``sum_i gamma^i r_{tau+i} + gamma^m root_value_{tau+m}``, cut at
  an episode end (a terminal adds nothing, a time limit adds ``gamma^(j+1)`` times its
  ``truncation_value``) and shortened near the newest stored step (see
  :func:`nstep_value_targets`);
- past a terminal step the episode is absorbing: reward and value targets 0, no policy loss,
  terminal targets 1 (from the terminal step itself on);
- past a time limit or the newest stored step nothing is known: every loss is masked;
- actions past an episode end are uniform random (the model must handle any action there).

Priorities are updated by the learner after each train step (``update_priorities``); new
steps get the largest priority seen so far, so each is likely to be replayed once.

Memory: when ``add`` gets ``memory`` and ``first`` (a learner with a recurrent encoder), a
batch also carries :class:`MemoryBatch`: the stored memory at each sequence start, or, with
``burn_in`` ``W`` > 0, the memory stored up to ``W`` steps earlier and the observations in
between, so the learner can rebuild the start memory with its current params. The burn-in
window is clipped at the episode start and at the oldest live step. The bootstrap and next
observations come with their stored memories too.

Reanalyze: a learner can draw the starts first (``sample_starts``), recompute the search
targets of the steps the batch will use (``unroll_positions``, ``observations_at``), write
them back (``set_search_targets``) and then build the batch (``sample(starts=...)``). A
reanalyze running apart from the train steps (remote workers) draws steps with
``sample_positions`` and writes back with ``set_search_targets_if_live``, which skips the
steps evicted meanwhile.

Persistence: ``state_dict`` returns the buffer as numpy arrays and numbers (the ring arrays
whole, so its size is set by ``max_size``, not by how much was added) and
``load_state_dict`` restores it into an empty buffer of the same configuration; the training
loop saves it with each checkpoint (docs/architecture.md, "Checkpoints and resume").
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

PRIORITY_EPS = 1e-3  # keeps every live step sampleable


class MemoryBatch(NamedTuple):
    """The encoder memory of a recurrent learner's batch; ``M`` one stored memory [...],
    ``W`` the burn-in steps. The memory before step ``p`` of the burn-in (or of the start,
    ``p = W``) is: ``memory`` at the first step with ``burn_in_mask`` 1 (the start when none
    is), then the encoder's memory after each earlier masked-in observation."""

    memory: np.ndarray  # [B, M...] stored memory at the window's first step
    first: np.ndarray  # [B] bool, the sequence start begins an episode
    burn_in_obs: dict[str, np.ndarray]  # [B, W, ...] observations at start - W .. start - 1
    burn_in_first: np.ndarray  # [B, W] bool
    burn_in_mask: np.ndarray  # [B, W] float32, 1 for steps of the start's episode (live)
    bootstrap_memory: np.ndarray  # [B, K+1, M...] stored memory before bootstrap_obs
    bootstrap_first: np.ndarray  # [B, K+1] bool
    # With ``next_obs`` only (None otherwise):
    next_memory: np.ndarray | None = None  # [B, K, M...] stored memory before next_obs
    next_first: np.ndarray | None = None  # [B, K] bool


class ReplayBatch(NamedTuple):
    """``B`` sampled sequences; ``K`` unroll steps."""

    obs: dict[str, np.ndarray]  # [B, ...] observation at each sequence start
    action: np.ndarray  # [B, K] int32
    reward_target: np.ndarray  # [B, K] float32, reward of unroll step k (into position k+1)
    reward_mask: np.ndarray  # [B, K] float32 (also masks terminal_target)
    terminal_target: np.ndarray  # [B, K] float32, 1 where unroll step k ended the episode
    # in a terminal state or follows one (absorbing), 0 otherwise (time limits included)
    value_target: np.ndarray  # [B, K+1] float32
    value_mask: np.ndarray  # [B, K+1] float32
    policy_target: np.ndarray | None  # [B, K+1, A] float32; None: the replay keeps no policies
    policy_mask: np.ndarray  # [B, K+1] float32
    weight: np.ndarray  # [B] float32, importance weight (1 without prioritised sampling)
    # The same value targets split for a learner that bootstraps with its current network:
    # value_target == value_partial + bootstrap_discount * root_value(bootstrap_obs).
    value_partial: np.ndarray  # [B, K+1] float32, the n-step target without its bootstrap
    bootstrap_discount: np.ndarray  # [B, K+1] float32, gamma^m, 0 where nothing bootstraps
    bootstrap_obs: dict[str, np.ndarray]  # [B, K+1, ...] the observation bootstrapped from
    index: tuple[np.ndarray, np.ndarray]  # ([B] env, [B] slot): for update_priorities
    # With ``next_obs=True`` only (None otherwise): the observation after each unrolled step,
    # and 1 where it really is that step's successor (0 at and after an episode end, whose
    # stored next observation starts the next episode, and past the newest stored step).
    next_obs: dict[str, np.ndarray] | None = None  # [B, K, ...]
    next_obs_mask: np.ndarray | None = None  # [B, K] float32
    memory: MemoryBatch | None = None  # recurrent learners only (``add`` got memory)
    # The acting search's policies at positions start .. start + K (what each action was
    # sampled from), 0 where policy_mask is 0; reanalyze leaves them as they were.
    behaviour_policy: np.ndarray | None = None  # [B, K+1, A] float32


def nstep_value_targets(reward: np.ndarray, terminated: np.ndarray, truncated: np.ndarray,
                        truncation_value: np.ndarray, root_value: np.ndarray,
                        known: np.ndarray, gamma: float) -> np.ndarray:
    """n-step bootstrapped value targets [...] for windows starting at step ``p``.

    ``reward``, ``terminated``, ``truncated``, ``truncation_value`` are [..., n] for steps
    ``p .. p+n-1``; ``root_value`` is [..., n+1] for ``p .. p+n``; ``known`` [...] >= 1 is how
    many steps from ``p`` on are stored (entries past them are ignored). The target sums
    discounted rewards up to the first episode end within ``n`` steps, adding
    ``gamma^(j+1) truncation_value`` when that end is a time limit and nothing when it is
    terminal. Without an end it bootstraps ``gamma^m root_value[m]`` with ``m = n``, or
    ``m = known - 1`` when fewer steps are stored (the last stored step has no successor yet).
    """
    n = reward.shape[-1]
    assert root_value.shape[-1] == n + 1, (root_value.shape, n)
    i = np.arange(n)
    done = terminated | truncated
    # alive[..., i]: no episode end among steps 0 .. i-1 of the window.
    alive = np.concatenate([np.ones(done.shape[:-1] + (1,), bool),
                            np.cumprod(~done, axis=-1)[..., :-1].astype(bool)], axis=-1)
    limit = np.minimum(known, n)[..., None]
    ends_here = alive & done & (i < limit)  # at most one True per window
    ended = ends_here.any(axis=-1)
    m = np.clip(np.minimum(known - 1, n), 0, n)  # bootstrap offset without an end
    used = alive & np.where(ended[..., None], i < limit, i < m[..., None])
    discounts = gamma ** i  # [n]
    ret = np.sum(np.where(used, reward, 0.0) * discounts, axis=-1)
    ret += np.sum(np.where(ends_here & truncated & ~terminated, truncation_value, 0.0)
                  * gamma ** (i + 1), axis=-1)
    boot = np.take_along_axis(root_value, m[..., None], axis=-1)[..., 0]
    ret += np.where(ended, 0.0, gamma ** m * boot)
    return ret.astype(np.float32)


class ReplayBuffer:
    """See the module docstring. Storage is allocated on the first ``add``."""

    def __init__(self, max_size: int, num_unroll_steps: int, td_steps: int, gamma: float,
                 max_age: int | None = None, prioritized: bool = False,
                 priority_alpha: float = 0.6, priority_beta: float = 0.4,
                 success_fraction: float | None = None, next_obs: bool = False,
                 burn_in: int = 0, seed: int = 0, num_actions: int | None = None):
        if max_size < 1 or num_unroll_steps < 0 or td_steps < 1 or burn_in < 0:
            raise ValueError("max_size >= 1, num_unroll_steps >= 0, td_steps >= 1 and "
                             "burn_in >= 0 required")
        self.burn_in = int(burn_in)
        self.max_size = int(max_size)
        self.max_age = None if max_age is None else int(max_age)
        self.unroll = int(num_unroll_steps)
        self.td_steps = int(td_steps)
        self.gamma = float(gamma)
        self.prioritized = bool(prioritized)
        self.alpha = float(priority_alpha)
        self.beta = float(priority_beta)
        self.success_fraction = success_fraction
        self.with_next_obs = bool(next_obs)
        # From the first add's search_policy, or this when add gets none.
        self.num_actions = None if num_actions is None else int(num_actions)
        self.rng = np.random.default_rng(seed)
        self.num_envs = 0
        self.capacity = 0  # slots per env
        self.time = 0  # steps added per env
        self.data: dict[str, np.ndarray] = {}
        self.obs: dict[str, np.ndarray] = {}
        self.memory: np.ndarray | None = None  # [N, C, ...] once add gets memory
        self.first: np.ndarray | None = None  # [N, C] bool, likewise
        self._episode_start = np.zeros(0, np.int64)  # [N] time of each env's current episode
        self._max_priority = 1.0

    # -- size --------------------------------------------------------------------------------

    @property
    def oldest(self) -> int:
        """Oldest live time index (per env)."""
        lo = self.time - self.capacity
        if self.max_age is not None and self.num_envs:
            lo = max(lo, self.time - self.max_age // self.num_envs)
        return max(lo, 0)

    @property
    def max_live(self) -> int:
        """The most live steps the buffer can hold, summed over envs."""
        if not self.num_envs:
            return self.max_size if self.max_age is None else min(self.max_size, self.max_age)
        per_env = self.capacity
        if self.max_age is not None:
            per_env = min(per_env, self.max_age // self.num_envs)
        return per_env * self.num_envs

    def __len__(self) -> int:
        """Live steps, summed over envs."""
        return (self.time - self.oldest) * self.num_envs

    # -- adding ------------------------------------------------------------------------------

    @property
    def keeps_policies(self) -> bool:
        """Whether the buffer stores search and behaviour policies (``add`` got them)."""
        return "search_policy" in self.data

    def _allocate(self, obs: Mapping[str, np.ndarray], search_policy: np.ndarray | None,
                  memory: np.ndarray | None) -> None:
        if search_policy is not None:
            self.num_actions = int(np.shape(search_policy)[-1])
        elif self.num_actions is None:
            raise ValueError("a replay without search_policy needs num_actions (give it to "
                             "the ReplayBuffer)")
        num_actions = self.num_actions
        n = self.num_envs
        c = self.capacity = math.ceil(self.max_size / n)
        self.obs = {k: np.zeros((n, c) + v.shape[2:], v.dtype) for k, v in obs.items()}
        if memory is not None:
            self.memory = np.zeros((n, c) + np.shape(memory)[2:], np.float32)
            self.first = np.zeros((n, c), bool)
        self.data = {
            "action": np.zeros((n, c), np.int32),
            "reward": np.zeros((n, c), np.float32),
            "terminated": np.zeros((n, c), bool),
            "truncated": np.zeros((n, c), bool),
            "truncation_value": np.zeros((n, c), np.float32),
            "search_policy": np.zeros((n, c, num_actions), np.float32),
            "behaviour_policy": np.zeros((n, c, num_actions), np.float32),
            "root_value": np.zeros((n, c), np.float32),
            "outcome": np.zeros((n, c), np.int8),
            "priority": np.zeros((n, c), np.float64),
        }
        if search_policy is None:
            del self.data["search_policy"], self.data["behaviour_policy"]
        self._episode_start = np.zeros(n, np.int64)

    def add(self, obs: Mapping[str, np.ndarray], action: np.ndarray, reward: np.ndarray,
            terminated: np.ndarray, truncated: np.ndarray, truncation_value: np.ndarray,
            search_policy: np.ndarray | None = None, root_value: np.ndarray | None = None,
            memory: np.ndarray | None = None, first: np.ndarray | None = None) -> None:
        """Appends ``T`` steps of ``N`` envs, time-major: obs [T, N, ...] (no bootstrap obs),
        the rest [T, N] (search_policy [T, N, A]). Consecutive calls continue each env. A
        recurrent learner also passes memory [T, N, ...] (the encoder memory before each
        obs) and first [T, N] (obs starts an episode), in every call or in none.
        ``search_policy`` (a search's, MuZero) likewise goes to every call or to none;
        ``root_value`` left out stores 0 (value targets bootstrap from 0)."""
        t, n = np.shape(action)
        if (memory is None) != (first is None):
            raise ValueError("pass memory and first together")
        if not self.num_envs:
            self.num_envs = n
            self._allocate(obs, search_policy, memory)
        if (memory is None) != (self.memory is None):
            raise ValueError("memory must be passed to every add or to none")
        if (search_policy is None) == self.keeps_policies:
            raise ValueError("search_policy must be passed to every add or to none")
        if n != self.num_envs:
            raise ValueError(f"replay holds {self.num_envs} envs, got a batch of {n}")
        if t > self.capacity:
            raise ValueError(f"a batch of {t} steps per env exceeds the capacity {self.capacity}")
        times = self.time + np.arange(t)  # [T]
        slots = times % self.capacity
        for k, v in obs.items():
            self.obs[k][:, slots] = np.swapaxes(np.asarray(v)[:t], 0, 1)
        new = {"action": action, "reward": reward, "terminated": terminated,
               "truncated": truncated, "truncation_value": truncation_value,
               "root_value": np.zeros((t, n)) if root_value is None else root_value}
        if search_policy is not None:
            new.update(search_policy=search_policy, behaviour_policy=search_policy)
        for k, v in new.items():
            self.data[k][:, slots] = np.swapaxes(np.asarray(v, self.data[k].dtype), 0, 1)
        if memory is not None:
            self.memory[:, slots] = np.swapaxes(np.asarray(memory, np.float32), 0, 1)
            self.first[:, slots] = np.swapaxes(np.asarray(first, bool), 0, 1)
        self.data["outcome"][:, slots] = 0
        self.data["priority"][:, slots] = self._max_priority
        self.time += t

        # Label finished episodes: success when the final step was terminal with reward > 0.
        terminated, truncated = np.asarray(terminated, bool), np.asarray(truncated, bool)
        for step, env in zip(*np.nonzero(terminated | truncated), strict=True):
            end = times[step]
            start = max(self._episode_start[env], self.oldest)
            success = terminated[step, env] and reward[step, env] > 0
            self.data["outcome"][env, np.arange(start, end + 1) % self.capacity] = (
                1 if success else -1)
            self._episode_start[env] = end + 1

    # -- persistence -------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """The buffer's contents as numpy arrays and numbers (no objects, no pickle), for a
        checkpoint: the ring arrays as they are (all ``C`` slots of every env, so the size is
        fixed by ``max_size``: about ``max_size`` times the bytes of one stored step), the
        step counter, each env's current episode start and the largest priority. The
        sampling generator is not saved: ``learn`` reseeds it from the loop's key."""
        if not self.num_envs:
            return {"num_envs": 0}
        state = {
            "num_envs": self.num_envs, "capacity": self.capacity, "time": self.time,
            "max_priority": self._max_priority, "episode_start": self._episode_start,
            "data": dict(self.data), "obs": dict(self.obs),
        }
        if self.memory is not None:
            state["memory"], state["first"] = self.memory, self.first
        return state

    def load_state_dict(self, state: Mapping) -> None:
        """Restores what :meth:`state_dict` returned into this (empty) buffer; raises
        ``ValueError`` when it does not fit: another capacity, fields or array shapes."""
        if self.num_envs:
            raise ValueError("load_state_dict needs an empty buffer")
        n = int(state.get("num_envs", 0))
        if not n:
            return
        capacity = math.ceil(self.max_size / n)
        if int(state["capacity"]) != capacity:
            raise ValueError(f"the saved replay has {int(state['capacity'])} slots per env, "
                             f"this buffer {capacity} ({self.max_size} steps over {n} envs)")
        expected = ("action", "reward", "terminated", "truncated", "truncation_value",
                    "search_policy", "behaviour_policy", "root_value", "outcome", "priority")
        data = {k: np.array(v) for k, v in state["data"].items()}  # copies: writable
        if "behaviour_policy" not in data and "search_policy" in data:
            # Saved before the acting policy had its own field: those runs' importance
            # weights read the stored search policy, so a resumed run keeps doing that.
            data["behaviour_policy"] = data["search_policy"].copy()
        if "search_policy" not in data and "behaviour_policy" not in data:
            if self.num_actions is None:
                raise ValueError("the saved replay keeps no policies: this buffer needs "
                                 "num_actions")
            expected = tuple(k for k in expected if not k.endswith("_policy"))
        obs = {k: np.array(v) for k, v in state["obs"].items()}
        if sorted(data) != sorted(expected) or not obs:
            raise ValueError(f"the saved replay has fields {sorted(data)} and observations "
                             f"{sorted(obs)}; expected {sorted(expected)} and at least one")
        for name, v in {**data, **obs}.items():
            if v.shape[:2] != (n, capacity):
                raise ValueError(f"the saved replay's '{name}' has shape {v.shape}, expected "
                                 f"({n}, {capacity}, ...)")
        time = int(state["time"])
        episode_start = np.array(state["episode_start"], np.int64)
        if time < 0 or episode_start.shape != (n,):
            raise ValueError("the saved replay's counters are malformed")
        memory = first = None
        if "memory" in state:
            memory = np.array(state["memory"], np.float32)
            first = np.array(state["first"], bool)
            if memory.shape[:2] != (n, capacity) or first.shape != (n, capacity):
                raise ValueError("the saved replay's memory has the wrong shape")
        self.num_envs, self.capacity, self.time = n, capacity, time
        self.data, self.obs, self.memory, self.first = data, obs, memory, first
        if "search_policy" in data:
            self.num_actions = int(data["search_policy"].shape[-1])
        self._episode_start = episode_start
        self._max_priority = float(state["max_priority"])

    # -- sampling ----------------------------------------------------------------------------

    def _sample_starts(self, batch_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(env [B], time [B], importance weight [B]) of sampled live steps."""
        times = np.arange(self.oldest, self.time)  # [L] live times, the same for every env
        slots = times % self.capacity
        # Flat index i over the live steps: env i // L, time times[i % L].
        score = (self.data["priority"][:, slots].ravel() ** self.alpha if self.prioritized
                 else np.ones(self.num_envs * len(times)))
        groups = [np.ones(len(score), bool)]
        fractions = [1.0]
        if self.success_fraction is not None:
            success = self.data["outcome"][:, slots].ravel() == 1
            if success.any() and (~success).any():
                groups = [success, ~success]
                fractions = [self.success_fraction, 1.0 - self.success_fraction]
        # Each group gets its share of the batch; within a group, sampling follows the score.
        # Importance weights undo the prioritisation inside a group, not the balancing between
        # groups (which is the point of balancing).
        counts = self.rng.multinomial(batch_size, fractions)
        picks, weights = [], []
        for members, count in zip(groups, counts, strict=True):
            if count == 0:
                continue
            idx = np.flatnonzero(members) if len(groups) > 1 else np.arange(len(score))
            p = score[idx] / score[idx].sum()
            chosen = self.rng.choice(len(idx), size=count, p=p)
            picks.append(idx[chosen])
            weights.append((len(idx) * p[chosen]) ** -self.beta)
        pick = np.concatenate(picks)
        weight = np.concatenate(weights)
        weight = weight / weight.max() if self.prioritized else np.ones_like(weight)
        env, offset = np.divmod(pick, len(times))
        return env, times[offset], weight.astype(np.float32)

    def sample_starts(self, batch_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(env [B], time [B], importance weight [B]) of sequence starts drawn as ``sample``
        draws them; ``sample(starts=...)`` builds the batch (after, e.g., reanalyze)."""
        if len(self) == 0:
            raise ValueError("the replay buffer is empty")
        return self._sample_starts(batch_size)

    def sample(self, batch_size: int,
               starts: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> ReplayBatch:
        if len(self) == 0:
            raise ValueError("the replay buffer is empty")
        env, start, weight = self._sample_starts(batch_size) if starts is None else starts
        k, c = self.unroll, self.capacity
        d = self.data
        newest = self.time - 1

        # Steps start .. start + K - 1 (the unrolled transitions).
        steps = start[:, None] + np.arange(k)  # [B, K]
        known = steps <= newest
        s = steps % c
        term = d["terminated"][env[:, None], s] & known
        done = term | d["truncated"][env[:, None], s] | ~known
        # The first end of the sampled episode decides what follows it: a terminal makes the
        # rest absorbing; a time limit or missing data makes it unknown.
        first_end = np.where(done.any(axis=1), np.argmax(done, axis=1), k)  # [B]
        ended_terminal = np.zeros(len(env), bool)  # [B]
        if k:
            ended_terminal = (first_end < k) & term[np.arange(len(env)),
                                                    np.minimum(first_end, k - 1)]
        position = np.arange(k + 1)  # [K+1]
        inside = (position <= first_end[:, None]) & (start[:, None] + position <= newest)
        after_term = (position > first_end[:, None]) & ended_terminal[:, None]  # [B, K+1]

        random_actions = self.rng.integers(0, self.num_actions, (len(env), k))
        action = np.where(inside[:, :-1], d["action"][env[:, None], s], random_actions)
        # The step into a terminal is inside; every later step (absorbing) has reward 0.
        reward = np.where(inside[:, :-1], d["reward"][env[:, None], s], 0.0)
        reward_mask = inside[:, :-1] | after_term[:, :-1]

        pos = start[:, None] + np.arange(k + 1)  # [B, K+1]: positions start .. start + K
        value, value_partial, boot_discount, boot_slot = self._value_targets(env, pos, inside)
        bootstrap_obs = {key: v[env[:, None], boot_slot] for key, v in self.obs.items()}
        policy, behaviour = self._policy_targets(env, pos, inside)

        start_slot = start % c
        obs = {key: v[env, start_slot] for key, v in self.obs.items()}
        f32 = np.float32
        next_obs, next_obs_mask = None, None
        if self.with_next_obs:
            next_obs = {key: v[env[:, None], (steps + 1) % c] for key, v in self.obs.items()}
            next_obs_mask = (inside[:, :-1] & ~done & (steps + 1 <= newest)).astype(f32)
        memory = None
        if self.memory is not None:
            memory = self._memory_batch(env, start, boot_slot,
                                        (steps + 1) % c if self.with_next_obs else None)
        return ReplayBatch(
            obs=obs, action=action.astype(np.int32), reward_target=reward.astype(f32),
            reward_mask=reward_mask.astype(f32), terminal_target=after_term[:, 1:].astype(f32),
            value_target=value.astype(f32),
            value_mask=(inside | after_term).astype(f32), policy_target=policy,
            policy_mask=inside.astype(f32), weight=weight,
            value_partial=value_partial.astype(f32), bootstrap_discount=boot_discount.astype(f32),
            bootstrap_obs=bootstrap_obs, index=(env, start_slot), next_obs=next_obs,
            next_obs_mask=next_obs_mask, memory=memory, behaviour_policy=behaviour)

    def _value_targets(self, env: np.ndarray, pos: np.ndarray, inside: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(value target, the same without its bootstrap, the bootstrap's discount, the slot
        bootstrapped from), each [B, K+1], at positions ``pos`` [B, K+1] of envs ``env`` [B];
        0 where not ``inside`` the sampled episode."""
        n, c, d = self.td_steps, self.capacity, self.data
        newest = self.time - 1
        win = pos[..., None] + np.arange(n)  # [B, K+1, n]
        win_s = win % c
        e3 = env[:, None, None]
        value = nstep_value_targets(
            d["reward"][e3, win_s], d["terminated"][e3, win_s], d["truncated"][e3, win_s],
            d["truncation_value"][e3, win_s],
            d["root_value"][e3, np.concatenate([win, win[..., -1:] + 1], -1) % c],
            np.maximum(newest - pos + 1, 1), self.gamma)
        value = np.where(inside, value, 0.0)
        # The same targets without the stored bootstrap values, and where they bootstrap from.
        zeros = np.zeros(win.shape, np.float32)
        known_steps = np.maximum(newest - pos + 1, 1)
        value_partial = np.where(inside, nstep_value_targets(
            d["reward"][e3, win_s], d["terminated"][e3, win_s], d["truncated"][e3, win_s],
            d["truncation_value"][e3, win_s], np.zeros(win.shape[:-1] + (n + 1,), np.float32),
            known_steps, self.gamma), 0.0)
        boot_discount = np.where(inside, nstep_value_targets(
            zeros, d["terminated"][e3, win_s], d["truncated"][e3, win_s], zeros,
            np.ones(win.shape[:-1] + (n + 1,), np.float32), known_steps, self.gamma), 0.0)
        boot_slot = (pos + np.clip(np.minimum(known_steps - 1, n), 0, n)) % c  # [B, K+1]
        return value, value_partial, boot_discount, boot_slot

    def _policy_targets(self, env: np.ndarray, pos: np.ndarray, inside: np.ndarray
                        ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(search policy, behaviour policy) [B, K+1, A] float32 at positions ``pos``, 0 where
        not ``inside``; (None, None) when the replay keeps no policies."""
        if not self.keeps_policies:
            return None, None
        d, slot = self.data, pos % self.capacity
        policy = np.where(inside[..., None], d["search_policy"][env[:, None], slot], 0.0)
        behaviour = np.where(inside[..., None], d["behaviour_policy"][env[:, None], slot], 0.0)
        return policy.astype(np.float32), behaviour.astype(np.float32)

    def _memory_batch(self, env: np.ndarray, start: np.ndarray, boot_slot: np.ndarray,
                      next_slot: np.ndarray | None) -> MemoryBatch:
        """The :class:`MemoryBatch` of sequences starting at (env [B], start [B]);
        boot_slot [B, K+1] and next_slot [B, K] are the slots of the bootstrap and next
        observations."""
        w, c = self.burn_in, self.capacity
        pos = start[:, None] + np.arange(-w, 1)  # [B, W+1]: the window and the start
        live = pos >= self.oldest
        first = self.first[env[:, None], pos % c] & live
        # The window begins at the start's episode start or the oldest live step, whichever
        # is later (never more than W steps back).
        last_first = np.where(first.any(1), w - np.argmax(first[:, ::-1], axis=1), 0)  # [B]
        begin = np.maximum(last_first, np.argmax(live, axis=1))  # [B] index into the window
        mask = np.arange(w)[None, :] >= begin[:, None]  # [B, W]
        e = env[:, None]
        memory = self.memory[env, pos[np.arange(len(env)), begin] % c]
        burn_slot = pos[:, :-1] % c
        return MemoryBatch(
            memory=memory, first=self.first[env, start % c],
            burn_in_obs={key: v[e, burn_slot] for key, v in self.obs.items()},
            burn_in_first=self.first[e, burn_slot], burn_in_mask=mask.astype(np.float32),
            bootstrap_memory=self.memory[e, boot_slot], bootstrap_first=self.first[e, boot_slot],
            next_memory=None if next_slot is None else self.memory[e, next_slot],
            next_first=None if next_slot is None else self.first[e, next_slot])

    def update_priorities(self, index: tuple[np.ndarray, np.ndarray],
                          priority: np.ndarray) -> None:
        """Sets the raw priorities (e.g. |value target - predicted value|) of sampled starts."""
        priority = np.abs(np.asarray(priority, np.float64)) + PRIORITY_EPS
        self.data["priority"][index] = priority
        self._max_priority = max(self._max_priority, float(priority.max()))

    # -- reanalyze ---------------------------------------------------------------------------

    def unroll_positions(self, env: np.ndarray, start: np.ndarray
                         ) -> tuple[np.ndarray, np.ndarray]:
        """The distinct stored steps (env [M], time [M]) at positions ``start .. start + K`` of
        the sequences starting at (env [S], start [S]): those whose targets a batch uses."""
        time = start[:, None] + np.arange(self.unroll + 1)  # [S, K+1]
        env = np.broadcast_to(env[:, None], time.shape)
        stored = time < self.time
        key = np.unique(env[stored].astype(np.int64) * self.time + time[stored])
        return key // self.time, key % self.time

    def observations_at(self, env: np.ndarray, time: np.ndarray) -> dict[str, np.ndarray]:
        """The stored observations [M, ...] of live steps (env [M], time [M])."""
        slot = time % self.capacity
        return {key: v[env, slot] for key, v in self.obs.items()}

    def memory_at(self, env: np.ndarray, time: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The stored memories [M, ...] and first flags [M] of live steps (env [M],
        time [M]); recurrent learners only."""
        if self.memory is None:
            raise ValueError("this replay stores no memory")
        slot = time % self.capacity
        return self.memory[env, slot], self.first[env, slot]

    def sequences_at(self, env: np.ndarray, start: np.ndarray, length: int
                     ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """The stored observations [S, length, ...] and first flags [S, length] at steps
        ``start .. start + length - 1`` of envs ``env`` [S] (slots past the newest step hold
        older data: mask them by time). Recurrent learners only."""
        if self.first is None:
            raise ValueError("this replay stores no memory")
        slot = (start[:, None] + np.arange(length)) % self.capacity
        return ({key: v[env[:, None], slot] for key, v in self.obs.items()},
                self.first[env[:, None], slot])

    def set_memory(self, env: np.ndarray, time: np.ndarray, memory: np.ndarray) -> None:
        """Replaces the stored memories [M, ...] of steps (env [M], time [M]); steps that are
        not live (too old, or not stored yet) are skipped."""
        if self.memory is None:
            raise ValueError("this replay stores no memory")
        live = (time >= self.oldest) & (time < self.time)
        self.memory[env[live], time[live] % self.capacity] = memory[live]

    def _need_policies(self) -> None:
        if not self.keeps_policies:
            raise ValueError("this replay keeps no search policies (add got none)")

    def search_targets_at(self, env: np.ndarray, time: np.ndarray
                          ) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the stored search policies [M, A] and root values [M] of live steps
        (env [M], time [M]), as :meth:`set_search_targets` takes them."""
        self._need_policies()
        slot = time % self.capacity
        return (self.data["search_policy"][env, slot].copy(),
                self.data["root_value"][env, slot].copy())

    def set_search_targets(self, env: np.ndarray, time: np.ndarray, search_policy: np.ndarray,
                           root_value: np.ndarray) -> None:
        """Replaces the stored search policies [M, A] and root values [M] of live steps."""
        self._need_policies()
        if np.any(time < self.oldest) or np.any(time >= self.time):
            raise ValueError("search targets can only be set for live steps")
        slot = time % self.capacity
        self.data["search_policy"][env, slot] = search_policy
        self.data["root_value"][env, slot] = root_value

    def set_search_targets_if_live(self, env: np.ndarray, time: np.ndarray,
                                   search_policy: np.ndarray, root_value: np.ndarray) -> int:
        """:meth:`set_search_targets` for the steps (env [M], time [M]) that are still live;
        the others (evicted since they were sampled: older than :attr:`oldest`, their slot
        now holds a newer step) are skipped. Returns how many were written."""
        env, time = np.asarray(env), np.asarray(time)
        live = (time >= self.oldest) & (time < self.time)
        self.set_search_targets(env[live], time[live], np.asarray(search_policy)[live],
                                np.asarray(root_value)[live])
        return int(live.sum())

    def sample_positions(self, count: int) -> tuple[np.ndarray, np.ndarray]:
        """Up to ``count`` distinct stored steps (env [M], time [M]), sorted: a random subset
        of the unroll positions of sequences whose starts are drawn as ``sample`` draws them
        (priorities and success balancing included). For a reanalyze that runs apart from the
        train steps (remote reanalyze workers)."""
        starts = self.sample_starts(max(1, math.ceil(count / (self.unroll + 1))))
        env, time = self.unroll_positions(starts[0], starts[1])
        if len(env) > count:
            keep = np.sort(self.rng.choice(len(env), size=count, replace=False))
            env, time = env[keep], time[keep]
        return env, time

    def end_streams(self, envs: np.ndarray) -> int:
        """Ends the streams of ``envs`` at their newest stored step, for a stream whose next
        steps come from other envs (a replaced Ray actor's fresh episodes): that step becomes
        a time limit whose ``truncation_value`` makes its n-step target its own root value
        (``reward + gamma * truncation_value == root_value``), which is what the target is
        while it is the newest stored step. So no target, unroll or burn-in reaches across.
        Steps that already end an episode are left alone; returns how many were cut."""
        if not self.time:
            return 0
        envs = np.asarray(envs, np.int64)
        slot = (self.time - 1) % self.capacity
        d = self.data
        open_ = ~(d["terminated"][envs, slot] | d["truncated"][envs, slot])
        envs = envs[open_]
        d["truncated"][envs, slot] = True
        d["truncation_value"][envs, slot] = (
            (d["root_value"][envs, slot] - d["reward"][envs, slot]) / self.gamma
            if self.gamma > 0 else 0.0)
        for env in envs:  # the cut episode ends unfinished: a failure for success balancing
            start = max(self._episode_start[env], self.oldest)
            d["outcome"][env, np.arange(start, self.time) % self.capacity] = -1
            self._episode_start[env] = self.time
        return len(envs)
