"""Names vulture reports as unused that are used, each with where (scripts/lint runs vulture).

Framework hooks are ignored by name or decorator in pyproject.toml's [tool.vulture]; this
file lists the rest. Keep it short: a name that is really dead is deleted, not listed here.
"""

from calhooks.service.calcom.overlay import Correction
from calhooks.service.calcom.tools import Tool
from calhooks.service.cli import reconcile
from calhooks.service.console.auth import Session
from calhooks.service.console.rulesfile import RulesFile
from calhooks.service.console.timeline import EventView
from calhooks.service.console.webhookstate import Section
from calhooks.service.core import embedded_redis
from calhooks.service.intake.accesslog import AccessLog
from calhooks.service.intake.spool import Quarantined
from calhooks.service.sandbox.state import BookingRecord, DelegationCredential
from calhooks.workers.bootstrap import WorkerOptions
from calhooks.workers.leases import LeaseKeeper
from calhooks.workers.ordering import Turn
from calhooks.workers.reconcile.records import PassRecord, Status
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
# Read by the console's Jinja templates (service/console/templates/).
Session.signed_in
RulesFile.loaded_at
RulesFile.modified_at
EventView.unmatched
Section.secret_age
PassRecord.duplicates
PassRecord.organization
Status.total_passes
Status.lock_left
Status.due_in
Status.requested_by
Status.gathering
BookingRecord.rescheduled  # Cal.com's flag on a replaced booking, in the sandbox's booking answers
# Counters read by tests and when debugging a worker.
LeaseKeeper.renewals
# arq's job counters, kept by jobstart.run_started_job as arq's run_job keeps them; arq's
# health check (Worker.heart_beat -> record_health) reports them.
WakeableWorker.jobs_complete
WakeableWorker.jobs_failed
WakeableWorker.jobs_retried
WakeableWorker.outages
Quarantined.quarantined_at  # shown by `calhooks spool quarantine` (as JSON, via asdict)
