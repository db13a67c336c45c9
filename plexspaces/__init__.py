"""PlexSpaces: thread-based actors with pluggable facets.

Actors run on pykka threads with a mailbox each; facets are opt-in capabilities attached at run
time with a priority and a config (`TimerFacet` for in-memory timers, `ReminderFacet` for durable
reminders, `VirtualActorFacet` for activation on demand). Everything time-based runs on the
system's one `Clock` and one `Scheduler`.
"""

from ._actor import Actor, FacetSpec
from ._clock import Clock, ManualClock, SystemClock
from ._context import ActorContext, FacetService
from ._duration import (
    MAX_DURATION,
    Duration,
    duration_seconds,
    parse_duration,
    parse_period,
    positive_duration,
)
from ._errors import (
    ActorActiveElsewhereError,
    ActorIdInUseError,
    ActorNotFoundError,
    ActorStoppedError,
    AskTimeoutError,
    DuplicateFacetError,
    FacetConfigError,
    FacetError,
    FacetNotAttachedError,
    MessageDecodeError,
    MessageEncodeError,
    NodeIdInUseError,
    NodeLostError,
    NoHostingNodeError,
    NoResponderError,
    PlexSpacesError,
    ReminderExistsError,
    RemoteActorError,
    SystemShutdownError,
    TimerExistsError,
    TransportError,
    TransportTimeoutError,
    TransportUnavailableError,
    UnknownFacetError,
)
from ._facet import ENTRY_POINT_GROUP, ConfigSpec, Facet, available_facets, resolve_facet
from ._logging import LOG_FORMAT_ENV, LOG_LEVEL_ENV, configure_logging
from ._messages import DROP, ReminderFired, TimerFired
from ._metrics import (
    LATENCY_BUCKETS,
    HistogramSnapshot,
    LatencyHistogram,
    MetricCounter,
    Metrics,
    MetricsSnapshot,
)
from ._ref import DEFAULT_ASK_TIMEOUT, ActorRef, VirtualActorRef
from ._registration import ReminderInfo, ReminderRegistration
from ._reminders import ReminderService
from ._retry import RetryPolicy
from ._scheduler import ScheduledCall, Scheduler
from ._store import (
    MAX_PAYLOAD_BYTES,
    MAX_PAYLOAD_DEPTH,
    MISSED_POLICIES,
    BucketCountError,
    DeadLetter,
    FireFailure,
    SchemaVersionError,
    StoreClosedError,
    StoreUnavailableError,
    UndecodableReminder,
)
from ._system import STORAGE_URL_ENV, ActorSystem
from ._transport.codec import Codec, codec_named

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_ASK_TIMEOUT",
    "DROP",
    "ENTRY_POINT_GROUP",
    "LATENCY_BUCKETS",
    "LOG_FORMAT_ENV",
    "LOG_LEVEL_ENV",
    "MAX_DURATION",
    "MAX_PAYLOAD_BYTES",
    "MAX_PAYLOAD_DEPTH",
    "MISSED_POLICIES",
    "STORAGE_URL_ENV",
    "Actor",
    "ActorActiveElsewhereError",
    "ActorContext",
    "ActorIdInUseError",
    "ActorNotFoundError",
    "ActorRef",
    "ActorStoppedError",
    "ActorSystem",
    "AskTimeoutError",
    "BucketCountError",
    "Clock",
    "Codec",
    "ConfigSpec",
    "DeadLetter",
    "DuplicateFacetError",
    "Duration",
    "Facet",
    "FacetConfigError",
    "FacetError",
    "FacetNotAttachedError",
    "FacetService",
    "FacetSpec",
    "FireFailure",
    "HistogramSnapshot",
    "LatencyHistogram",
    "ManualClock",
    "MessageDecodeError",
    "MessageEncodeError",
    "MetricCounter",
    "Metrics",
    "MetricsSnapshot",
    "NoHostingNodeError",
    "NoResponderError",
    "NodeIdInUseError",
    "NodeLostError",
    "PlexSpacesError",
    "ReminderExistsError",
    "ReminderFired",
    "ReminderInfo",
    "ReminderRegistration",
    "ReminderService",
    "RemoteActorError",
    "RetryPolicy",
    "ScheduledCall",
    "Scheduler",
    "SchemaVersionError",
    "StoreClosedError",
    "StoreUnavailableError",
    "SystemClock",
    "SystemShutdownError",
    "TimerExistsError",
    "TimerFired",
    "TransportError",
    "TransportTimeoutError",
    "TransportUnavailableError",
    "UndecodableReminder",
    "UnknownFacetError",
    "VirtualActorRef",
    "__version__",
    "available_facets",
    "codec_named",
    "configure_logging",
    "duration_seconds",
    "parse_duration",
    "parse_period",
    "positive_duration",
    "resolve_facet",
]
