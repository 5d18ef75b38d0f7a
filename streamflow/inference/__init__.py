"""The model side: the ONNX Runtime session and its providers (``session``), the model kinds
(``kinds/``), scoring with poison rows found by bisection (``scoring``), hot swap (``hotswap``),
the SLO-steered batching wait (``batching``) and the GPUs (``gpu``)."""
