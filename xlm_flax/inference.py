"""Inference objects: `FillMask` (transformers' fill-mask pipeline) and `Embedder` (sentence-transformers' `encode`).

Both follow one pattern: build once from a checkpoint, hold `graphdef, state = nnx.split(model)`, and run a pure
function of `(state, batch)` compiled once per shape bucket (`xlm_flax.buckets`). Inputs are sorted by length, cut
into batches, tokenized and padded on a background thread while the device works on the previous batch, and the
results are put back in input order. With a `mesh`, parameters are placed by their logical axes and every batch is
padded to a multiple of the data axis and split over it.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from xlm_flax.buckets import HostBatch, Prefetcher, batch_buckets, batch_order, bucket_for, length_buckets, pad_batch
from xlm_flax.config import XLMConfig
from xlm_flax.errors import CheckpointError, InputError
from xlm_flax.modeling import MODEL_CLASSES, XLMModel, XLMWithLMHeadModel
from xlm_flax.parallel import DATA, data_sharding, shard_model
from xlm_flax.tokenization import Languages, encode_text, load_tokenizer, truncate

logger = logging.getLogger("xlm_flax")

POOLINGS = ("mean", "first", "max")
OUTPUTS = ("numpy", "jax")


def _preview(text: str, width: int = 40) -> str:
    return repr(text if len(text) <= width else text[: width - 3] + "...")


def _check_texts(inputs: str | Sequence[str], what: str) -> tuple[list[str], bool]:
    """The inputs as a list, and whether a single string was given."""
    if isinstance(inputs, str):
        return [inputs], True
    if isinstance(inputs, bytes) or not isinstance(inputs, Sequence | Iterator):
        raise InputError(f"{what}: give a string or a list of strings, not {type(inputs).__name__}")
    texts = list(inputs)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise InputError(f"{what}: input {i} is a {type(text).__name__}, not a string")
    return texts, False


class _Engine:
    """What `FillMask` and `Embedder` share: the split model, the tokenizer, languages, buckets and the batch loop.

    Args:
        model: The model to run (its parameters are placed on `mesh` when one is given).
        tokenizer: transformers' `XLMTokenizer` for the model.
        mesh: Optional device mesh (`xlm_flax.make_mesh`).
        rules: Logical-axis rules for placing the parameters (default `DEFAULT_RULES`).
    """

    def __init__(self, model: nnx.Module, tokenizer: Any, *, mesh: Mesh | None = None, rules: Any = None):
        if mesh is not None:
            shard_model(model, mesh, rules)  # a no-op for parameters already placed so (from_pretrained)
        self.config: XLMConfig = model.config
        self.tokenizer = tokenizer
        self.mesh = mesh
        self.languages = Languages(self.config)
        self.graphdef, self.state = nnx.split(model)
        self.max_length = self.config.max_position_embeddings
        self.length_buckets = length_buckets(self.max_length)
        self._multiple = mesh.shape[DATA] if mesh is not None else 1
        self._executables: dict[tuple, Any] = {}

    @property
    def model(self) -> nnx.Module:
        """The model (a new NNX object over the same parameters)."""
        return nnx.merge(self.graphdef, self.state)

    @property
    def num_compilations(self) -> int:
        """Number of shapes compiled so far (one per bucket and option set used)."""
        return len(self._executables)

    def bucket_count(self, batch_size: int) -> int:
        """Number of (batch, length) buckets for `batch_size`: the most compilations one option set can cause."""
        return len(batch_buckets(batch_size, self._multiple)) * len(self.length_buckets)

    # ------------------------------------------------------------------------------------------- host side

    def _host_batches(
        self,
        texts: list[str],
        batch_size: int,
        lang: tuple[str, int | None],
        truncation: bool,
        truncated: list[int],
        prepare: Callable[[HostBatch], None] | None,
    ) -> Iterator[HostBatch]:
        """Tokenizes and pads batch after batch (runs on the prefetch thread)."""
        code, lang_id = lang
        sizes = batch_buckets(batch_size, self._multiple)
        for indices in batch_order([len(t) for t in texts], batch_size):
            sequences = []
            for i in indices:
                ids = encode_text(self.tokenizer, texts[i], code)
                if len(ids) > self.max_length:
                    if not truncation:
                        raise InputError(
                            f"input {i} ({_preview(texts[i])}) is {len(ids)} tokens long, more than the model's "
                            f"max_position_embeddings={self.max_length}; shorten it or allow truncation"
                        )
                    truncated.append(int(i))
                    ids = truncate(ids, self.max_length, self.config.eos_index)
                sequences.append(ids)
            batch = pad_batch(
                indices,
                sequences,
                batch=bucket_for(len(indices), sizes),
                length=bucket_for(max(len(s) for s in sequences), self.length_buckets),
                pad_index=self.config.pad_index,
                lang_id=lang_id,
            )
            if prepare is not None:
                prepare(batch)
            yield batch

    def _put(self, array: np.ndarray | None) -> jax.Array | None:
        if array is None:
            return None
        if self.mesh is None:
            return jax.device_put(array)
        return jax.device_put(array, data_sharding(self.mesh, array.ndim))

    # ----------------------------------------------------------------------------------------- device side

    def _call(self, key: tuple, build: Callable[[], Callable], args: list[jax.Array | None]) -> Any:
        """Runs the executable of `key` (compiling it on first use) on `args`; returns without waiting."""
        executable = self._executables.get(key)
        if executable is None:
            executable = jax.jit(build()).lower(self.state, *args).compile()
            self._executables[key] = executable
        return executable(self.state, *args)

    def _stream(
        self,
        texts: list[str],
        *,
        batch_size: int,
        lang: str | None,
        truncation: bool,
        options: tuple,
        build: Callable[[], Callable],
        prepare: Callable[[HostBatch], None] | None = None,
    ) -> Iterator[tuple[HostBatch, Any]]:
        """Yields `(host batch, outputs as NumPy)` for every batch of `texts`.

        Batch i+1 is tokenized (prefetch thread) and dispatched before the outputs of batch i are fetched, so the
        device always has work queued while the host waits.
        """
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise InputError(f"batch_size={batch_size!r}: must be a positive integer")
        resolved = self.languages.resolve(lang)
        truncated: list[int] = []
        pending = None
        producer = self._host_batches(texts, batch_size, resolved, truncation, truncated, prepare)
        with Prefetcher(producer) as batches:
            for batch in batches:
                host = [batch.input_ids, batch.attention_mask, batch.langs, *batch.extra.values()]
                key = (*options, tuple(None if a is None else a.shape for a in host))
                outputs = self._call(key, build, [self._put(a) for a in host])
                if pending is not None:
                    yield pending[0], jax.tree.map(np.asarray, pending[1])
                pending = (batch, outputs)
            if pending is not None:
                yield pending[0], jax.tree.map(np.asarray, pending[1])
        if truncated:
            logger.warning(
                "%d of %d inputs were longer than max_position_embeddings=%d tokens and were truncated (first: "
                "input %d); pass truncation=False (--no-truncate) to get an error instead",
                len(truncated),
                len(texts),
                self.max_length,
                min(truncated),
            )


# ------------------------------------------------------------------------------------------------------ fill-mask


def _fill_mask_kernel(graphdef: nnx.GraphDef, top_k: int | None) -> Callable:
    def kernel(state, input_ids, attention_mask, langs, positions):
        # input_ids, attention_mask, langs: [batch, length]; positions: [batch, masks] of the mask tokens.
        model = nnx.merge(graphdef, state)
        hidden = model.transformer(input_ids, attention_mask, langs).last_hidden_state  # [B, T, D]
        picked = jnp.take_along_axis(hidden, positions[:, :, None], axis=1)  # [B, K, D]: only masks reach the head
        logits = model.pred_layer(picked, model.transformer.embeddings.embedding[...])  # [B, K, V] float32
        probs = jax.nn.softmax(logits, axis=-1)
        if top_k is None:
            return probs
        return jax.lax.top_k(probs, top_k)  # ([B, K, k], [B, K, k])

    return kernel


class FillMask(_Engine):
    """Predicts masked words, returning what transformers' `pipeline("fill-mask")` returns.

    Args:
        model: An `XLMWithLMHeadModel`.
        tokenizer: Its `XLMTokenizer`.
        mesh: Optional device mesh; parameters are placed on it and batches split over its data axis.
        rules: Logical-axis rules for the parameters (default `DEFAULT_RULES`).

    Example:
        >>> fm = FillMask.from_pretrained("./xlm-en-2048")
        >>> fm("paris is the <special1> of france .", top_k=3)  # [{"score", "token", "token_str", "sequence"}, ...]
    """

    def __init__(self, model: XLMWithLMHeadModel, tokenizer: Any, *, mesh: Mesh | None = None, rules: Any = None):
        if not hasattr(model, "pred_layer"):
            raise InputError(f"FillMask needs a model with a language-model head, not {type(model).__name__}")
        super().__init__(model, tokenizer, mesh=mesh, rules=rules)
        self.mask_token = tokenizer.mask_token
        self.mask_id = tokenizer.mask_token_id

    @classmethod
    def from_pretrained(
        cls,
        path_or_hub_id: str | os.PathLike,
        *,
        dtype: Any = jnp.float32,
        param_dtype: Any = None,
        mesh: Mesh | None = None,
        rules: Any = None,
    ) -> FillMask:
        """Loads the model and tokenizer of a checkpoint directory or hub id.

        Args:
            path_or_hub_id: A native or transformers checkpoint directory with tokenizer files, or a hub id.
            dtype: Compute dtype (probabilities are float32 whatever it is).
            param_dtype: Storage dtype; None keeps the checkpoint's.
            mesh: Optional device mesh.
            rules: Logical-axis rules for `mesh`.

        Raises:
            MissingFileError: config, weights or tokenizer files are missing (the message names the file).
            CheckpointError: the checkpoint has no language-model head.
        """
        XLMConfig.from_pretrained(path_or_hub_id)  # first, so that a missing or bad config.json is what is reported
        tokenizer = load_tokenizer(path_or_hub_id)
        try:
            model = XLMWithLMHeadModel.from_pretrained(
                path_or_hub_id, dtype=dtype, param_dtype=param_dtype, mesh=mesh, rules=rules, strict=True
            )
        except CheckpointError as e:
            if "missing tensors" not in str(e):
                raise
            raise CheckpointError(f"fill-mask needs a model with its language-model head: {e}") from e
        return cls(model, tokenizer, mesh=mesh, rules=rules)

    def _target_ids(self, targets: str | Sequence[str], code: str) -> np.ndarray:
        """Vocabulary ids of `targets`, as the pipeline picks them: the exact token, else the target's first piece."""
        targets = [targets] if isinstance(targets, str) else list(targets)
        vocab = self.tokenizer.get_vocab()
        ids = []
        for target in targets:
            if target in vocab:
                ids.append(vocab[target])
                continue
            pieces = self.tokenizer.convert_tokens_to_ids(self.tokenizer.tokenize(target, lang=code))
            if not pieces:
                logger.warning("target %r is not in the vocabulary and tokenizes to nothing: ignored", target)
                continue
            logger.warning(
                "target %r is not in the vocabulary: using its first piece %r",
                target,
                self.tokenizer.convert_ids_to_tokens(pieces[0]),
            )
            ids.append(pieces[0])
        if not ids:
            raise InputError("no usable target: give targets that are tokens of the vocabulary (e.g. 'paris</w>')")
        return np.array(sorted(set(ids)), dtype=np.int64)

    def __call__(
        self,
        inputs: str | Sequence[str],
        top_k: int = 5,
        targets: str | Sequence[str] | None = None,
        lang: str | None = None,
        *,
        batch_size: int = 8,
        truncation: bool = True,
    ) -> list:
        """Fills the mask token(s) of one text or of each text of a list.

        Args:
            inputs: A text or a list of texts, each containing the mask token (`self.mask_token`) at least once.
            top_k: Number of predictions per mask.
            targets: Restrict the candidates to these tokens (vocabulary tokens such as `"paris</w>"`; another
                string is replaced by its first BPE piece, with a warning, as the pipeline does).
            lang: Language code (e.g. `"en"`) for tokenization and, for models with language embeddings, the
                language ids. None uses the config's default language.
            batch_size: Texts per device batch.
            truncation: Cut texts longer than `max_position_embeddings` tokens (one warning); False raises instead.

        Returns:
            For one text: a list of `{"score", "token", "token_str", "sequence"}` sorted by score, or, when the text
            has several masks, one such list per mask. For a list of texts: one such result per text (also for a
            list of one text, where the pipeline would unwrap it), and `[]` for an empty list.

        Raises:
            InputError: a text without the mask token, a bad `top_k`, `targets` or `lang`, or (with
                `truncation=False`) a text that is too long.
        """
        texts, single = _check_texts(inputs, "fill-mask")
        if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
            raise InputError(f"top_k={top_k!r}: must be a positive integer")
        for i, text in enumerate(texts):
            if self.mask_token not in text:
                raise InputError(
                    f"input {i} ({_preview(text)}) has no mask token: write {self.mask_token} where the word to "
                    "predict goes"
                )
        if not texts:
            return []
        code, _ = self.languages.resolve(lang)
        target_ids = self._target_ids(targets, code) if targets is not None else None
        k = min(top_k, len(target_ids) if target_ids is not None else self.config.vocab_size)

        def prepare(batch: HostBatch) -> None:
            rows = []
            for row, ids in zip(batch.indices, batch.sequences):
                found = [j for j, token in enumerate(ids) if token == self.mask_id]
                if not found:
                    raise InputError(
                        f"input {row}: its mask token lies beyond the first {self.max_length} tokens, which is all "
                        "the model reads; move it earlier or shorten the text"
                    )
                rows.append(found)
            width = bucket_for(max(len(r) for r in rows), length_buckets(batch.input_ids.shape[1], minimum=1))
            positions = np.zeros((batch.input_ids.shape[0], width), dtype=np.int32)
            for row, found in enumerate(rows):
                positions[row, : len(found)] = found
            batch.extra["positions"] = positions
            batch.meta = rows

        kernel_k = None if target_ids is not None else k
        results: list = [None] * len(texts)
        for batch, outputs in self._stream(
            texts,
            batch_size=batch_size,
            lang=lang,
            truncation=truncation,
            options=("fill-mask", kernel_k),
            build=functools.partial(_fill_mask_kernel, self.graphdef, kernel_k),
            prepare=prepare,
        ):
            if target_ids is None:
                scores, ids = outputs
            else:
                probs = outputs[:, :, target_ids]  # [B, K, n_targets]
                order = np.argsort(-probs, axis=-1, kind="stable")[..., :k]
                scores, ids = np.take_along_axis(probs, order, axis=-1), target_ids[order]
            for row, (index, sequence) in enumerate(zip(batch.indices, batch.sequences)):
                masks = batch.meta[row]
                per_mask = [
                    self._predictions(sequence, j, scores[row, m], ids[row, m], len(masks) == 1)
                    for m, j in enumerate(masks)
                ]
                results[index] = per_mask[0] if len(masks) == 1 else per_mask
        return results[0] if single else results

    def _predictions(
        self, sequence: list[int], position: int, scores: np.ndarray, ids: np.ndarray, single_mask: bool
    ) -> list[dict[str, Any]]:
        """The pipeline's dictionaries for one mask: the sequence is decoded with this mask filled in, dropping the
        special tokens only when the text has a single mask (as the pipeline does)."""
        out = []
        for score, token in zip(scores.tolist(), ids.tolist()):
            filled = list(sequence)
            filled[position] = int(token)
            out.append(
                {
                    "score": float(score),
                    "token": int(token),
                    "token_str": self.tokenizer.decode([int(token)]),
                    "sequence": self.tokenizer.decode(filled, skip_special_tokens=single_mask),
                }
            )
        return out


# ----------------------------------------------------------------------------------------------------- embeddings


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


class Embedder(_Engine):
    """Sentence embeddings from an XLM encoder, called like sentence-transformers' `encode`.

    Args:
        model: An `XLMModel`, or a model with a `transformer` encoder (e.g. `XLMWithLMHeadModel`).
        tokenizer: Its `XLMTokenizer`.
        pooling: `"mean"` (every non-padding position, `<s>` and `</s>` included), `"first"` (the `<s>` position,
            the original XLM sentence representation) or `"max"` (over non-padding positions).
        mesh: Optional device mesh; parameters are placed on it and batches split over its data axis.
        rules: Logical-axis rules for the parameters (default `DEFAULT_RULES`).

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
    ):
        if pooling not in POOLINGS:
            raise InputError(f"pooling={pooling!r}: use one of {', '.join(POOLINGS)}")
        encoder = model if isinstance(model, XLMModel) else getattr(model, "transformer", None)
        if not isinstance(encoder, XLMModel):
            raise InputError(f"Embedder needs an XLMModel or a model with a .transformer encoder, not {type(model)}")
        super().__init__(encoder, tokenizer, mesh=mesh, rules=rules)
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
    ) -> Embedder:
        """Loads the encoder and tokenizer of a checkpoint directory or hub id.

        Args:
            path_or_hub_id: A native or transformers checkpoint directory with tokenizer files, or a hub id.
            pooling: See the class.
            dtype: Compute dtype (pooling and the returned vectors are float32 whatever it is).
            param_dtype: Storage dtype; None keeps the checkpoint's.
            mesh: Optional device mesh.
            rules: Logical-axis rules for `mesh`.

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
        return cls(model, tokenizer, pooling=pooling, mesh=mesh, rules=rules)

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
            batch_size: Sentences per device batch.
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
                for batch, vectors in self._stream(
                    texts,
                    batch_size=batch_size,
                    lang=lang,
                    truncation=truncation,
                    options=("embed", self.pooling, layers, bool(normalize)),
                    build=functools.partial(_embed_kernel, self.graphdef, self.pooling, layers, bool(normalize)),
                ):
                    result[batch.indices] = vectors[: batch.n]
                    bar.update(batch.n)
        if single:
            result = result[0]
        return jnp.asarray(result) if output == "jax" else result


__all__ = ["Embedder", "FillMask"]
