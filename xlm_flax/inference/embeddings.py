"""`Embedder`: sentence embeddings, called like sentence-transformers' `encode`."""

from __future__ import annotations

import contextlib
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

from xlm_flax.checkpoints.hub import hub_options
from xlm_flax.checkpoints.registry import MODEL_CLASSES
from xlm_flax.config import XLMConfig
from xlm_flax.errors import InputError
from xlm_flax.inference.batching import HostBatch, slot_count
from xlm_flax.inference.engine import _check_texts, _Engine, check_tokenizer_workers
from xlm_flax.inference.vectors import PRECISIONS, quantize_embeddings, quantize_token_embeddings, similarity_function
from xlm_flax.model.encoder import XLMModel
from xlm_flax.sharding.rules import resolve_rules
from xlm_flax.tokenization import load_tokenizer

POOLINGS = ("mean", "first", "max")


# encode's output_value, as sentence-transformers.
OUTPUT_VALUES = ("sentence_embedding", "token_embeddings", None)


def _hidden(model: XLMModel, layers: tuple[int, ...], input_ids, attention_mask, langs, segment_ids=None) -> jax.Array:
    """float32 `[batch, length, emb_dim]`: the hidden state of `layers` (their mean for several)."""
    last_only = layers == (model.config.n_layers,)
    out = model(
        input_ids,
        attention_mask,
        langs,
        segment_ids=segment_ids,
        output_hidden_states=not last_only,
        output_attentions=False,
    )
    if last_only:
        return out.last_hidden_state.astype(jnp.float32)
    # hidden_states[0] is the embeddings output, [i] the output of layer i
    return jnp.mean(jnp.stack([out.hidden_states[i].astype(jnp.float32) for i in layers]), axis=0)


def _pool(hidden: jax.Array, attention_mask: jax.Array, pooling: str) -> jax.Array:
    """`[batch, emb_dim]` pooled vectors of `[batch, length, emb_dim]` hidden states."""
    mask = attention_mask.astype(jnp.float32)[:, :, None]  # [B, T, 1]
    if pooling == "mean":  # every non-padding position, <s> and </s> included (sentence-transformers)
        return jnp.sum(hidden * mask, axis=1) / jnp.maximum(jnp.sum(mask, axis=1), 1.0)
    if pooling == "first":  # <s>: XLM's own sentence representation
        return hidden[:, 0]
    return jnp.max(jnp.where(mask > 0, hidden, -jnp.inf), axis=1)


def _embed_kernel(graphdef: nnx.GraphDef, pooling: str, layers: tuple[int, ...], normalize: bool) -> Callable:
    def kernel(state, input_ids, attention_mask, langs):
        # input_ids, attention_mask, langs: [batch, length] -> [batch, emb_dim] float32
        model = nnx.merge(graphdef, state)
        vectors = _pool(_hidden(model, layers, input_ids, attention_mask, langs), attention_mask, pooling)
        if normalize:  # as torch.nn.functional.normalize
            vectors = vectors / jnp.maximum(jnp.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)
        return vectors

    return kernel


def _hidden_kernel(graphdef: nnx.GraphDef, layers: tuple[int, ...], packed: bool) -> Callable:
    """The forward of a batch to float32 hidden states `[batch, length, emb_dim]` (the average of `layers`), pooled
    apart by `pool_segments`. Packed rows get `segment_ids` as their second array, padded rows `attention_mask`."""

    def kernel(state, input_ids, mask_or_segments, langs):
        model = nnx.merge(graphdef, state)
        if packed:
            return _hidden(model, layers, input_ids, None, langs, segment_ids=mask_or_segments)
        return _hidden(model, layers, input_ids, mask_or_segments, langs)

    return kernel

    return kernel


def _in_notebook() -> bool:
    """Whether this runs in a Jupyter / Colab kernel (where stderr is no terminal, but a progress bar shows)."""
    shell = sys.modules.get("IPython")
    try:
        return shell is not None and "IPKernelApp" in shell.get_ipython().config
    except Exception:  # no running IPython shell
        return False


def _progress(total: int, batch_size: int, show: bool | None) -> Any:
    """A tqdm.auto progress bar over `total` sentences (a widget in notebooks); None shows it for long inputs on a
    terminal or in a notebook."""
    from tqdm.auto import tqdm

    if show is None:
        show = total >= 16 * batch_size and (sys.stderr.isatty() or _in_notebook())
    return tqdm(total=total, disable=not show, unit="sentence", file=sys.stderr)


def _convert(vectors: np.ndarray, convert_to_numpy: bool, convert_to_tensor: bool) -> Any:
    """sentence-transformers' return conventions: one matrix (NumPy, or a `jax.Array` for `convert_to_tensor`),
    or a list of per-sentence `jax.Array` vectors when both are False."""
    if convert_to_tensor:
        return jnp.asarray(vectors)
    if convert_to_numpy:
        return vectors
    return list(jnp.asarray(vectors))


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


def _prepare_slots(batch: HostBatch) -> None:
    """On the prefetch thread: where each sentence of the batch is, for `pool_segments`."""
    batch.meta = segment_slots(batch)


def _pool_slots(batch: HostBatch, hidden: jax.Array, *, pooling: str, normalize: bool) -> jax.Array:
    meta = batch.meta
    return pool_segments(
        hidden, meta["slot_ids"], meta["first"], meta["last"], pooling=pooling, normalize=normalize, slots=meta["slots"]
    )


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
        tokenizer_workers: Processes that tokenize while the device computes (Moses is pure Python and holds the
            GIL, so one core tokenizes at 2-3k sentences/s); 0, the default, tokenizes on this process's prefetch
            thread. Same ids either way. The workers start on the first `encode` and stop with `close()` or when
            the embedder is collected.

    Example:
        >>> emb = Embedder.from_pretrained("./xlm-en-2048", pooling="mean")
        >>> emb.encode(["a first sentence .", "another one ."], normalize_embeddings=True).shape
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
        tokenizer_workers: int = 0,
    ):
        if pooling not in POOLINGS:
            raise InputError(f"pooling={pooling!r}: use one of {', '.join(POOLINGS)}")
        encoder = model if isinstance(model, XLMModel) else getattr(model, "transformer", None)
        if not isinstance(encoder, XLMModel):
            raise InputError(f"Embedder needs an XLMModel or a model with a .transformer encoder, not {type(model)}")
        super().__init__(
            encoder, tokenizer, mesh=mesh, rules=rules, batching=batching, tokenizer_workers=tokenizer_workers
        )
        self.pooling = pooling
        self.dim = self.config.emb_dim
        self._similarity_fn_name = "cosine"

    @classmethod
    def from_pretrained(
        cls,
        path_or_hub_id: str | os.PathLike,
        *,
        pooling: str = "mean",
        dtype: Any = jnp.float32,
        param_dtype: Any = None,
        precision: Any = None,
        mesh: Mesh | None = None,
        rules: Any = None,
        batching: str = "packed",
        tokenizer_workers: int = 0,
        **hub: Any,
    ) -> Embedder:
        """Loads the encoder and tokenizer of a checkpoint directory or hub id.

        Args:
            path_or_hub_id: A native or transformers checkpoint directory with tokenizer files, or a hub id.
            pooling: See the class.
            dtype: Compute dtype (pooling and the returned vectors are float32 whatever it is).
            param_dtype: Storage dtype; None keeps the checkpoint's.
            precision: Matmul precision (`XLMModel`'s `precision`); None is its default, `"highest"`.
            mesh: Optional device mesh.
            rules: Logical-axis rules for `mesh` (`axis_rules(data="dp", model="tp")` for other axis names).
            batching: `"packed"` or `"buckets"` (see the class).
            tokenizer_workers: Tokenizer processes (see the class).
            **hub: The hub's arguments for a hub id: `revision`, `token`, `cache_dir`, `local_files_only`,
                `subfolder`, `force_download` (passed to huggingface_hub).

        Raises:
            MissingFileError: config, weights or tokenizer files are missing (the message names the file).
        """
        if pooling not in POOLINGS:
            raise InputError(f"pooling={pooling!r}: use one of {', '.join(POOLINGS)}")
        hub = hub_options(hub).as_kwargs()
        check_tokenizer_workers(tokenizer_workers)  # before anything is loaded
        if mesh is not None:
            resolve_rules(rules, mesh)  # a mesh the rules cannot use: say so before loading anything
        config = XLMConfig.from_pretrained(path_or_hub_id, **hub)
        tokenizer = load_tokenizer(path_or_hub_id, **hub)
        # The checkpoint's own class, so that its head tensors are expected rather than reported as unused.
        architecture = next((a for a in config.architectures if a in MODEL_CLASSES), "XLMModel")
        model_cls = MODEL_CLASSES[architecture]
        model = model_cls.from_pretrained(
            path_or_hub_id, dtype=dtype, param_dtype=param_dtype, precision=precision, mesh=mesh, rules=rules, **hub
        )
        return cls(
            model,
            tokenizer,
            pooling=pooling,
            mesh=mesh,
            rules=rules,
            batching=batching,
            tokenizer_workers=tokenizer_workers,
        )

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

    def save_sentence_transformers(
        self, directory: str | os.PathLike, *, normalize_embeddings: bool = False, force: bool = False
    ) -> str:
        """Writes a directory that `sentence_transformers.SentenceTransformer(directory)` loads and that gives the
        vectors `encode(..., normalize_embeddings=normalize_embeddings)` gives (the last layer, this Embedder's
        pooling): transformers' PyTorch `XLMModel` weights, the tokenizer, and the module files.

        Args:
            directory: Output directory; it must not exist or be empty, unless `force`.
            normalize_embeddings: Add sentence-transformers' `Normalize` module (unit-length vectors).
            force: Replace a non-empty `directory`.

        Returns:
            The directory written.

        Raises:
            InputError: the model has language embeddings (sentence-transformers passes no language ids).
        """
        from xlm_flax.checkpoints.sentence_transformers import save_sentence_transformers

        return save_sentence_transformers(
            self.model,
            self.tokenizer,
            directory,
            pooling=self.pooling,
            normalize=normalize_embeddings,
            similarity_fn_name=self.similarity_fn_name,
            force=force,
        )

    @property
    def similarity_fn_name(self) -> str:
        """The function `similarity` uses: `"cosine"` (the default, as sentence-transformers), `"dot"`,
        `"euclidean"` or `"manhattan"`; settable."""
        return self._similarity_fn_name

    @similarity_fn_name.setter
    def similarity_fn_name(self, name: str) -> None:
        similarity_function(name)  # validates
        self._similarity_fn_name = name

    def similarity(self, embeddings1: Any, embeddings2: Any) -> jax.Array:
        """`[n, m]` similarity of every row of `embeddings1` with every row of `embeddings2`, with
        `similarity_fn_name`, as sentence-transformers' `SentenceTransformer.similarity` (higher is more similar:
        euclidean and manhattan are negative distances).

        Args:
            embeddings1: `[n, dim]` or `[dim]` (NumPy, JAX or a list); quantized int8/uint8 values are widened.
            embeddings2: `[m, dim]` or `[dim]`.
        """
        return similarity_function(self.similarity_fn_name)(embeddings1, embeddings2)

    def similarity_pairwise(self, embeddings1: Any, embeddings2: Any) -> jax.Array:
        """`[n]` similarity of `embeddings1[i]` with `embeddings2[i]` (sentence-transformers'
        `similarity_pairwise`).

        Args:
            embeddings1: `[n, dim]`.
            embeddings2: `[n, dim]`.
        """
        a, b = np.asarray(embeddings1), np.asarray(embeddings2)
        if a.shape != b.shape:
            raise InputError(f"similarity_pairwise: shapes {a.shape} and {b.shape} differ")
        scores = similarity_function(self.similarity_fn_name)
        return jax.vmap(lambda x, y: scores(x, y)[0, 0])(jnp.atleast_2d(a), jnp.atleast_2d(b))

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

        return self._stream(
            texts,
            batch_size=batch_size,
            lang=lang,
            truncation=truncation,
            options=("hidden", layers, True),
            build=functools.partial(_hidden_kernel, self.graphdef, layers, True),
            prepare=_prepare_slots,
            finish=functools.partial(_pool_slots, pooling=self.pooling, normalize=normalize),
        )

    def encode(
        self,
        sentences: str | Sequence[str],
        *,
        prompt: str | None = None,
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        output_value: str | None = "sentence_embedding",
        precision: str = "float32",
        convert_to_numpy: bool = True,
        convert_to_tensor: bool = False,
        normalize_embeddings: bool = False,
        normalize: bool | None = None,
        layer: int | Sequence[int] = -1,
        lang: str | None = None,
        truncation: bool = True,
    ) -> Any:
        """Embeds sentences, one vector per sentence in input order, with sentence-transformers' `encode` arguments
        and meanings (keywords only: their positional order differs from sentence-transformers').

        Args:
            sentences: A sentence or a list of sentences. An empty string still gives a vector (of `<s></s>`).
            prompt: Text put before every sentence (e.g. `"query: "`); its tokens are pooled too, as
                sentence-transformers does.
            batch_size: Sentences per device batch (rows of packed sentences with `batching="packed"`).
            show_progress_bar: Show a progress bar (tqdm.auto: a widget in notebooks, stderr elsewhere); None shows
                one for long inputs (16 batches or more) on a terminal or in a notebook.
            output_value: `"sentence_embedding"` (pooled vectors), `"token_embeddings"` (a list with one float32
                `[tokens, emb_dim]` NumPy array per sentence, `<s>` and `</s>` included, no padding) or None (a list
                with one dict per sentence: `input_ids`, `attention_mask`, `token_embeddings`,
                `sentence_embedding`). As in sentence-transformers, `convert_to_*` and `normalize_embeddings` apply
                to sentence embeddings only.
            precision: `"float32"`, or quantized: `"int8"` / `"uint8"` (255 buckets per dimension between the
                minimum and maximum of these embeddings), `"binary"` / `"ubinary"` (the sign bits packed into
                `ceil(emb_dim / 8)` int8 / uint8 bytes), exactly as `sentence_transformers.quantize_embeddings`.
            convert_to_numpy: Return one NumPy matrix; False returns a list of per-sentence `jax.Array` vectors.
            convert_to_tensor: Return one `jax.Array` (overrides `convert_to_numpy`).
            normalize_embeddings: Scale every vector to unit length (then dot product is cosine similarity).
            normalize: The same as `normalize_embeddings` (this package's earlier name).
            layer: The hidden state to pool: `-1` the last layer, `0` the embeddings output, a negative index counts
                from the end; a list of layers averages them before pooling.
            lang: Language code (e.g. `"en"`) for tokenization and, for models with language embeddings, the
                language ids. None uses the config's default language.
            truncation: Cut sentences longer than `max_position_embeddings` tokens (one warning); False raises.

        Returns:
            By default float32 `[n, emb_dim]` NumPy (`[emb_dim]` for a single string; `[0, emb_dim]` for an empty
            list); int8/uint8 for the quantized precisions; see `output_value` and `convert_to_*` for the rest.

        Raises:
            InputError: bad `layer`, `lang`, `batch_size`, `output_value`, `precision` or `prompt`, non-string
                inputs, or (with `truncation=False`) a sentence that is too long.
        """
        texts, single = _check_texts(sentences, "encode")
        if output_value not in OUTPUT_VALUES:
            raise InputError(f"output_value={output_value!r}: use one of {', '.join(map(repr, OUTPUT_VALUES))}")
        if precision not in PRECISIONS:
            raise InputError(f"precision={precision!r}: use one of {', '.join(PRECISIONS)}")
        if prompt is not None:
            if not isinstance(prompt, str):
                raise InputError(f"prompt={prompt!r}: give a string, put before every sentence")
            texts = [prompt + text for text in texts]
        normalize_embeddings = bool(normalize_embeddings or normalize)
        layers = self._layers(layer)
        if output_value == "sentence_embedding":
            vectors = self._pooled(texts, batch_size, layers, normalize_embeddings, lang, show_progress_bar, truncation)
            result = _convert(quantize_embeddings(vectors, precision), convert_to_numpy, convert_to_tensor)
        else:
            result = self._per_token(
                texts, batch_size, layers, output_value, precision, lang, show_progress_bar, truncation
            )
        return result[0] if single else result

    def _pooled(
        self,
        texts: list[str],
        batch_size: int,
        layers: tuple[int, ...],
        normalize: bool,
        lang: str | None,
        show_progress_bar: bool | None,
        truncation: bool,
    ) -> np.ndarray:
        """float32 `[n, emb_dim]` pooled (and optionally unit-length) vectors of `texts`, in input order."""
        result = np.zeros((len(texts), self.dim), dtype=np.float32)
        stream = self._embedding_batches(texts, batch_size, lang, truncation, layers, normalize)
        # closing(): an interruption tears the prefetch thread down at once (see `_Engine._stream`).
        with _progress(len(texts), batch_size, show_progress_bar) as bar, contextlib.closing(stream):
            for batch, vectors in stream:
                result[batch.indices] = vectors[: batch.n]
                bar.update(batch.n)
        return result

    def _per_token(
        self,
        texts: list[str],
        batch_size: int,
        layers: tuple[int, ...],
        output_value: str | None,
        precision: str,
        lang: str | None,
        show_progress_bar: bool | None,
        truncation: bool,
    ) -> list:
        """`output_value="token_embeddings"` or None: per-sentence token vectors (and, for None, everything)."""
        rows: list[dict[str, np.ndarray]] = [{} for _ in texts]
        packed = self.batching == "packed"

        def finish(batch: HostBatch, hidden: jax.Array) -> tuple[jax.Array, jax.Array]:
            return hidden, _pool_slots(batch, hidden, pooling=self.pooling, normalize=False)

        stream = self._stream(
            texts,
            batch_size=batch_size,
            lang=lang,
            truncation=truncation,
            options=("hidden", layers, packed),
            build=functools.partial(_hidden_kernel, self.graphdef, layers, packed),
            prepare=_prepare_slots,
            finish=finish,
        )
        with _progress(len(texts), batch_size, show_progress_bar) as bar, contextlib.closing(stream):
            for batch, (hidden, pooled) in stream:
                tokens, ids = batch.sentence_slices(hidden), batch.sentence_slices(batch.input_ids)
                for slot, i in enumerate(batch.indices):
                    rows[i] = {
                        "input_ids": ids[slot],
                        "attention_mask": np.ones(len(ids[slot]), dtype=batch.attention_mask.dtype),
                        "token_embeddings": tokens[slot],
                        "sentence_embedding": pooled[slot],
                    }
                bar.update(batch.n)
        if output_value == "token_embeddings":
            return quantize_token_embeddings([r["token_embeddings"] for r in rows], precision)
        if precision != "float32":
            raise InputError("precision applies to output_value='sentence_embedding' or 'token_embeddings', not None")
        return rows


__all__ = ["Embedder", "OUTPUT_VALUES", "POOLINGS", "pool_segments", "segment_slots"]
