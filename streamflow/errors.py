"""The exceptions streamflow raises.

    StreamflowError
    ├── ConfigError            bad pipeline file / env / flag: fails at start-up, names key and file
    ├── RecordError            one bad record in a healthy stream: dead-letter it, carry on
    │   ├── DecodeError        bytes that are not a record of the expected schema
    │   ├── ValidationError    a decoded record that breaks a rule (missing, non-finite, range)
    │   ├── QueueFull          shed unread: queue_policy = "reject" and the queue was full
    │   └── TransformError     a user transform raised, or returned a wrong shape, on it
    └── InfrastructureError    something around the records failed; ``retriable``: waiting helps
        ├── BrokerUnavailable  no broker answers at the configured address
        ├── DeliveryError      the broker did not accept a produced message
        └── ModelError         the model cannot be loaded or run on this machine

A ``RecordError`` carries the reason's text and its ``ReasonCode``, chosen where the record is
refused. A dead letter's ``sf-error-class`` header names one of these classes: ``DecodeError``,
``ValidationError``, ``QueueFull`` or ``TransformError`` for the record itself, ``ModelError``
for a row the model failed on (or scored non-finite), ``DeliveryError`` for a result the sink
topic refused (``DEAD_LETTER_ERRORS``). A stage stopped by an ``InfrastructureError`` exits 75
(EX_TEMPFAIL) when it is ``retriable``, 70 otherwise (``exit_status``).
"""

from __future__ import annotations

from streamflow.records import ReasonCode

EX_SOFTWARE = 70  # a fault in the stage (a bug, a message refused for good): a restart may not help
EX_TEMPFAIL = 75  # a retriable InfrastructureError (registry, broker away): restarting later helps


class StreamflowError(Exception):
    """Base of every error streamflow raises on purpose."""


class ConfigError(StreamflowError):
    """Invalid configuration; carries every problem found, each naming its key and source."""

    def __init__(self, problems: list[str] | str, *, source: str = "") -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.source = source
        head = f"invalid configuration in {source}" if source else "invalid configuration"
        super().__init__(head + ":\n" + "\n".join(f"  - {p}" for p in self.problems))


class RecordError(StreamflowError):
    """One bad record in a healthy stream: dead-letter it and carry on.

    ``reason`` is the human text (``sf-reason``), ``code`` its ``ReasonCode``
    (``sf-reason-code``)."""

    def __init__(self, reason: str, code: ReasonCode, *, stage: str) -> None:
        super().__init__(f"{stage}: {reason}")
        self.reason, self.code, self.stage = reason, code, stage


class DecodeError(RecordError):
    """Bytes that do not decode as a record of the expected schema."""

    def __init__(self, reason: str, code: ReasonCode, *, stage: str = "decode") -> None:
        super().__init__(reason, code, stage=stage)


class ValidationError(RecordError):
    """A decoded record that breaks a rule of the pipeline: a required field missing, a value
    non-finite, not an integer or out of range, one normalize cannot scale, a text that is
    missing, empty or too long."""

    def __init__(self, reason: str, code: ReasonCode, *, stage: str = "clean") -> None:
        super().__init__(reason, code, stage=stage)


class QueueFull(RecordError):
    """A record shed unread: ``batching.queue_policy = "reject"`` and the stage's queue was full."""

    def __init__(self, reason: str, *, stage: str) -> None:
        super().__init__(reason, ReasonCode.QUEUE_FULL, stage=stage)


class TransformError(RecordError):
    """A user transform (``[[transforms]]``) raised, or returned a wrong shape, on this record."""

    def __init__(self, reason: str, *, stage: str) -> None:
        super().__init__(reason, ReasonCode.TRANSFORM_ERROR, stage=stage)


class InfrastructureError(StreamflowError):
    """A failure around the records (broker, model, disk), not in them.

    ``retriable``: the same work may succeed later unchanged (a registry or broker that does not
    answer); a worker it stops exits ``EX_TEMPFAIL`` rather than ``EX_SOFTWARE``."""

    retriable: bool = False

    def __init__(self, message: str, *, retriable: bool | None = None) -> None:
        super().__init__(message)
        if retriable is not None:
            self.retriable = retriable


class BrokerUnavailable(InfrastructureError):
    """No Kafka broker answered at the configured bootstrap address."""

    retriable = True


class DeliveryError(InfrastructureError):
    """The broker did not acknowledge a produced message."""

    retriable = True


class ModelError(InfrastructureError):
    """The model cannot be loaded, or cannot run on the requested device."""


# The classes a dead letter's sf-error-class header may name (their __name__).
DEAD_LETTER_ERRORS: tuple[type[StreamflowError], ...] = (
    DecodeError,
    TransformError,
    ValidationError,
    QueueFull,
    ModelError,
    DeliveryError,
)


def exit_status(exc: BaseException) -> int:
    """The exit status of a worker a fault stopped: ``EX_TEMPFAIL`` (75) for a retriable
    ``InfrastructureError``, where a restart after a wait helps; ``EX_SOFTWARE`` (70) otherwise."""
    return EX_TEMPFAIL if isinstance(exc, InfrastructureError) and exc.retriable else EX_SOFTWARE
