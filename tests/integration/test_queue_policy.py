"""batching.queue_policy = "reject": a model slower than the input sheds what arrives at a
full queue.

The model here is a real ONNX graph made slow on purpose (24 layers 2048 wide: about a
millisecond per record on this machine). Fed faster than it scores, the inference stage admits
records into its queue up to max_queue_records and dead-letters the rest with reason code
queue_full; every record is accounted for, none both scored and shed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from streamflow.collectors.produce import RawProducer, run_synthetic
from tests.conftest import ROOT
from tests.integration.helpers import read_topic, running_pipeline, wait_for

pytestmark = pytest.mark.integration
N = 6000


def slow_model(path: Path, width: int = 2048, layers: int = 24) -> None:
    """About 1 ms per record on one thread here; one shared 2048x2048 weight keeps the file at
    16 MB."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array((rng.normal(size=(16, width)) / 4).astype(np.float32), "w_in"),
        numpy_helper.from_array(
            (rng.normal(size=(width, width)) / np.sqrt(width)).astype(np.float32), "w"
        ),
    ]
    nodes, x = [helper.make_node("MatMul", ["features", "w_in"], ["h_in"])], "h_in"
    for i in range(layers):
        nodes += [
            helper.make_node("MatMul", [x, "w"], [f"m{i}"]),
            helper.make_node("Relu", [f"m{i}"], [f"h{i}"]),
        ]
        x = f"h{i}"
    nodes += [
        helper.make_node("ReduceMean", [x], ["mean"], axes=[1], keepdims=1),
        helper.make_node("Sigmoid", ["mean"], ["score"]),
    ]
    graph = helper.make_graph(
        nodes,
        "slow",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch", 1])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    shipped = onnx.load(str(ROOT / "models/telemetry-anomaly/model.onnx"))
    for prop in (
        shipped.metadata_props
    ):  # the same feature order and name: it validates against the pipeline
        model.metadata_props.add(key=prop.key, value=prop.value)
    onnx.save(model, str(path))


def test_a_full_queue_under_reject_dead_letters_what_arrives(
    pipeline_overrides: dict[str, str], tmp_path: Path
) -> None:
    slow_model(tmp_path / "slow.onnx")
    # Chained: the model's queue is fed straight from the raw backlog at fetch speed, far faster
    # than the model scores, whatever else the machine is doing (through the stages, the upstream
    # stages' pace on a busy machine decided whether the queue ever filled).
    overrides = {
        **pipeline_overrides,
        "runtime.topology": "chained",
        "model.path": str(tmp_path / "slow.onnx"),
        "batching.queue_policy": "reject",
        "batching.max_queue_records": "256",
        "batching.max_batch": "128",
        "batching.clean_max_batch": "128",
    }
    with running_pipeline(overrides) as (settings, pipe):
        bootstrap = settings.kafka.bootstrap
        assert (
            run_synthetic(RawProducer(settings, bootstrap), rate=0, records=N, seed=4).produced == N
        )
        t = settings.topics

        def all_out() -> tuple[dict, dict] | None:  # type: ignore[type-arg]
            def by_source(topic: str) -> dict:  # type: ignore[type-arg]
                return {
                    (int(m.headers["sf-source-partition"]), int(m.headers["sf-source-offset"])): m
                    for m in read_topic(bootstrap, topic, idle_s=0.5)
                }

            scored, dead = by_source(t.scored), by_source(t.dlq)
            return (scored, dead) if len(scored) + len(dead) >= N else None

        result = wait_for(all_out, timeout_s=180, interval_s=2)
        assert result, f"records missing; logs in {pipe.log_dir}"
        scored, dead = result
        shed = [m for m in dead.values() if m.headers["sf-reason-code"] == b"queue_full"]
        print(
            f"\nqueue_policy=reject, max_queue_records=256, slow model: {N} records, "
            f"{len(scored)} scored, {len(shed)} shed (queue_full), "
            f"{len(dead) - len(shed)} other dead letters"
        )
        assert len(set(scored) | set(dead)) == N and not set(scored) & set(dead)
        assert (
            shed and scored
        )  # overloaded: some shed, and the model kept scoring the admitted ones
        assert all(
            m.headers["sf-stage"] == b"chained" and m.value for m in shed
        )  # the original bytes
        assert b"batching.queue_policy = reject" in shed[0].headers["sf-reason"]
