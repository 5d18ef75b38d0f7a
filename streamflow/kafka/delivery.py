"""Delivering a stage's output: retried while the broker cannot take it, dead-lettered when it
never will.

librdkafka already retries inside ``kafka.delivery_timeout_s`` (in order: the producer is
idempotent). What is still not acknowledged after that is sorted by its error:

- transient (broker unreachable or restarting, leader moving, timeouts, fencing): sent again after
  a backoff that doubles up to ``kafka.retry_backoff_max_s``, for as long as it takes. The
  stage meanwhile holds its input unacked, and with ``batching.max_in_flight`` batches out
  it stops taking more: the worker keeps its state and resumes when the broker returns.
  Each retry logs one warning and counts in ``streamflow_delivery_retries_total``.
- permanent (the broker refuses this message: too large, invalid, not authorised): a result
  goes to the dead-letter topic with the error as its reason; a dead letter or an internal
  batch that is refused is a fault of the stage (DeliveryError: the worker stops, exit 70).
A producer instance the broker has fenced is replaced by BatchProducer itself (clients.py).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from confluent_kafka import KafkaError

from streamflow.errors import DeliveryError
from streamflow.kafka.producer import BatchProducer, Failure
from streamflow.records import OutMessage

log = logging.getLogger(__name__)

# The broker refuses THIS message, and would refuse it again: the rest is about the broker or the
# connection (unreachable, leader moving, timeouts, an idempotent producer's epoch bumped after a
# timeout, authorisation while an operator fixes an ACL) and is retried until it passes.
REFUSALS = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.INVALID_MSG_SIZE,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.INVALID_RECORD,
        KafkaError.INVALID_MSG,
        KafkaError.INVALID_TIMESTAMP,
        KafkaError._BAD_MSG,
        KafkaError._INVALID_ARG,
    }
)


def is_transient(err: KafkaError) -> bool:
    return err.code() not in REFUSALS


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter: ``initial_s`` doubling up to ``max_s``."""

    initial_s: float
    max_s: float

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (1, 2, ...)."""
        ceiling = min(self.max_s, self.initial_s * 2 ** min(attempt - 1, 30))
        return ceiling * random.uniform(0.5, 1.0)  # spread the workers' retries apart


# (message, error) -> its dead letter, or None when it cannot be dead-lettered
DeadLetterFor = Callable[[OutMessage, KafkaError], OutMessage | None]
OnRetry = Callable[[str, KafkaError, int], None]  # (topic, error, messages) for each retried topic


async def deliver(
    producer: BatchProducer,
    messages: Sequence[OutMessage],
    *,
    backoff: Backoff,
    dead_letter_for: DeadLetterFor,
    on_retry: OnRetry,
) -> None:
    """Deliver ``messages``; returns once every one is acknowledged (or dead-lettered)."""
    loop = asyncio.get_running_loop()
    pending: Sequence[OutMessage] = messages
    attempt = 0
    while pending:
        failures: list[Failure] = await producer.send(pending, loop)
        retry: list[OutMessage] = []
        by_topic: dict[
            str, tuple[KafkaError, int]
        ] = {}  # transient failures: an error and a count per topic
        for message, err in failures:
            if is_transient(err):
                retry.append(message)
                by_topic[message.topic] = (err, by_topic.get(message.topic, (err, 0))[1] + 1)
                continue
            letter = dead_letter_for(message, err)
            if letter is None:
                raise DeliveryError(
                    f"{message.topic} refused a message ({err.str()}) that cannot be dead-lettered",
                    retriable=False,
                )
            log.error(
                "%s refused a message permanently (%s): dead-lettered", message.topic, err.str()
            )
            retry.append(letter)  # sent with the next round, retried like any other message
        if by_topic:
            attempt += 1
            wait = backoff.delay(attempt)
            for topic, (err, n) in by_topic.items():
                on_retry(topic, err, n)
                log.warning(
                    "delivery to %s failed for %d message(s) (%s); retry %d in %.1f s",
                    topic,
                    n,
                    err.str(),
                    attempt,
                    wait,
                )
            await asyncio.sleep(wait)
        pending = retry
