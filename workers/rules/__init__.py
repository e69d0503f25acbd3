"""Rules: "when this Cal.com event happens, call these tools", written in YAML with CEL.

``load_rules(path)`` / ``parse_rules(text)`` give a ``RuleSet`` or raise ``RulesError``
listing every problem; ``RuleSet.matching(event)`` picks the rules an event triggers and
``RuleSet.run(rule, event, invoke)`` runs one, handing each tool call to ``invoke`` as a
``StepCall``. ``calhooks.workers.rules.dryrun`` shows what a rules file would do with an event.
The language is documented in docs/rules.md and in the modules' docstrings.
"""

# First: the rules' ``import cel`` then skips the library's REPL (see celpackage).
from calhooks.workers.rules import celpackage  # noqa: F401
from calhooks.workers.rules.evaluation import EvaluationError
from calhooks.workers.rules.expressions import Expression
from calhooks.workers.rules.loader import (
    load_rules,
    load_rules_from_settings,
    parse_rules,
    rule_triggers,
    rules_env,
)
from calhooks.workers.rules.model import Problem, Rule, RulesError, Step
from calhooks.workers.rules.ruleset import Match, RuleSet
from calhooks.workers.rules.runner import (
    EventContext,
    EventLike,
    Invoke,
    RuleFailed,
    RuleResult,
    StepCall,
    StepOutcome,
    Unknown,
    run_rule,
)

__all__ = [
    "EvaluationError",
    "EventContext",
    "EventLike",
    "Expression",
    "Invoke",
    "Match",
    "Problem",
    "Rule",
    "RuleFailed",
    "RuleResult",
    "RuleSet",
    "RulesError",
    "Step",
    "StepCall",
    "StepOutcome",
    "Unknown",
    "load_rules",
    "load_rules_from_settings",
    "parse_rules",
    "rule_triggers",
    "rules_env",
    "run_rule",
]
