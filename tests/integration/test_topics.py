"""Topics on a cluster where the application may not create them (``topics.create = false``):
a missing topic stops start-up with its name; when they all exist, nothing is created."""

from __future__ import annotations

import pytest

from streamflow.errors import ConfigError
from streamflow.kafka.admin import admin_client, ensure_topics
from streamflow.settings.loading import load_settings
from streamflow.steps import pipeline_topics
from tests.conftest import PIPELINE

pytestmark = pytest.mark.integration


def test_without_create_rights_a_missing_topic_is_named(
    pipeline_overrides: dict[str, str], bootstrap: str
) -> None:
    s = load_settings(PIPELINE, {**pipeline_overrides, "topics.create": "false"}, environ={})
    with pytest.raises(ConfigError, match=rf"do not exist at .*{s.topics.raw}"):
        ensure_topics(bootstrap, pipeline_topics(s), settings=s)
    assert s.topics.raw not in admin_client(bootstrap).list_topics(timeout=10).topics
    created = load_settings(PIPELINE, pipeline_overrides, environ={})
    ensure_topics(bootstrap, pipeline_topics(created), settings=created)  # an operator did it
    assert ensure_topics(bootstrap, pipeline_topics(s), settings=s) == []
