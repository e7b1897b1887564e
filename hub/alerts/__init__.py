"""Alerts for operators: the rules (rules.py, pure) and the service that runs them in the hub
(service.py: stored in the store's `alerts`, published as events)."""

from hub.alerts.rules import AlertRules, AlertSpec
from hub.alerts.service import Alerts

__all__ = ["AlertRules", "AlertSpec", "Alerts"]
