"""`Embedder`: sentence embeddings, called like sentence-transformers' `encode`."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from xlm_flax.checkpoints.registry import MODEL_CLASSES
from xlm_flax.config import XLMConfig
from xlm_flax.errors import InputError
from xlm_flax.inference.batching import HostBatch, slot_count
from xlm_flax.inference.engine import _check_texts, _Engine
from xlm_flax.model.encoder import XLMModel
from xlm_flax.tokenization import load_tokenizer

POOLINGS = ("mean", "first", "max")


OUTPUTS = ("numpy", "jax")


def _embed_kernel(graphdef: nnx.GraphDef, pooling: str, layers: tuple[int, ...], normalize: bool) -> Callable:
    def kernel(state, input_ids, attention_mask, langs):
        # input_ids, attention_mask, langs: [batch, length] -> [batch, emb_dim] float32
        model = nnx.merge(graphdef, state)
        last_only = layers == (model.config.n_layers,)
        out = model(input_ids, attention_mask, langs, output_hidden_states=not last_only)
        if last_only:
            hidden = out.last_hidden_state.astype(jnp.float32)
        else:  # hidden_states[0] is the embeddings output, [i] the output of layer i
            hidden = jnp.mean(jnp.stack([out.hidden_states[i].astype(jnp.float32) for i in layers]), axis=0)
        mask = attention_mask.astype(jnp.float32)[:, :, None]  # [B, T, 1]
        if pooling == "mean":  # every non-padding position, <s> and </s> included (sentence-transformers)
            vectors = jnp.sum(hidden * mask, axis=1) / jnp.maximum(jnp.sum(mask, axis=1), 1.0)
        elif pooling == "first":  # <s>: XLM's own sentence representation
            vectors = hidden[:, 0]
        else:
            vectors = jnp.max(jnp.where(mask > 0, hidden, -jnp.inf), axis=1)
        if normalize:  # as torch.nn.functional.normalize
            vectors = vectors / jnp.maximum(jnp.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)
        return vectors

    return kernel


def _hidden_kernel(graphdef: nnx.GraphDef, layers: tuple[int, ...]) -> Callable:
    """The packed rows' forward: float32 hidden states (the average of `layers`), pooled apart by `pool_segments`."""

    def kernel(state, input_ids, segment_ids, langs):
        # input_ids, segment_ids, langs: [batch, length] -> [batch, length, emb_dim] float32
        model = nnx.merge(graphdef, state)
        last_only = layers == (model.config.n_layers,)
        out = model(input_ids, langs=langs, segment_ids=segment_ids, output_hidden_states=not last_only)
        if last_only:
            return out.last_hidden_state.astype(jnp.float32)
        return jnp.mean(jnp.stack([out.hidden_states[i].astype(jnp.float32) for i in layers]), axis=0)

    return kernel


@functools.partial(jax.jit, static_argnames=("pooling", "normalize", "slots"))
def pool_segments(
    hidden: jax.Array,
    slot_ids: jax.Array,
    first: jax.Array,
    last: jax.Array,
    *,
    pooling: str,
    normalize: bool,
    slots: int,
) -> jax.Array:
    """Pools each sentence of packed rows on device: one vector per sentence slot.

    Compiled per (batch shape, slot count), apart from the model, so that the model compiles once per row shape
    whatever the number of sentences in a batch.

    Args:
        hidden: `[batch, length, emb_dim]` float32 hidden states of packed rows.
        slot_ids: `[batch, length]` int32, the output slot of each token's sentence; `slots` on padding.
        first: `[slots]` int32 flat index (`row * length + position`) of each sentence's first token (`<s>`).
        last: `[slots]` int32 flat index of each sentence's last token (`</s>`).
        pooling: `"mean"`, `"first"`, `"last"` or `"max"` (`"cls"` is `"first"`).
        normalize: Scale each vector to unit length.
        slots: Number of output slots (slots past the batch's sentences hold garbage).

    Returns:
        `[slots, emb_dim]` float32.
    """
    flat = hidden.reshape(-1, hidden.shape[-1])  # [batch * length, D]
    ids = slot_ids.reshape(-1)
    if pooling == "mean":  # every token of the sentence, <s> and </s> included (sentence-transformers)
        sums = jax.ops.segment_sum(flat, ids, num_segments=slots + 1)[:slots]
        counts = jax.ops.segment_sum(jnp.ones(ids.shape, jnp.float32), ids, num_segments=slots + 1)[:slots]
        vectors = sums / jnp.maximum(counts, 1.0)[:, None]
    elif pooling in ("first", "cls"):
        vectors = flat[first]
    elif pooling == "last":
        vectors = flat[last]
    elif pooling == "max":
        vectors = jax.ops.segment_max(flat, ids, num_segments=slots + 1)[:slots]
    else:
        raise InputError(f"pooling={pooling!r}: use one of mean, first, cls, last, max")
    if normalize:  # as torch.nn.functional.normalize
        vectors = vectors / jnp.maximum(jnp.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)
    return vectors


def segment_slots(batch: HostBatch) -> dict[str, Any]:
    """Host arrays for `pool_segments` of a packed batch: slot of every token, flat first and last indices."""
    length = batch.input_ids.shape[1]
    slots = slot_count(batch.n)
    slot_ids = np.full(batch.input_ids.shape, slots, dtype=np.int32)
    first = np.zeros(slots, dtype=np.int32)
    last = np.zeros(slots, dtype=np.int32)
    for s, ((row, start), seq) in enumerate(zip(batch.spans, batch.sequences)):
        slot_ids[row, start : start + len(seq)] = s
        first[s] = row * length + start
        last[s] = row * length + start + len(seq) - 1
    return {"slot_ids": slot_ids, "first": first, "last": last, "slots": slots}


class Embedder(_Engine):
    """Sentence embeddings from an XLM encoder, called like sentence-transformers' `encode`.

    Args:
        model: An `XLMModel`, or a model with a `transformer` encoder (e.g. `XLMWithLMHeadModel`).
        tokenizer: Its `XLMTokenizer`.
        pooling: `"mean"` (every non-padding position, `<s>` and `</s>` included), `"first"` (the `<s>` position,
            the original XLM sentence representation) or `"max"` (over non-padding positions).
        mesh: Optional device mesh; parameters are placed on it and batches split over its data axis.
        rules: Logical-axis rules for the parameters (default `DEFAULT_RULES`).
        batching: `"packed"` (the default: several sentences share each row, with block-diagonal attention, so
            almost no padding is computed; each sentence's vector is what it is alone) or `"buckets"` (one
            sentence per row, padded to a length bucket, as in xlm-flax 0.1). With packing, `encode`'s
            `batch_size` counts rows, each as long as a bucket holding the longest sentence of a window of 4,096
            inputs (64 tokens at least), so no batch is larger than the largest bucketed batch would be.

    Example:
        >>> emb = Embedder.from_pretrained("./xlm-en-2048", pooling="mean")
        >>> emb.encode(["a first sentence .", "another one ."], normalize=True).shape
        (2, 2048)
    """

    def __init__(
        self,
        model: nnx.Module,
        tokenizer: Any,
        *,
        pooling: str = "mean",
        mesh: Mesh | None = None,
        rules: Any = None,
        batching: str = "packed",
    ):
        if pooling not in POOLINGS:
            raise InputError(f"pooling={pooling!r}: use one of {', '.join(POOLINGS)}")
        encoder = model if isinstance(model, XLMModel) else getattr(model, "transformer", None)
        if not isinstance(encoder, XLMModel):
            raise InputError(f"Embedder needs an XLMModel or a model with a .transformer encoder, not {type(model)}")
        super().__init__(encoder, tokenizer, mesh=mesh, rules=rules, batching=batching)
        self.pooling = pooling
        self.dim = self.config.emb_dim

    @classmethod
    def from_pretrained(
        cls,
        path_or_hub_id: str | os.PathLike,
        *,
        pooling: str = "mean",
        dtype: Any = jnp.float32,
        param_dtype: Any = None,
        mesh: Mesh | None = None,
        rules: Any = None,
        batching: str = "packed",
    ) -> Embedder:
        """Loads the encoder and tokenizer of a checkpoint directory or hub id.

        Args:
            path_or_hub_id: A native or transformers checkpoint directory with tokenizer files, or a hub id.
            pooling: See the class.
            dtype: Compute dtype (pooling and the returned vectors are float32 whatever it is).
            param_dtype: Storage dtype; None keeps the checkpoint's.
            mesh: Optional device mesh.
            rules: Logical-axis rules for `mesh`.
            batching: `"packed"` or `"buckets"` (see the class).

        Raises:
            MissingFileError: config, weights or tokenizer files are missing (the message names the file).
        """
        if pooling not in POOLINGS:
            raise InputError(f"pooling={pooling!r}: use one of {', '.join(POOLINGS)}")
        config = XLMConfig.from_pretrained(path_or_hub_id)
        tokenizer = load_tokenizer(path_or_hub_id)
        # The checkpoint's own class, so that its head tensors are expected rather than reported as unused.
        architecture = next((a for a in config.architectures if a in MODEL_CLASSES), "XLMModel")
        model_cls = MODEL_CLASSES[architecture]
        model = model_cls.from_pretrained(path_or_hub_id, dtype=dtype, param_dtype=param_dtype, mesh=mesh, rules=rules)
        return cls(model, tokenizer, pooling=pooling, mesh=mesh, rules=rules, batching=batching)

    def _layers(self, layer: int | Sequence[int]) -> tuple[int, ...]:
        """Normalises `layer` to non-negative indexes into the `n_layers + 1` hidden states."""
        n = self.config.n_layers
        chosen = [layer] if isinstance(layer, int | np.integer) and not isinstance(layer, bool) else layer
        try:
            chosen = list(chosen)
        except TypeError:
            chosen = None
        if not chosen or not all(isinstance(i, int | np.integer) and not isinstance(i, bool) for i in chosen):
            raise InputError(f"layer={layer!r}: give a layer index or a non-empty list of them")
        out = []
        for i in chosen:
            if not -(n + 1) <= i <= n:
                raise InputError(
                    f"layer {i} does not exist: this model has hidden states 0 (embeddings) to {n}, or -1 to -{n + 1} "
                    "counting from the last"
                )
            out.append(int(i) % (n + 1))
        return tuple(out)

    def _embedding_batches(
        self, texts: list[str], batch_size: int, lang: str | None, truncation: bool, layers: tuple, normalize: bool
    ):
        """Yields `(host batch, [rows or slots, emb_dim] vectors)`: the first `batch.n` are its sentences'."""
        normalize = bool(normalize)
        if self.batching == "buckets":
            return self._stream(
                texts,
                batch_size=batch_size,
                lang=lang,
                truncation=truncation,
                options=("embed", self.pooling, layers, normalize),
                build=functools.partial(_embed_kernel, self.graphdef, self.pooling, layers, normalize),
            )

        def prepare(batch: HostBatch) -> None:  # on the prefetch thread
            batch.meta = segment_slots(batch)

        def finish(batch: HostBatch, hidden: jax.Array) -> jax.Array:
            meta = batch.meta
            return pool_segments(
                hidden,
                meta["slot_ids"],
                meta["first"],
                meta["last"],
                pooling=self.pooling,
                normalize=normalize,
                slots=meta["slots"],
            )

        return self._stream(
            texts,
            batch_size=batch_size,
            lang=lang,
            truncation=truncation,
            options=("hidden", layers),
            build=functools.partial(_hidden_kernel, self.graphdef, layers),
            prepare=prepare,
            finish=finish,
        )

    def encode(
        self,
        sentences: str | Sequence[str],
        batch_size: int = 32,
        normalize: bool = False,
        layer: int | Sequence[int] = -1,
        lang: str | None = None,
        show_progress_bar: bool | None = None,
        output: str = "numpy",
        *,
        truncation: bool = True,
    ) -> np.ndarray | jax.Array:
        """Embeds sentences, one vector per sentence in input order.

        Args:
            sentences: A sentence or a list of sentences. An empty string still gives a vector (of `<s></s>`).
            batch_size: Sentences per device batch (rows of packed sentences with `batching="packed"`).
            normalize: Scale every vector to unit length.
            layer: The hidden state to pool: `-1` the last layer, `0` the embeddings output, a negative index counts
                from the end; a list of layers averages them before pooling.
            lang: Language code (e.g. `"en"`) for tokenization and, for models with language embeddings, the
                language ids. None uses the config's default language.
            show_progress_bar: Show a progress bar on stderr; None shows one for long inputs on a terminal.
            output: `"numpy"` or `"jax"`.
            truncation: Cut sentences longer than `max_position_embeddings` tokens (one warning); False raises.

        Returns:
            float32 `[n, emb_dim]` (or `[emb_dim]` for a single string); `[0, emb_dim]` for an empty list.

        Raises:
            InputError: bad `layer`, `lang`, `batch_size` or `output`, non-string inputs, or (with
                `truncation=False`) a sentence that is too long.
        """
        texts, single = _check_texts(sentences, "encode")
        if output not in OUTPUTS:
            raise InputError(f"output={output!r}: use one of {', '.join(OUTPUTS)}")
        layers = self._layers(layer)
        result = np.zeros((len(texts), self.dim), dtype=np.float32)
        if texts:
            if show_progress_bar is None:
                show_progress_bar = len(texts) >= 16 * batch_size and sys.stderr.isatty()
            from tqdm.auto import tqdm

            with tqdm(total=len(texts), disable=not show_progress_bar, unit="sentence", file=sys.stderr) as bar:
                for batch, vectors in self._embedding_batches(texts, batch_size, lang, truncation, layers, normalize):
                    result[batch.indices] = vectors[: batch.n]
                    bar.update(batch.n)
        if single:
            result = result[0]
        return jnp.asarray(result) if output == "jax" else result


__all__ = ["Embedder", "OUTPUTS", "POOLINGS", "pool_segments", "segment_slots"]
