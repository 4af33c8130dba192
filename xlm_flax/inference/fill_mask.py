"""`FillMask`: transformers' fill-mask pipeline on an XLM language model."""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from xlm_flax.checkpoints.hub import hub_options
from xlm_flax.checkpoints.plan import TensorMismatchError
from xlm_flax.config import XLMConfig
from xlm_flax.errors import CheckpointError, InputError
from xlm_flax.inference.batching import (
    HostBatch,
    bucket_for,
    length_buckets,
)
from xlm_flax.inference.engine import _check_texts, _Engine, _preview, check_tokenizer_workers, logger
from xlm_flax.model.lm_head import XLMWithLMHeadModel
from xlm_flax.sharding.rules import resolve_rules
from xlm_flax.tokenization import encode_text, load_tokenizer


def _fill_mask_kernel(graphdef: nnx.GraphDef, top_k: int | None, packed: bool) -> Callable:
    def kernel(state, input_ids, mask_or_segments, langs, positions):
        # input_ids, langs: [batch, length]; mask_or_segments: [batch, length] attention mask, or segment ids of
        # packed rows; positions: [batch, masks] of the mask tokens in each row.
        model = nnx.merge(graphdef, state)
        # Explicit options: a config asking for attentions or hidden states by default must not cost anything here.
        flags = dict(output_hidden_states=False, output_attentions=False)
        if packed:
            hidden = model.transformer(input_ids, langs=langs, segment_ids=mask_or_segments, **flags).last_hidden_state
        else:
            hidden = model.transformer(input_ids, mask_or_segments, langs, **flags).last_hidden_state  # [B, T, D]
        return _mask_probabilities(model, hidden, positions, top_k)

    return kernel


def _mask_probabilities(model: XLMWithLMHeadModel, hidden: jax.Array, positions: jax.Array, top_k: int | None):
    """Vocabulary probabilities at `positions` ([B, K]) of `hidden` ([B, T, D]), or their top `top_k`."""
    picked = jnp.take_along_axis(hidden, positions[:, :, None], axis=1)  # [B, K, D]: only masks reach the head
    logits = model.pred_layer(picked, model.transformer.embeddings.embedding[...])  # [B, K, V] float32
    probs = jax.nn.softmax(logits, axis=-1)
    if top_k is None:
        return probs
    return jax.lax.top_k(probs, top_k)  # ([B, K, k], [B, K, k])


def _check_top_k(top_k: int) -> None:
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
        raise InputError(f"top_k={top_k!r}: must be a positive integer")


def _pair_kernel(graphdef: nnx.GraphDef, top_k: int, use_langs: bool) -> Callable:
    def kernel(state, input_ids, attention_mask, langs, position_ids, at):
        # One TLM pair per row: [batch, length] ids, mask, language ids and positions (restarting at the second
        # sentence); at: [batch, masks] positions of the masks to predict.
        model = nnx.merge(graphdef, state)
        hidden = model.transformer(
            input_ids,
            attention_mask,
            langs if use_langs else None,
            position_ids=position_ids,
            output_hidden_states=False,
            output_attentions=False,
        ).last_hidden_state
        return _mask_probabilities(model, hidden, at, top_k)

    return kernel


class FillMask(_Engine):
    """Predicts masked words, returning what transformers' `pipeline("fill-mask")` returns.

    Args:
        model: An `XLMWithLMHeadModel`.
        tokenizer: Its `XLMTokenizer`.
        mesh: Optional device mesh; parameters are placed on it and batches split over its data axis.
        rules: Logical-axis rules for the parameters (default `DEFAULT_RULES`).
        batching: `"packed"` (the default: several texts share each row, with block-diagonal attention; each
            text's scores are what they are alone) or `"buckets"` (one text per padded row). With packing,
            `batch_size` counts rows.
        tokenizer_workers: Processes that tokenize while the device computes; 0 (the default) tokenizes on this
            process's prefetch thread. Same ids either way (see `Embedder`).

    Example:
        >>> fm = FillMask.from_pretrained("./xlm-en-2048")
        >>> fm("paris is the <special1> of france .", top_k=3)  # [{"score", "token", "token_str", "sequence"}, ...]
    """

    def __init__(
        self,
        model: XLMWithLMHeadModel,
        tokenizer: Any,
        *,
        mesh: Mesh | None = None,
        rules: Any = None,
        batching: str = "packed",
        tokenizer_workers: int = 0,
    ):
        if not hasattr(model, "pred_layer"):
            raise InputError(f"FillMask needs a model with a language-model head, not {type(model).__name__}")
        super().__init__(
            model, tokenizer, mesh=mesh, rules=rules, batching=batching, tokenizer_workers=tokenizer_workers
        )
        self.mask_token = tokenizer.mask_token
        self.mask_id = tokenizer.mask_token_id

    @classmethod
    def from_pretrained(
        cls,
        path_or_hub_id: str | os.PathLike,
        *,
        dtype: Any = jnp.float32,
        param_dtype: Any = None,
        precision: Any = None,
        mesh: Mesh | None = None,
        rules: Any = None,
        batching: str = "packed",
        tokenizer_workers: int = 0,
        **hub: Any,
    ) -> FillMask:
        """Loads the model and tokenizer of a checkpoint directory or hub id.

        Args:
            path_or_hub_id: A native or transformers checkpoint directory with tokenizer files, or a hub id.
            dtype: Compute dtype (probabilities are float32 whatever it is).
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
            CheckpointError: the checkpoint has no language-model head.
        """
        hub = hub_options(hub).as_kwargs()
        check_tokenizer_workers(tokenizer_workers)  # before anything is loaded
        if mesh is not None:
            resolve_rules(rules, mesh)  # a mesh the rules cannot use: say so before loading anything
        XLMConfig.from_pretrained(path_or_hub_id, **hub)  # first: a missing or bad config.json is what is reported
        tokenizer = load_tokenizer(path_or_hub_id, **hub)
        try:
            model = XLMWithLMHeadModel.from_pretrained(
                path_or_hub_id,
                dtype=dtype,
                param_dtype=param_dtype,
                precision=precision,
                mesh=mesh,
                rules=rules,
                strict=True,
                **hub,
            )
        except TensorMismatchError as e:
            if not e.missing_head:  # a damaged checkpoint, not one without the head
                raise
            raise CheckpointError(
                f"fill-mask needs a model with its language-model head, and {path_or_hub_id} lacks "
                f"{', '.join(e.missing_head)} (it holds a bare encoder or another head; use Embedder for "
                f"embeddings, or a checkpoint of XLMWithLMHeadModel): {e}"
            ) from e
        return cls(model, tokenizer, mesh=mesh, rules=rules, batching=batching, tokenizer_workers=tokenizer_workers)

    def _target_ids(self, targets: str | Sequence[str], code: str) -> np.ndarray:
        """Vocabulary ids of `targets`, as the pipeline picks them: the exact token, else the target's first piece."""
        targets = [targets] if isinstance(targets, str) else list(targets)
        vocab = self.tokenizer.get_vocab()
        ids = []
        for target in targets:
            if target in vocab:
                ids.append(vocab[target])
                continue
            pieces = encode_text(self.tokenizer, target, code)[1:-1]
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
            batch_size: Texts per device batch (rows of packed texts with `batching="packed"`).
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
        _check_top_k(top_k)
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

        def prepare(batch: HostBatch) -> None:  # on the prefetch thread
            # Each sentence's masks, as (position in the sentence, row, slot in the row's `positions`).
            per_row: list[list[int]] = [[] for _ in range(batch.input_ids.shape[0])]
            per_sentence = []
            for index, (row, start), ids in zip(batch.indices, batch.spans, batch.sequences):
                found = [j for j, token in enumerate(ids) if token == self.mask_id]
                if not found:
                    raise InputError(
                        f"input {index}: its mask token lies beyond the first {self.max_length} tokens, which is "
                        "all the model reads; move it earlier or shorten the text"
                    )
                per_sentence.append([(j, int(row), len(per_row[row]) + m) for m, j in enumerate(found)])
                per_row[row].extend(int(start) + j for j in found)
            width = bucket_for(max(len(r) for r in per_row), length_buckets(batch.input_ids.shape[1], minimum=1))
            positions = np.zeros((batch.input_ids.shape[0], width), dtype=np.int32)
            for row, found in enumerate(per_row):
                positions[row, : len(found)] = found
            batch.extra["positions"] = positions
            batch.meta = per_sentence

        kernel_k = None if target_ids is not None else k
        results: list = [None] * len(texts)
        stream = self._stream(
            texts,
            batch_size=batch_size,
            lang=lang,
            truncation=truncation,
            options=("fill-mask", kernel_k, self.batching),
            build=functools.partial(_fill_mask_kernel, self.graphdef, kernel_k, self.batching == "packed"),
            prepare=prepare,
        )
        # closing(): an interruption tears the prefetch thread down at once (see `_Engine._stream`).
        with contextlib.closing(stream):
            for batch, outputs in stream:
                if target_ids is None:
                    scores, ids = outputs
                else:
                    probs = outputs[:, :, target_ids]  # [B, K, n_targets]
                    order = np.argsort(-probs, axis=-1, kind="stable")[..., :k]
                    scores, ids = np.take_along_axis(probs, order, axis=-1), target_ids[order]
                for index, sequence, masks in zip(batch.indices, batch.sequences, batch.meta):
                    per_mask = [
                        self._predictions(sequence, j, scores[row, m], ids[row, m], len(masks) == 1)
                        for j, row, m in masks
                    ]
                    results[index] = per_mask[0] if len(masks) == 1 else per_mask
        return results[0] if single else results

    def with_translation(
        self,
        text: str,
        translation: str,
        *,
        lang: str | None = None,
        translation_lang: str,
        top_k: int = 5,
    ) -> list:
        """Fills the mask token(s) of `text` with its translation given next to it, as XLM's TLM objective sees a
        sentence pair: the two sentences side by side, each framed `<s> ... </s>`, positions restarting at the
        second, every token carrying its sentence's language id. A model trained with TLM can copy the word from
        the translation; compare with `self(text)`, the text alone.

        Args:
            text: A text with the mask token at least once (the masks of `translation`, if any, are not predicted).
            translation: The same text in another language.
            lang: Language code of `text` (None: the config's default).
            translation_lang: Language code of `translation`.
            top_k: Predictions per mask.

        Returns:
            What `self(text)` returns: a list of `{"score", "token", "token_str", "sequence"}` (`sequence` is `text`
            filled in), or one such list per mask.

        Raises:
            InputError: no mask token in `text`, a language the model does not know, a bad `top_k`, or a pair
                longer than `max_position_embeddings` tokens in all (the message gives both lengths).
        """
        from xlm_flax.training.objectives import tlm_pair

        texts, _ = _check_texts([text, translation], "fill-mask with a translation")
        _check_top_k(top_k)
        if self.mask_token not in text:
            raise InputError(
                f"{_preview(text)} has no mask token: write {self.mask_token} where the word to predict goes"
            )
        if translation_lang is None:
            raise InputError("translation_lang: give the language code of the translation (e.g. 'fr')")
        first_code, first_id = self.languages.resolve(lang)
        second_code, second_id = self.languages.resolve(translation_lang)
        first = encode_text(self.tokenizer, texts[0], first_code)
        second = encode_text(self.tokenizer, texts[1], second_code)
        if len(first) + len(second) > self.max_length:
            raise InputError(
                f"the pair is {len(first)} + {len(second)} tokens long, more than the model's "
                f"max_position_embeddings={self.max_length}; shorten the text or its translation"
            )
        use_langs = first_id is not None and second_id is not None  # None: a model without language embeddings
        pair = tlm_pair(first, second, first_id or 0, second_id or 0)
        masks = [j for j, token in enumerate(first) if token == self.mask_id]
        length = bucket_for(len(pair["input_ids"]), self.length_buckets)
        width = bucket_for(len(masks), length_buckets(length, minimum=1))
        batch = {
            name: np.zeros((1, length), np.int32) for name in ("input_ids", "attention_mask", "langs", "positions")
        }
        batch["input_ids"][:] = self.config.pad_index
        n = len(pair["input_ids"])
        batch["input_ids"][0, :n], batch["langs"][0, :n] = pair["input_ids"], pair["langs"]
        batch["positions"][0, :n], batch["attention_mask"][0, :n] = pair["position_ids"], 1
        at = np.zeros((1, width), np.int32)
        at[0, : len(masks)] = masks
        k = min(top_k, self.config.vocab_size)
        rows = self._multiple  # a mesh's data axis needs that many rows: copies of the pair
        args = [
            self._put(np.repeat(batch[name], rows, 0)) for name in ("input_ids", "attention_mask", "langs", "positions")
        ]
        at = np.repeat(at, rows, 0)
        scores, ids = self._call(
            ("fill-mask-pair", k, length, width),
            functools.partial(_pair_kernel, self.graphdef, k, use_langs),
            [*args, self._put(at)],
        )
        scores, ids = np.asarray(scores), np.asarray(ids)
        per_mask = [self._predictions(first, j, scores[0, m], ids[0, m], len(masks) == 1) for m, j in enumerate(masks)]
        return per_mask[0] if len(masks) == 1 else per_mask

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


__all__ = ["FillMask"]
