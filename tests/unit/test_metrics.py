"""``observe_many`` reads prometheus_client's histogram internals (its buckets and their upper
bounds) to count a whole array at once: it must give exactly what one ``observe`` per value
gives. This fails first when a prometheus_client release changes those internals (the
dependency is bounded to the versions tested)."""

from __future__ import annotations

import numpy as np
from prometheus_client import CollectorRegistry, Histogram

from streamflow.metrics import observe_many


def samples(h: Histogram) -> dict[tuple[str, str], float]:
    return {
        (s.name, s.labels.get("le", "")): s.value
        for metric in h.collect()
        for s in metric.samples
        if not s.name.endswith("_created")
    }


def test_observe_many_counts_like_one_observe_per_value() -> None:
    values = np.concatenate([np.random.default_rng(0).exponential(0.2, 1000), [0.1, 0.5, 5.0]])
    buckets = (0.01, 0.1, 0.5, 1.0, 2.5)
    one = Histogram("one", "h", buckets=buckets, registry=CollectorRegistry())
    many = Histogram("many", "h", buckets=buckets, registry=CollectorRegistry())
    for v in values.tolist():
        one.observe(v)
    observe_many(many, values)
    got = {(n.replace("many", "one"), le): v for (n, le), v in samples(many).items()}
    want = samples(one)
    assert got.keys() == want.keys()
    for key, v in want.items():  # counts exactly; the sum up to float rounding
        assert abs(got[key] - v) < 1e-9, key
