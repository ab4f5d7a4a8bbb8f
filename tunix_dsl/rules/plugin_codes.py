"""Codes of plugin loading (`tunix_dsl.schemas.plugins`): a broken plugin is one located error
naming the plugin, never a traceback."""

from __future__ import annotations

from tunix_dsl.grammar.diagnostics import Severity
from tunix_dsl.rules.codes import _PRELUDE
from tunix_dsl.rules.registry import declare

E = Severity.ERROR
_DIR = "examples/plugins/local/"


def _with_plugin(plugin: str, reward: str = 'contains("=")') -> str:
    return (f'pipeline p {{\n  plugins = ["{_DIR}{plugin}"]\n}}\n\n{_PRELUDE}'
            f"reward ok = {reward}\n\nstage solve: grpo {{\n  policy = tiny\n  data = sums\n"
            "  rewards = [ok]\n  generations = 2\n  batch_size = 4\n  steps = 1\n}\n\n"
            'export solve.model to "out/solve" as "hf"\n')


declare("TNX010", "plugin-import-failed", E,
        "A plugin (a `plugins = [...]` file or an installed package's entry point) raised when "
        "imported; the message names the plugin and the exception.",
        bad=_with_plugin("broken_import.py"), good=_with_plugin("my_rewards.py"))
declare("TNX011", "plugin-duplicate-name", E,
        "Two plugins (or a plugin and the tool) register the same stage kind, source or "
        "optimizer name; the message names who registered it first.",
        bad=_with_plugin("duplicate.py", 'exact_match(field = "answer")'),
        good=_with_plugin("my_rewards.py", 'exact_match(field = "answer")'))
declare("TNX012", "plugin-not-a-schema", E,
        "A plugin registers something that is not a `StageKind` whose schema derives from "
        "`TrainingConfig`, or a source/optimizer class not deriving from its family's base "
        "(`RewardSchema`, `DatasetSchema`, `ModelSchema`, `OptimizerBase`).",
        bad=_with_plugin("not_a_schema.py"), good=_with_plugin("my_rewards.py"))
declare("TNX013", "plugin-not-found", E,
        "A `plugins = [...]` file does not exist (paths are relative to the .tnx file).",
        bad=_with_plugin("my_reward.py"), good=_with_plugin("my_rewards.py"))
