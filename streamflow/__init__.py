"""streamflow: streaming inference on Kafka with faust-streaming and ONNX Runtime."""

__version__ = "0.1.0"
