"""Health checks of model serving and the platform, with deduplicated alerts.

- :mod:`mlops.health.config` loads and validates the check declarations (``checks.yaml``);
- :mod:`mlops.health.runner` runs every check concurrently, each under its own timeout;
- :mod:`mlops.health.state` turns results into alert transitions and persists them;
- :mod:`mlops.health.notify` delivers transitions and the daily digest to Slack and PagerDuty.
"""
