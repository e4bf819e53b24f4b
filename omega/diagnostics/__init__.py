"""Diagnostics: tools that inspect a trained model or an env to explain a result.

Each is a module with a ``main(argv=None)``, run from the repository root as
``python -m omega.diagnostics.<name> --help``:

- ``model_probe``: what a trained plain MuZero model predicts along a scripted episode
  (value, prior, one-step Q of every action) against what really happens.
- ``river_transitions``: what a trained MuZero agent does on the River tasks, each step
  sorted by kind (boulder push, fill, crossing, ...), and where its model is wrong.
- ``search_accuracy``: on open MiniHack rooms, how often MuZero's prior, one-step model Q
  and search policy point towards the goal, per checkpoint.
- ``reanalyze_targets``: whether a trained MuZero agent's reanalyze targets match what its
  acting search produces.
- ``memory_diagnosis``: where recurrent MuZero's learning signal on the memory task
  (Omega-Memory-K6-v0) gets lost, on a replay of scripted play.
- ``shaped_rewards``: whether a trained MuZero model predicts a task's small shaped rewards
  (a bonus per new cell or kill) on the steps that earn them, and how flat its prior and
  search policy are, over played episodes (the agent's or random actions).
- ``goal_in_view``: in a recorded evaluation (``omega eval --json F --record DIR``), how
  often the goal was within the hero's view, per way the episodes ended.
- ``fights``: in a recorded evaluation, how the agent behaves next to a monster (does it
  attack, how long a contact lasts) and what killed the hero, per way the episodes ended.
- ``paths``: in a recorded evaluation, how many of the agent's moves left the hero on its
  cell (a wall, a tree) or took it back to a cell it had stood on, per way the episodes ended.
- ``monsters``: whether a trained MuZero model sees the danger of a monster next to the hero
  (its value, one-step Q and end probability there, per kind of move) against what followed.

The benchmarks (``benchmarks/``) produce the numbers of the results pages; these explain them.
``runs`` (no command line) holds what the benchmark scripts share: training a config on one
seed and evaluating it through the omega commands.
"""

DIAGNOSTICS = ("model_probe", "river_transitions", "search_accuracy", "reanalyze_targets",
               "memory_diagnosis", "shaped_rewards", "goal_in_view", "fights",
               "monsters", "paths")
