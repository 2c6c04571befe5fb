"""Alert routing to Slack and PagerDuty through the providers' hooks and notifiers."""
