"""Health checks of model serving and the platform, with deduplicated alerts.

- :mod:`mlops.health.config` loads and validates the check declarations (``checks.yaml``);
- :mod:`mlops.health.runner` runs every check concurrently, each under its own timeout,
  the sweep under its own deadline;
- :mod:`mlops.health.state` turns results into alert transitions and persists them;
- :mod:`mlops.health.notify` delivers transitions and the daily digest to Slack and PagerDuty,
  each channel on its own, grouped, with silences and inhibition applied;
- :mod:`mlops.health.silences` stores silences and offers ``silence``/``expire`` and a CLI;
- :mod:`mlops.health.publish` pushes the metrics the Prometheus rules read (heartbeat,
  training failures, measured accuracy).
"""
