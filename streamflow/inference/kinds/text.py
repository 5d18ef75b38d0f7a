"""The text-embedding kind: a text field in, an embedding and the nearest labelled centroid out.

Clean checks the text field (``stages/text.py:clean_texts``); normalize tokenizes and cuts one
batch per length bucket, the token ids travelling as the batch's features padded with the pad
id; the model takes int64 ``input_ids`` and ``attention_mask`` [batch, tokens] and returns one
embedding per row; the head labels each embedding with the nearest ``[labels]`` centroid,
embedded at start-up by the model itself (so the centroids always match the model that scores).
Its metric: ``streamflow_padding_waste_ratio`` in normalize and inference.

The encoder may be exported as sentence-transformers or optimum export one: inputs
``input_ids``, ``attention_mask`` and, when the graph has it, ``token_type_ids`` (fed all
zeros); output either pooled, [batch, dim] (``model.pooling = "none"``), or the token vectors,
[batch, tokens, dim] (``last_hidden_state``), which ``pool`` reduces as ``model.pooling`` says
(mean over the attention mask, cls, max). ``model.l2_normalize`` scales each embedding to unit
length, for graphs that do not. ``streamflow validate`` names an export that does not fit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from streamflow.codecs import ResultEncoder, TextDecoder
from streamflow.errors import ModelError
from streamflow.inference.kinds import (
    Cleaned,
    Outputs,
    Prepared,
    StageMetrics,
    build_encoder,
    check_result_schema,
    decoder_options,
    input_fields,
    model_signature,
    record_columns,
)
from streamflow.inference.outputs import ResultField
from streamflow.records import BytesColumn, RecordBatch, paired
from streamflow.settings import TEXT_INPUTS, Pooling, Settings
from streamflow.stages.text import clean_texts, tokenize_buckets
from streamflow.stages.tokenizer import TextTokenizer

if TYPE_CHECKING:
    from streamflow.inference.session import LoadedModel


TOKEN_TYPE_IDS = "token_type_ids"  # fed (all zeros) when the graph has it
FEEDABLE = (*TEXT_INPUTS, TOKEN_TYPE_IDS)


def model_inputs(ids: np.ndarray, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, attention_mask) int64 from padded float32 ids: the mask is ids != pad_id."""
    input_ids = ids.astype(np.int64)
    return input_ids, (input_ids != pad_id).astype(np.int64)


def pool(hidden: np.ndarray, mask: np.ndarray, pooling: Pooling, l2: bool) -> np.ndarray:
    """float32 [n, dim]: the token vectors ``hidden`` [n, tokens, dim] pooled over the tokens
    ``mask`` [n, tokens] keeps (mean, cls: the first token, max), or ``hidden`` [n, dim] as it is
    when ``pooling`` is "none"; then scaled to unit length when ``l2`` (a zero vector stays zero).

    As sentence-transformers pools: the mean divides by the kept count clamped at 1e-9, and a
    row that keeps no token pools to zeros.
    """
    h = np.asarray(hidden, dtype=np.float32)
    if pooling == "none":
        e = h
    elif h.shape[1] == 0:
        e = np.zeros((h.shape[0], h.shape[2]), np.float32)
    elif pooling == "cls":
        e = h[:, 0]
    else:
        keep = np.asarray(mask) != 0
        if pooling == "mean":
            w = keep.astype(np.float32)
            e = np.matmul(w[:, None, :], h)[:, 0] / np.maximum(w.sum(1, keepdims=True), 1e-9)
        else:
            e = np.where(keep[:, :, None], h, -np.inf).max(axis=1)
            e = np.where(keep.any(axis=1)[:, None], e, 0.0)
    if l2:
        e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    return np.asarray(e, dtype=np.float32)


def pooling_problem(name: str, path: str, shape: Sequence[Any], pooling: Pooling) -> str | None:
    """Why output ``name`` of that ``shape`` does not fit ``model.pooling`` (None: it fits)."""
    if len(shape) == 3 and pooling == "none":
        return (
            f"model.pooling: {name!r} of {path} returns [batch, tokens, dim] (last_hidden_state) "
            f"{list(shape)}; set model.pooling = mean | cls | max"
        )
    if len(shape) == 2 and pooling != "none":
        return (
            f"model.pooling: {name!r} of {path} returns [batch, dim] {list(shape)}, already "
            f"pooled; set model.pooling = none, not {pooling}"
        )
    return None


@dataclass(frozen=True)
class CentroidHead:
    """Nearest labelled centroid by cosine: the labels' example embeddings, averaged and
    normalised."""

    names: tuple[str, ...]
    centroids: np.ndarray  # float32 [labels, dim], unit length

    @classmethod
    def fit(cls, names: Sequence[str], examples: Sequence[np.ndarray]) -> CentroidHead:
        """``examples[i]``: the embeddings [k, dim] of label i's example texts."""
        c = np.stack([np.asarray(e, dtype=np.float64).mean(axis=0) for e in examples])
        c /= np.linalg.norm(c, axis=1, keepdims=True)
        return cls(tuple(names), c.astype(np.float32))

    def label(self, embeddings: np.ndarray) -> tuple[list[str], np.ndarray]:
        """(nearest label per row, its cosine similarity)."""
        e = np.asarray(embeddings, dtype=np.float32)
        norms = np.linalg.norm(e, axis=1, keepdims=True)
        sims = (e / np.where(norms > 0, norms, 1.0)) @ self.centroids.T
        best = sims.argmax(axis=1)
        return [self.names[i] for i in best.tolist()], sims[np.arange(len(e)), best].astype(
            np.float64
        )


@dataclass
class PaddingTally:
    """Tokens fed to a text model since the stage started, for
    ``streamflow_padding_waste_ratio``."""

    tokens: int = 0  # real tokens
    fed: int = 0  # with padding, as fed (bucketed)
    fed_unbucketed: int = 0  # with padding, had each batch been padded whole

    def add(self, stage: StageMetrics, tokens: int, fed: int, fed_unbucketed: int) -> None:
        self.tokens, self.fed = self.tokens + tokens, self.fed + fed
        self.fed_unbucketed += fed_unbucketed
        g = stage.metrics.padding_waste
        if self.fed:
            g.labels(stage.pipeline, stage.stage, "bucketed").set(1.0 - self.tokens / self.fed)
        if self.fed_unbucketed:
            g.labels(stage.pipeline, stage.stage, "unbucketed").set(
                1.0 - self.tokens / self.fed_unbucketed
            )


class TextEmbeddingKind:
    name: ClassVar[str] = "text-embedding"
    synthetic: ClassVar[str] = "texts"
    sample_tokens: ClassVar[int] = 32  # tokens per text of ``sample_inputs``
    input_names: tuple[str, ...] = TEXT_INPUTS
    # The result fields its outputs fill: the embedding and the nearest label.
    FIELDS: ClassVar[tuple[ResultField, ...]] = (
        ResultField("embedding", {"type": "array", "items": "float"}, "The sentence embedding."),
        ResultField("label", "string", "The [labels] entry whose centroid is nearest."),
        ResultField("label_score", "double", "Cosine similarity to that centroid."),
    )

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.padding = PaddingTally()
        self.output_names: tuple[str, ...] = tuple(settings.model.outputs[:1]) or ("embedding",)
        self.token_types = False  # the graph takes token_type_ids (set by ``start``)

    @cached_property
    def decoder(self) -> TextDecoder:  # built on first use: only the clean step decodes
        s = self.settings
        return TextDecoder(s.input.schema, s.input.text_field, **decoder_options(s))

    @cached_property
    def encoder(self) -> ResultEncoder:  # only the inference step encodes
        return build_encoder(self.settings, self.output_fields())

    @cached_property
    def tokenizer(self) -> TextTokenizer:  # normalize tokenizes; the model's head embeds examples
        m = self.settings.model
        return TextTokenizer(m.tokenizer, m.max_tokens)

    @staticmethod
    def check_settings(s: Settings) -> list[str]:
        """The text pipeline's own keys; its tokenizer must exist."""
        p: list[str] = []
        if not s.input.text_field:
            p.append(
                "input.text_field: model.kind = text-embedding needs the field holding the text"
            )
        if not 2 <= s.model.max_tokens <= 512:
            p.append(f"model.max_tokens: must be within 2..512, got {s.model.max_tokens}")
        if s.model.bucket_rows < 1:
            p.append(f"model.bucket_rows: must be >= 1, got {s.model.bucket_rows}")
        if s.model.bucket_tokens < s.model.max_tokens:
            p.append(
                f"model.bucket_tokens: must be >= model.max_tokens ({s.model.max_tokens}), "
                f"got {s.model.bucket_tokens}"
            )
        if len(s.labels) < 2:
            p.append(
                "labels: model.kind = text-embedding needs at least two labels, "
                "each with example texts"
            )
        if s.features:
            p.append("features: a text-embedding model takes the text field, not [[features]]")
        if s.outputs:
            p.append(
                "outputs: a text-embedding model's result fields are its embedding, label and "
                "label_score; [[outputs]] is for tabular models"
            )
        if not s.model.tokenizer:
            p.append("model.tokenizer: a path is required")
        elif not Path(s.model.tokenizer).is_file():
            p.append(f"model.tokenizer: file not found: {s.model.tokenizer}")
        return p

    def clean(
        self,
        values: Sequence[bytes | None],
        keys: Sequence[bytes | None],
        headers: Sequence[Any] | None = None,
    ) -> Cleaned:
        tdec = self.decoder.decode_batch(values, keys, headers)
        ok, reasons, codes = clean_texts(
            tdec.texts, self.settings.input.text_field, self.settings.limits.max_string_length
        )
        ok &= np.fromiter((e is None for e in tdec.errors), dtype=bool, count=len(values))
        texts = BytesColumn.from_list(
            [
                t.encode() if good and isinstance(t, str) else b""
                for t, good in zip(tdec.texts, ok.tolist(), strict=True)
            ]
        )
        return Cleaned(
            ok,
            paired(tdec.errors, tdec.codes),
            paired(reasons, codes),
            tdec.device_ids,
            np.asarray(tdec.event_ms, np.int64),
            np.zeros((len(values), 0), dtype=np.float32),
            texts,
            columns=tdec.columns,
        )

    def prepare(self, batch: RecordBatch, stage: StageMetrics) -> Prepared:
        """One batch per length bucket, shortest first; the texts stay behind (the model needs
        ids)."""
        none = np.zeros(0, np.int64)
        if not len(batch):
            return Prepared([], none, [])
        assert batch.texts is not None, "a text pipeline's cleaned batch has texts"
        m = self.settings.model
        texts = [t.decode() if t is not None else "" for t in batch.texts.to_list()]
        tb = tokenize_buckets(texts, self.tokenizer, m.bucket_rows, m.bucket_tokens)
        self.padding.add(stage, tb.tokens, tb.fed, tb.fed_unbucketed)
        extra = {**batch.extra, "pad_id": str(tb.pad_id)}
        return Prepared(
            [
                replace(
                    batch.select(rows), features=ids, texts=None, stage="normalize", extra=extra
                )
                for rows, ids in zip(tb.rows, tb.ids, strict=True)
            ],
            none,
            [],
        )

    def start(self, model: LoadedModel) -> None:
        """Label each embedding with the nearest centroid of the labels' examples, embedded by
        this very model. A graph's ``token_type_ids`` input is fed from here on; an input the
        kind cannot feed is a ModelError."""
        inputs = {i.name: i for i in model.session.get_inputs()}
        if extra := [name for name in inputs if name not in FEEDABLE]:
            raise ModelError(self._unfed(extra, inputs, model.path))
        self.token_types = TOKEN_TYPE_IDS in inputs
        tok = self.tokenizer
        examples = []
        for _, texts in self.settings.labels:
            ids, _mask = tok.encode(list(texts))
            examples.append(model.run(ids.astype(np.float32)))
        model.head = CentroidHead.fit([name for name, _ in self.settings.labels], examples)

    def feeds(self, x: np.ndarray) -> dict[str, np.ndarray]:
        input_ids, mask = model_inputs(x, self.tokenizer.pad_id)
        fed = {TEXT_INPUTS[0]: input_ids, TEXT_INPUTS[1]: mask}
        if self.token_types:
            fed[TOKEN_TYPE_IDS] = np.zeros_like(input_ids)
        return fed

    def outputs(self, raws: Sequence[Any], x: np.ndarray) -> Outputs:
        """The embedding [n, dim]: the graph's, or its token vectors pooled as
        ``model.pooling`` says; unit length when ``model.l2_normalize``."""
        m = self.settings.model
        raw = np.asarray(raws[0], dtype=np.float32)
        if raw.ndim != 3:
            raw = raw.reshape(len(x), -1)
        if problem := pooling_problem(self.output_names[0], m.path, raw.shape, m.pooling):
            raise ModelError(problem)
        _, mask = model_inputs(x, self.tokenizer.pad_id)
        return {"embedding": pool(raw, mask, m.pooling, m.l2_normalize)}

    def monitored(self, outputs: Outputs) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Nothing per embedding dimension: the label and its cosine are the results' own."""
        return {}, {}

    def output_fields(self) -> list[ResultField]:
        return list(self.FIELDS)

    def observe(self, xs: Sequence[np.ndarray], stage: StageMetrics) -> None:
        pad = self.tokenizer.pad_id
        tokens = sum(int((x.astype(np.int64) != pad).sum()) for x in xs)
        rows = sum(len(x) for x in xs)
        width = max((x.shape[1] for x in xs), default=0)
        self.padding.add(stage, tokens, sum(x.size for x in xs), rows * width)

    def results(
        self, batch: RecordBatch, outputs: Outputs, model: LoadedModel, latency_ms: np.ndarray
    ) -> list[bytes]:
        assert isinstance(model.head, CentroidHead), (
            "a text-embedding model is started with its head"
        )
        embeddings = outputs["embedding"]
        labels, label_scores = model.head.label(embeddings)
        named = record_columns(self.settings, batch, model, latency_ms)
        # float32 values as Python floats: Avro "float" writes them back exactly
        named["embedding"] = np.asarray(embeddings, dtype=np.float32).tolist()
        named["label"], named["label_score"] = labels, label_scores.tolist()
        return self.encoder.encode(named, len(batch))

    def describe(self) -> str:
        return f"text field {self.settings.input.text_field}, {len(self.settings.labels)} labels"

    def sample_inputs(self, records: int, n_features: int) -> np.ndarray:
        """Token ids of ``sample_tokens``-token texts, as float32 (the internal batch's
        features)."""
        rng = np.random.default_rng(0)
        ids = rng.integers(
            1996, 29000, size=(records, self.sample_tokens)
        )  # ordinary BERT WordPiece tokens
        ids[:, 0], ids[:, -1] = 101, 102  # [CLS] ... [SEP]
        return ids.astype(np.float32)

    def check_files(self) -> list[str]:
        s = self.settings
        fields, p = input_fields(s)
        t = s.input.text_field
        if fields and t not in fields:
            p.append(f"input.text_field: {t!r} is not a field of {s.input.schema}")
        elif fields and (not fields[t] & {"string"} or fields[t] - {"string", "null"}):
            p.append(
                f"input.text_field: {t!r} must be a string (or null) in {s.input.schema}, "
                f"not {sorted(fields[t])}"
            )
        p += check_result_schema(s, self.output_fields())
        inputs, outputs, sess, problems = model_signature(s)
        p += problems
        if sess is None:
            return p
        for name in FEEDABLE:
            if name not in inputs:
                if name in TEXT_INPUTS:
                    p.append(
                        f"model.kind: a text-embedding model takes input {name!r}; "
                        f"{s.model.path} has {', '.join(inputs)}"
                    )
            elif inputs[name].type != "tensor(int64)" or len(inputs[name].shape) != 2:
                p.append(
                    f"model.kind: input {name!r} of {s.model.path} is {inputs[name].type} "
                    f"{inputs[name].shape}; the pipeline feeds tensor(int64) [batch, tokens]"
                )
        if extra := [name for name in inputs if name not in FEEDABLE]:
            p.append(self._unfed(extra, inputs, s.model.path))
        for name in s.model.outputs[:1]:
            if name not in outputs:
                p.append(
                    f"model.outputs: {name!r} is not an output of {s.model.path} "
                    f"(outputs: {', '.join(outputs)})"
                )
                continue
            shape = outputs[name].shape
            if outputs[name].type != "tensor(float)" or len(shape) not in (2, 3):
                want = (
                    "an embedding, tensor(float) [batch, dim]"
                    if s.model.pooling == "none"
                    else "token vectors, tensor(float) [batch, tokens, dim]"
                )
                p.append(
                    f"model.outputs: {name!r} of {s.model.path} is {outputs[name].type} "
                    f"{shape}; expected {want}"
                )
            elif problem := pooling_problem(name, s.model.path, shape, s.model.pooling):
                p.append(problem)
        if Path(s.model.tokenizer).is_file():
            try:
                TextTokenizer(s.model.tokenizer, s.model.max_tokens)
            except Exception as exc:  # ConfigError (no tokenizers), ModelError (bad file)
                p.append(f"model.tokenizer: {exc}")
        return p

    @staticmethod
    def _unfed(names: Sequence[str], inputs: dict[str, Any], path: str) -> str:
        takes = ", ".join(f"{n!r} ({inputs[n].type} {inputs[n].shape})" for n in names)
        return (
            f"model.kind: a text-embedding model is fed {', '.join(TEXT_INPUTS)} and, when the "
            f"graph has it, {TOKEN_TYPE_IDS}; {path} also takes {takes}"
        )
