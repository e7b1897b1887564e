"""The site's event log: typed events with a strictly increasing seq, stored and published."""

from hub.events.bus import EventBus, Lagged, Subscription, SubscriptionClosedError
from hub.events.kinds import Event, EventKind
from hub.events.log import (
    EventLog,
    EventLogClosedError,
    EventLogError,
    EventLogNotStartedError,
    UnknownEventKindError,
)

__all__ = [
    "Event",
    "EventBus",
    "EventKind",
    "EventLog",
    "EventLogClosedError",
    "EventLogError",
    "EventLogNotStartedError",
    "Lagged",
    "Subscription",
    "SubscriptionClosedError",
    "UnknownEventKindError",
]
