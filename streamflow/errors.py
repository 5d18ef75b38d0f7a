"""The exceptions streamflow raises.

    StreamflowError
    ├── ConfigError            bad pipeline file / env / flag: fails at start-up, names key and file
    ├── RecordError            one bad record in a healthy stream: dead-letter it and carry on
    │   └── DecodeError        bytes that are not a record of the expected schema
    └── InfrastructureError    something around the records failed; ``retriable`` says if waiting helps
        ├── BrokerUnavailable  no broker answers at the configured address
        ├── DeliveryError      the broker did not accept a produced message
        └── ModelError         the model cannot be loaded or run on this machine
"""

from __future__ import annotations


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
    """One bad record in a healthy stream: dead-letter it and carry on."""

    def __init__(self, reason: str, *, stage: str) -> None:
        super().__init__(f"{stage}: {reason}")
        self.reason, self.stage = reason, stage


class DecodeError(RecordError):
    """Bytes that do not decode as a record of the expected schema."""

    def __init__(self, reason: str, *, stage: str = "decode") -> None:
        super().__init__(reason, stage=stage)


class InfrastructureError(StreamflowError):
    """A failure around the records (broker, model, disk), not in them."""

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
