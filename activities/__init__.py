"""Temporal activities: the only code that touches Redis, HTTP and SMTP for a workflow.

Workflows call them by name ("notify", "run_action", "project") and never import this
package, so the workflow sandbox stays free of I/O libraries.
"""

from activities.incident_activities import IncidentActivities
from activities.mail import SmtpSettings

__all__ = ["IncidentActivities", "SmtpSettings"]
