"""Names vulture reports as unused that are used, each with where (scripts/lint runs vulture).

Framework hooks are ignored by name or decorator in pyproject.toml's [tool.vulture]; this
file lists the rest. Keep it short: a name that is really dead is deleted, not listed here.
"""

from calhooks.service.calcom.overlay import Correction
from calhooks.service.calcom.tools import Tool
from calhooks.service.cli import reconcile
from calhooks.service.core import embedded_redis
from calhooks.service.intake.accesslog import AccessLog
from calhooks.service.sandbox.state import DelegationCredential
from calhooks.workers.bootstrap import WorkerOptions
from calhooks.workers.ordering import Turn
from calhooks.workers.wakeup import WakeableWorker

Correction.why  # each overlay correction's reason, read by people and the overlay's tests
Tool.response_schema  # registry data: Cal.com's response schema for each tool
embedded_redis.EmbeddedRedis  # the tests' and `calhooks dev`'s Redis server
AccessLog.fast  # which path the log takes, asserted by tests/intake/test_accesslog.py
DelegationCredential.service_account_key  # stored as Cal.com stores it (never returned)
Turn.late  # recorded for the event's history: the event lost the race for its booking
reconcile.reconcile  # `calhooks reconcile`, loaded by name from service/cli/main.py's COMMANDS
WakeableWorker.wakeups  # a counter of wake-ups, read by tests and when debugging a worker
# arq options: read by arq.Worker.__init__ from the dict worker_options returns.
WorkerOptions.handle_signals
WorkerOptions.poll_delay
WorkerOptions.job_completion_wait
WorkerOptions.health_check_interval
