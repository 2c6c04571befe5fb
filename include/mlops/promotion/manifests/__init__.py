"""Kubernetes manifest templates (``templates/``) and their renderer (``render``)."""
