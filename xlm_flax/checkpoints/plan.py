"""Load planning: which target parameter comes from which source tensors, checked before anything is read."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from flax import nnx

from xlm_flax.checkpoints.names import ENCODER_PREFIX, Rule, encoder_rules, is_ignored_torch_name
from xlm_flax.checkpoints.registry import architecture as registry_entry
from xlm_flax.checkpoints.registry import model_rules, tied_torch_names
from xlm_flax.checkpoints.sources import TensorSource
from xlm_flax.config import XLMConfig
from xlm_flax.errors import CheckpointError


class TensorMismatchError(CheckpointError):
    """A checkpoint whose tensors do not fit the model: what `LoadPlan.check` found, listed in the message and kept
    in the attributes so that callers decide from them (e.g. "this checkpoint has no LM head") and not from text.

    Args:
        message: The message, listing every problem.
        missing_encoder: See the attributes.
        missing_head: See the attributes.
        unexpected: See the attributes.
        mismatched: See the attributes.

    Attributes:
        missing_encoder: Encoder tensors the checkpoint lacks.
        missing_head: Head parameters the checkpoint lacks (refused because fresh ones were not allowed).
        unexpected: Checkpoint tensors the model does not use (refused because they were not allowed).
        mismatched: Tensors whose shape disagrees with the config, as `name: checkpoint [..], config wants [..]`.
    """

    def __init__(
        self,
        message: str,
        *,
        missing_encoder: Sequence[str] = (),
        missing_head: Sequence[str] = (),
        unexpected: Sequence[str] = (),
        mismatched: Sequence[str] = (),
    ):
        super().__init__(message)
        self.missing_encoder = tuple(missing_encoder)
        self.missing_head = tuple(missing_head)
        self.unexpected = tuple(unexpected)
        self.mismatched = tuple(mismatched)


def abstract_model(cls: type, config: XLMConfig, **model_kwargs: Any) -> nnx.Module:
    """The model with `jax.ShapeDtypeStruct` in place of every parameter: shapes and dtypes, no memory.

    Args:
        cls: The model class.
        config: Its config.
        **model_kwargs: Constructor arguments (`dtype`, `param_dtype`, ...).
    """
    return nnx.eval_shape(lambda: cls(config, rngs=nnx.Rngs(0), **model_kwargs))


def _flax_name(path: tuple) -> str:
    return ".".join(str(p) for p in path)


def flat_targets(abstract_state: nnx.State) -> dict[str, Any]:
    """Flat dotted path -> abstract variable of a model's state (`nnx.split(abstract_model(...))[1]`), the
    `targets` of a `LoadPlan`.

    Args:
        abstract_state: The state.
    """
    return {_flax_name(path): variable for path, variable in nnx.to_flat_state(abstract_state)}


class LoadPlan:
    """Which target parameter comes from which source tensors, checked before anything is read.

    Args:
        source: The tensors to read.
        architecture: transformers class name of the target model.
        config: The target model's config.
        targets: Flat Flax path -> abstract variable of the target model.

    Attributes:
        targets: As given.
        found: Flax path -> (rule, source names in layer order) for torch sources, or the source name for native.
        missing_new: Target parameters the source lacks and that may be freshly initialised (head tensors).
        missing_encoder: Encoder tensors the source lacks (always an error).
        mismatched: Source tensors whose shape disagrees with the config (always an error).
        unused: Source tensors that the target does not use.

    Building a plan reads nothing and raises nothing; `check` decides which of these are errors.
    """

    def __init__(self, source: TensorSource, architecture: str, config: XLMConfig, targets: dict[str, Any]):
        self.source = source
        self.targets = targets
        names = set(source.names())
        source_prefixed = any(n.startswith(ENCODER_PREFIX) for n in names)
        target_prefixed = registry_entry(architecture).encoder_prefix == ENCODER_PREFIX

        def source_name(target_name: str, encoder: bool) -> str:
            # A bare encoder checkpoint feeds a head model and vice versa: only the encoder prefix differs.
            if encoder and target_prefixed and not source_prefixed:
                return target_name.removeprefix(ENCODER_PREFIX)
            if encoder and source_prefixed and not target_prefixed:
                return ENCODER_PREFIX + target_name
            return target_name

        self.found: dict[str, tuple[Rule | None, list[str]]] = {}
        self.missing_new: list[str] = []
        missing_encoder: list[str] = []
        mismatched: list[str] = []
        used: set[str] = set()
        encoder_paths = {r.flax_path for r in encoder_rules(config)}

        if source.kind == "torch":
            for rule in model_rules(architecture, config):
                is_encoder = _strip(rule.flax_path, target_prefixed) in encoder_paths
                wanted = [source_name(n, is_encoder) for n in rule.torch_names]
                absent = [n for n in wanted if n not in names]
                if absent:
                    (missing_encoder if is_encoder else self.missing_new).append(
                        rule.flax_path if not is_encoder else ", ".join(absent)
                    )
                    continue
                expected = rule.torch_shape(targets[rule.flax_path].shape)
                for n in wanted:
                    if tuple(source.shape(n)) != tuple(expected):
                        mismatched.append(f"{n}: checkpoint {list(source.shape(n))}, config wants {list(expected)}")
                used.update(wanted)
                self.found[rule.flax_path] = (rule, wanted)
            tied = {source_name(n, False) for n in tied_torch_names(architecture, config)}
            tied |= {ENCODER_PREFIX + n for n in tied} | {n.removeprefix(ENCODER_PREFIX) for n in tied}
            used |= {n for n in names if n in tied or is_ignored_torch_name(n)}
        else:
            for path, target in targets.items():
                is_encoder = _strip(path, target_prefixed) in encoder_paths
                name = source_name(path, is_encoder)
                if name not in names:
                    (missing_encoder if is_encoder else self.missing_new).append(path if not is_encoder else name)
                    continue
                if tuple(source.shape(name)) != tuple(target.shape):
                    mismatched.append(
                        f"{name}: checkpoint {list(source.shape(name))}, config wants {list(target.shape)}"
                    )
                used.add(name)
                self.found[path] = (None, [name])
        self.unused = sorted(names - used)
        self.missing_encoder = missing_encoder
        self.mismatched = mismatched

    def check(self, *, missing_ok: bool, unused_ok: bool) -> None:
        """Raises one error listing every problem: missing encoder tensors and wrong shapes always, missing head
        tensors unless `missing_ok`, unexpected tensors unless `unused_ok`.

        Args:
            missing_ok: Accept missing head tensors (they are freshly initialised).
            unused_ok: Accept source tensors the target does not use.

        Raises:
            TensorMismatchError: naming every offending tensor, so that one run shows everything to fix.
        """
        problems = []
        missing_head = [] if missing_ok else self.missing_new
        unexpected = [] if unused_ok else self.unused
        missing = self.missing_encoder + missing_head
        if missing:
            problems.append(f"missing tensors: {', '.join(missing)}")
        if unexpected:
            problems.append(f"unexpected tensors: {', '.join(unexpected)}")
        if self.mismatched:
            problems.append(f"wrong shapes for the config: {'; '.join(self.mismatched)}")
        if problems:
            raise TensorMismatchError(
                f"{self.source.description} does not fit the model: {' | '.join(problems)}",
                missing_encoder=self.missing_encoder,
                missing_head=missing_head,
                unexpected=unexpected,
                mismatched=self.mismatched,
            )

    def read(self, path: str, dtype: np.dtype) -> np.ndarray:
        """Reads and converts the tensor(s) of target `path` into one array of the target dtype.

        Args:
            path: Flat Flax path of the target parameter.
            dtype: Target dtype.
        """
        rule, names = self.found[path]
        if rule is None:
            return self.source.read(names[0]).astype(dtype, copy=False)
        if not rule.n_layers:
            return rule.layout.to_flax(self.source.read(names[0])).astype(dtype, copy=False)
        out = np.empty((len(names), *rule.per_layer(self.targets[path].shape)), dtype=dtype)
        for i, name in enumerate(names):
            out[i] = rule.layout.to_flax(self.source.read(name))
        return out

    def sliceable(self, path: str) -> bool:
        """Whether target `path` is stored as it is loaded (a native checkpoint), so that `slices` can read any part
        of it without the rest. Tensors under transformers names are rearranged (transposed, split into heads,
        stacked over layers) and must be read whole.

        Args:
            path: Flat Flax path of the target parameter.
        """
        return self.found[path][0] is None

    def slices(self, path: str, dtype: np.dtype) -> TensorSlices:
        """Target `path` as a lazy tensor whose `[index]` reads only that slice (see `sliceable`).

        Args:
            path: Flat Flax path of a sliceable target parameter.
            dtype: Target dtype.
        """
        if not self.sliceable(path):
            raise ValueError(f"{path} is rearranged from transformers' layout and cannot be read by slices")
        return TensorSlices(self.source, self.found[path][1][0], tuple(self.targets[path].shape), np.dtype(dtype))


class TensorSlices:
    """One checkpoint tensor read lazily: `tensor[index]` reads only that slice from the source (what
    `xlm_flax.sharding.placement.sharded_placer` asks for, once per distinct device shard).

    Args:
        source: The tensors.
        name: The tensor's name in `source`.
        shape: Its shape.
        dtype: The dtype slices are converted to.
    """

    def __init__(self, source: TensorSource, name: str, shape: tuple[int, ...], dtype: np.dtype):
        self.source, self.name, self.shape, self.dtype = source, name, shape, dtype

    def __getitem__(self, index: tuple[slice, ...]) -> np.ndarray:
        return self.source.read_slice(self.name, index).astype(self.dtype, copy=False)


def _strip(path: str, prefixed: bool) -> str:
    return path.removeprefix(ENCODER_PREFIX) if prefixed else path


__all__ = ["ENCODER_PREFIX", "LoadPlan", "TensorMismatchError", "TensorSlices", "abstract_model", "flat_targets"]
