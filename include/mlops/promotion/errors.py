"""The refusals of a promotion step: each names what it found and what to do."""

from __future__ import annotations


class PromotionError(RuntimeError):
    """The promotion cannot go on; the message says why and what the cluster looks like."""


class RolloutFailed(PromotionError):
    """The candidate's rollout failed (progress deadline exceeded) or did not finish in time."""


class ConcurrentPromotion(PromotionError):
    """Another promotion holds the model's lease, or changed the Service under this one."""


class LeaseLost(ConcurrentPromotion):
    """This run no longer holds the model's lease (pre-empted, expired and taken, or released)."""


class RbacDenied(PermissionError):
    """The Kubernetes API answered 403: the message names the verb and resource to grant."""
