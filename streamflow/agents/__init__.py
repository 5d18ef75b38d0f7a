"""The faust shells: one handler protocol and template (``handler``), the steps' handlers
(``clean``, ``normalize``, ``inference``, ``chained``), what they share (``context``), and the
faust app and worker that run one of them (``app``, ``worker``)."""
