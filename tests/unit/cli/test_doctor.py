"""streamflow doctor on this (GPU-less) machine: what it reports and when it says no."""

from __future__ import annotations

import io

from streamflow.cli.doctor import doctor
from streamflow.settings.loading import load_settings
from tests.conftest import PIPELINE


def test_doctor_reports_the_build_the_model_and_a_timing_per_batch_size() -> None:
    out = io.StringIO()
    assert doctor(load_settings(PIPELINE, environ={}), out) == 0
    text = out.getvalue()
    assert "providers available:" in text and "CPUExecutionProvider" in text
    assert "GPUs: none seen" in text
    assert "input  features [batch, 16] tensor(float)" in text and "output score" in text
    assert "batch     1:" in text and "batch  4096:" in text and "records/s" in text


def test_doctor_says_why_a_demanded_gpu_cannot_be_used_here() -> None:
    out = io.StringIO()
    assert doctor(load_settings(PIPELINE, {"runtime.device": "cuda"}, environ={}), out) == 1
    assert "no CUDAExecutionProvider" in out.getvalue()
