"""Pure stages: numpy columns in, numpy columns out, plus which rows were rejected and why.

No stage imports faust or Kafka: each is a plain function over a batch.
"""

from streamflow.stages.clean import CleanRules, StageResult, clean
from streamflow.stages.normalize import Normalizer, normalize

__all__ = ["CleanRules", "Normalizer", "StageResult", "clean", "normalize"]
