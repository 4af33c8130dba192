"""Checkpoint directories: reading transformers and native weights into a model, writing them back.

Two on-disk layouts share the directory shape `config.json` + weights (+ tokenizer files):

* **native** (`save_pretrained(dir)`): `model.safetensors` whose tensors are named by our flat parameter paths
  (`transformer.attentions.q_lin.kernel`, stacked over layers), marked `{"library": "xlm_flax"}` in its metadata.
  Reading it needs neither torch nor transformers' model code.
* **transformers** (`save_pretrained(dir, format="pytorch")`, or any hub checkpoint): `model.safetensors`, a sharded
  `model.safetensors.index.json`, or `pytorch_model.bin` (read with `torch.load(weights_only=True)`), with
  transformers' tensor names; converted through the table in `xlm_flax.weights`.

Loading builds the model abstractly (`nnx.eval_shape`: no memory), then reads, converts and places one tensor at a
time, so peak host memory stays near one copy of the parameters plus the largest single tensor.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import nnx

from xlm_flax.config import CONFIG_NAME, XLMConfig
from xlm_flax.errors import CheckpointError, InputError, MissingFileError
from xlm_flax.hub import resolve_file
from xlm_flax.safetensors_io import SafetensorsReader, write_safetensors
from xlm_flax.weights import Rule, is_ignored_torch_name, model_rules, tied_torch_names

logger = logging.getLogger("xlm_flax")

WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
TORCH_WEIGHTS_NAME = "pytorch_model.bin"
NATIVE_METADATA = {"format": "flax", "library": "xlm_flax", "layout": "1"}
TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json")
ENCODER_PREFIX = "transformer."

Placer = Callable[[str, np.ndarray], jax.Array]


# ------------------------------------------------------------------------------------------------- tensor sources


class TensorSource:
    """Named tensors read one at a time.

    Attributes:
        kind: `"flax"` for our native layout, `"torch"` for transformers names.
        description: Where the tensors come from, for messages.
    """

    kind: str
    description: str

    def names(self) -> list[str]:
        """Every tensor name."""
        raise NotImplementedError

    def shape(self, name: str) -> tuple[int, ...]:
        """Shape of `name` without reading it.

        Args:
            name: Tensor name.
        """
        raise NotImplementedError

    def dtype(self, name: str) -> np.dtype:
        """NumPy dtype of `name` without reading it.

        Args:
            name: Tensor name.
        """
        raise NotImplementedError

    def read(self, name: str) -> np.ndarray:
        """Reads `name` into a new NumPy array.

        Args:
            name: Tensor name.
        """
        raise NotImplementedError

    def close(self) -> None:
        """Releases what the source holds open."""


class SafetensorsSource(TensorSource):
    """One or several (sharded) safetensors files.

    Args:
        paths: The safetensors files.
        kind: `"flax"` (native names) or `"torch"` (transformers names).
    """

    def __init__(self, paths: list[str], kind: str):
        self.kind = kind
        self.description = paths[0] if len(paths) == 1 else f"{len(paths)} shards in {os.path.dirname(paths[0])}"
        self._readers: dict[str, SafetensorsReader] = {}
        for path in paths:
            reader = SafetensorsReader(path)
            for name in reader.keys():
                self._readers[name] = reader

    def names(self) -> list[str]:
        """Every tensor name."""
        return list(self._readers)

    def shape(self, name: str) -> tuple[int, ...]:
        """Shape of `name` without reading it.

        Args:
            name: Tensor name.
        """
        return self._readers[name].shape(name)

    def dtype(self, name: str) -> np.dtype:
        """NumPy dtype of `name` without reading it.

        Args:
            name: Tensor name.
        """
        return self._readers[name].dtype(name)

    def read(self, name: str) -> np.ndarray:
        """Reads `name` into a new NumPy array.

        Args:
            name: Tensor name.
        """
        return self._readers[name].read(name)


class TorchFileSource(TensorSource):
    """A `pytorch_model.bin`, loaded with `torch.load(weights_only=True)`: tensors and plain containers only, so a
    file that would run code when unpickled is refused.

    Args:
        path: The `pytorch_model.bin` file.
    """

    kind = "torch"

    def __init__(self, path: str):
        self.description = path
        try:
            import torch
        except ImportError as e:
            raise CheckpointError(
                f"{path} is a PyTorch file and reading it needs torch: pip install 'xlm-flax[torch]', "
                "or convert a safetensors checkpoint instead"
            ) from e
        import pickle

        try:
            try:
                state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError:  # files in torch's legacy (pre-zip) format cannot be memory-mapped
                state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            raise CheckpointError(
                f"refusing to read {path}: it holds objects other than tensors, and unpickling them could run "
                f"code ({str(e).splitlines()[0]}); use a safetensors checkpoint"
            ) from e
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise CheckpointError(f"{path} holds a {type(state).__name__}, not a dictionary of tensors")
        self._state = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}

    def names(self) -> list[str]:
        """Every tensor name."""
        return list(self._state)

    def shape(self, name: str) -> tuple[int, ...]:
        """Shape of `name`.

        Args:
            name: Tensor name.
        """
        return tuple(self._state[name].shape)

    def dtype(self, name: str) -> np.dtype:
        """NumPy dtype of `name`.

        Args:
            name: Tensor name.
        """
        import torch

        tensor = self._state[name]
        if tensor.dtype == torch.bfloat16:
            return np.dtype(ml_dtypes.bfloat16)
        return np.dtype(torch.empty((), dtype=tensor.dtype).numpy().dtype)

    def read(self, name: str) -> np.ndarray:
        """Converts `name` to a new NumPy array.

        Args:
            name: Tensor name.
        """
        return torch_to_numpy(self._state[name])

    def close(self) -> None:
        """Drops the loaded tensors."""
        self._state = {}


def torch_to_numpy(tensor: Any) -> np.ndarray:
    """Converts a CPU torch tensor to NumPy without an intermediate float32 copy (bfloat16 included)."""
    import torch

    tensor = tensor.detach().cpu().contiguous()
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16).copy()
    return tensor.numpy().copy()


def open_weights(path_or_hub_id: str | os.PathLike) -> TensorSource:
    """Opens the weights of a model directory or hub id, whichever layout they are in.

    Args:
        path_or_hub_id: A model directory or hub id.

    Raises:
        MissingFileError: when no weight file is found (the message lists the names looked for).
        CheckpointError: when the file cannot be read.
    """
    single = resolve_file(path_or_hub_id, WEIGHTS_NAME, required=False)
    if single is not None:
        reader = SafetensorsReader(single)
        native = reader.metadata.get("library") == "xlm_flax"
        return SafetensorsSource([single], "flax" if native else "torch")
    index = resolve_file(path_or_hub_id, WEIGHTS_INDEX_NAME, required=False)
    if index is not None:
        with open(index, encoding="utf-8") as f:
            weight_map = json.load(f).get("weight_map", {})
        shards = sorted(set(weight_map.values()))
        if not shards:
            raise CheckpointError(f"{index} lists no shards")
        return SafetensorsSource([resolve_file(path_or_hub_id, shard) for shard in shards], "torch")
    torch_file = resolve_file(path_or_hub_id, TORCH_WEIGHTS_NAME, required=False)
    if torch_file is not None:
        return TorchFileSource(torch_file)
    raise MissingFileError(
        f"{os.fspath(path_or_hub_id)} has no weights: expected {WEIGHTS_NAME}, {WEIGHTS_INDEX_NAME} or "
        f"{TORCH_WEIGHTS_NAME}"
    )


# -------------------------------------------------------------------------------------------------- load planning


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
        target_prefixed = architecture != "XLMModel"

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
        encoder_paths = {r.flax_path for r in model_rules("XLMModel", config)}

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
                target = targets[rule.flax_path]
                per_layer = target.shape[1:] if rule.n_layers else target.shape
                expected = rule.layout.torch_shape(tuple(per_layer))
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
            CheckpointError: naming every offending tensor, so that one run shows everything to fix.
        """
        problems = []
        missing = self.missing_encoder + ([] if missing_ok else self.missing_new)
        if missing:
            problems.append(f"missing tensors: {', '.join(missing)}")
        if self.unused and not unused_ok:
            problems.append(f"unexpected tensors: {', '.join(self.unused)}")
        if self.mismatched:
            problems.append(f"wrong shapes for the config: {'; '.join(self.mismatched)}")
        if problems:
            raise CheckpointError(f"{self.source.description} does not fit the model: {' | '.join(problems)}")

    def read(self, path: str, per_layer_shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """Reads and converts the tensor(s) of target `path` into one array of the target dtype.

        Args:
            path: Flat Flax path of the target parameter.
            per_layer_shape: Target shape of one layer (the whole shape for unstacked tensors).
            dtype: Target dtype.
        """
        rule, names = self.found[path]
        if rule is None:
            return self.source.read(names[0]).astype(dtype, copy=False)
        if not rule.n_layers:
            return rule.layout.to_flax(self.source.read(names[0])).astype(dtype, copy=False)
        out = np.empty((len(names), *per_layer_shape), dtype=dtype)
        for i, name in enumerate(names):
            out[i] = rule.layout.to_flax(self.source.read(name))
        return out


def _strip(path: str, prefixed: bool) -> str:
    return path.removeprefix(ENCODER_PREFIX) if prefixed else path


# ------------------------------------------------------------------------------------------------------ loading


def default_placer(path: str, value: np.ndarray) -> jax.Array:
    """Puts a host array on the default device.

    Args:
        path: Flat parameter path (unused).
        value: The host array.
    """
    del path
    return jax.device_put(value)


def load_pretrained(
    cls: type,
    path_or_hub_id: str | os.PathLike,
    *,
    dtype: Any = jnp.float32,
    param_dtype: Any = None,
    placer: Placer | None = None,
    mesh: jax.sharding.Mesh | None = None,
    rules: Any = None,
    strict: bool = False,
    seed: int = 0,
    config: XLMConfig | None = None,
    **model_kwargs: Any,
) -> nnx.Module:
    """Loads a model of class `cls` from a native or transformers checkpoint directory or hub id.

    Args:
        cls: The model class (`XLMModel`, `XLMWithLMHeadModel`, or a head model).
        path_or_hub_id: Local directory or hub id.
        dtype: Compute dtype.
        param_dtype: Storage dtype of the parameters; None keeps the checkpoint's (float32 for transformers files).
        placer: Places each converted host array (e.g. with a sharding); defaults to the default device.
        mesh: Load the parameters sharded over this mesh (`xlm_flax.make_mesh`): each tensor goes straight into its
            `NamedSharding` as it is read, so no device ever holds a whole sharded weight. Not with `placer`.
        rules: Overrides of `xlm_flax.parallel.DEFAULT_RULES` for `mesh`.
        strict: Refuse checkpoints that lack some of the model's tensors instead of initialising them fresh.
        seed: Seed for tensors that are initialised fresh (a head on top of a base checkpoint).
        config: Use this config instead of the checkpoint's, e.g. with another `num_labels` for a fresh head.
        **model_kwargs: Further constructor arguments (`scan_layers`, `remat`).

    Returns:
        The model, its parameters on device. Tensors that were initialised fresh and checkpoint tensors the model
        does not use are logged as warnings.

    Raises:
        MissingFileError, CheckpointError, ConfigError: on bad or incomplete checkpoints.
    """
    if mesh is not None and placer is not None:
        raise InputError("give either mesh= (parameters sharded by the rules) or placer=, not both")
    config = XLMConfig.from_pretrained(path_or_hub_id) if config is None else config
    source = open_weights(path_or_hub_id)
    try:
        return _load_into(
            cls,
            config,
            source,
            dtype=dtype,
            param_dtype=param_dtype,
            placer=placer or default_placer,
            mesh=mesh,
            rules=rules,
            strict=strict,
            seed=seed,
            name_or_path=os.fspath(path_or_hub_id),
            **model_kwargs,
        )
    finally:
        source.close()


def _load_into(
    cls, config, source, *, dtype, param_dtype, placer, mesh, rules, strict, seed, name_or_path, **model_kwargs
) -> nnx.Module:
    if param_dtype is None:
        param_dtype = _checkpoint_param_dtype(source)
    model_kwargs = dict(dtype=dtype, param_dtype=param_dtype, **model_kwargs)
    abstract = abstract_model(cls, config, **model_kwargs)
    graphdef, abstract_state = nnx.split(abstract)
    if mesh is not None:
        from xlm_flax.parallel import sharded_placer

        placer = sharded_placer(abstract_state, mesh, rules)
    flat = list(nnx.to_flat_state(abstract_state))
    targets = {_flax_name(path): variable for path, variable in flat}
    plan = LoadPlan(source, cls.architecture, config, targets)
    plan.check(missing_ok=not strict, unused_ok=True)
    if plan.missing_new:
        logger.warning(
            "%s: initialised fresh (not in the checkpoint; train them before use): %s",
            cls.__name__,
            ", ".join(plan.missing_new),
        )
    if plan.unused:
        logger.warning("%s: checkpoint tensors not used by this model: %s", cls.__name__, ", ".join(plan.unused))
    fresh = _init_subset(cls, config, model_kwargs, plan.missing_new, seed) if plan.missing_new else {}

    values = []
    for path, variable in flat:
        name = _flax_name(path)
        if name in fresh:
            array = placer(name, np.asarray(fresh.pop(name)))
        else:
            rule = plan.found[name][0]
            per_layer = variable.shape[1:] if rule is not None and rule.n_layers else variable.shape
            host = plan.read(name, tuple(per_layer), np.dtype(variable.dtype))
            array = placer(name, host)
            del host  # drop the host copy before reading the next tensor
        values.append((path, variable.replace(value=array)))
    model = nnx.merge(graphdef, nnx.from_flat_state(values))
    model.name_or_path = name_or_path
    model.fresh_parameters = tuple(plan.missing_new)
    return model


def _checkpoint_param_dtype(source: TensorSource) -> np.dtype:
    """The floating dtype the checkpoint stores its parameters in (float32 when it cannot tell)."""
    for name in source.names():
        if name.endswith(("embeddings.weight", "embeddings.embedding")):
            return np.dtype(source.dtype(name))
    return np.dtype(np.float32)


def _init_subset(cls, config, model_kwargs, paths: list[str], seed: int) -> dict[str, jax.Array]:
    """Initialises only the parameters at `paths`: the jitted constructor returns just those, and XLA drops the
    initialisers of everything else, so nothing else is materialised."""
    wanted = set(paths)

    def init():
        state = nnx.state(cls(config, rngs=nnx.Rngs(seed), **model_kwargs), nnx.Param)
        return {_flax_name(p): v[...] for p, v in nnx.to_flat_state(state) if _flax_name(p) in wanted}

    return jax.jit(init)()


# ------------------------------------------------------------------------------------------------------- saving


def check_destination(destination: str | os.PathLike, *, force: bool = False) -> str:
    """Checks that `destination` can be written as a new directory; returns its absolute path.

    Called before long work (a conversion) so that a bad output path fails at once, and again by
    `atomic_directory`.

    Args:
        destination: The output directory.
        force: Accept a non-empty directory (it will be replaced).

    Raises:
        InputError: if `destination` is a file, or a non-empty directory without `force`.
    """
    destination = os.path.abspath(os.fspath(destination))
    if os.path.isfile(destination):
        raise InputError(f"{destination} is a file; give a directory path for the output")
    if os.path.isdir(destination) and os.listdir(destination) and not force:
        raise InputError(f"{destination} exists and is not empty; choose another path or pass --force to replace it")
    return destination


@contextlib.contextmanager
def atomic_directory(destination: str | os.PathLike, *, force: bool = False, merge: bool = False) -> Iterator[str]:
    """Yields a temporary directory whose contents land in `destination` only when the block succeeds.

    On failure the temporary directory is removed and `destination` is untouched.

    Args:
        destination: The directory to produce.
        force: Replace an existing non-empty `destination` (only once the new one is complete).
        merge: Keep an existing `destination` and move each new file into it (each move is atomic), leaving files
            that were not rewritten in place; used by `save_pretrained`, whose directory may hold other files.

    Raises:
        InputError: if `destination` is a file, or a non-empty directory without `force` or `merge`.
    """
    destination = check_destination(destination, force=force or merge)
    exists = os.path.isdir(destination)
    parent = os.path.dirname(destination)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(destination)}.tmp-", dir=parent)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if merge and exists:
        for name in os.listdir(tmp):
            os.replace(os.path.join(tmp, name), os.path.join(destination, name))
        os.rmdir(tmp)
        return
    old = None
    if exists:
        old = tempfile.mkdtemp(prefix=f".{os.path.basename(destination)}.old-", dir=parent)
        os.rename(destination, os.path.join(old, "previous"))
    os.rename(tmp, destination)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_config(directory: str, config: XLMConfig, architecture: str, dtype: np.dtype | None = None) -> None:
    """Writes `config.json` for `architecture`, recording the storage `dtype` as transformers does."""
    config = config.replace(architectures=(architecture,))
    data = config.to_dict()
    if dtype is not None:
        data["dtype"] = np.dtype(dtype).name
    with open(os.path.join(directory, CONFIG_NAME), "w", encoding="utf-8") as f:
        f.write(json.dumps(data, indent=2, sort_keys=True) + "\n")


def copy_tokenizer_files(source: str | os.PathLike | None, directory: str) -> list[str]:
    """Copies the tokenizer files that `source` (a directory or hub id) has into `directory`; returns their names.

    Args:
        source: A directory or hub id; None copies nothing.
        directory: Where to copy them.
    """
    if source is None:
        return []
    copied = []
    for filename in TOKENIZER_FILES:
        try:
            path = resolve_file(source, filename, required=False)
        except MissingFileError:
            return copied
        if path is not None and not os.path.exists(os.path.join(directory, filename)):
            shutil.copyfile(path, os.path.join(directory, filename))
            copied.append(filename)
    return copied


def _param_arrays(model: nnx.Module) -> dict[str, jax.Array]:
    state = nnx.state(model, nnx.Param)
    return {_flax_name(path): variable[...] for path, variable in nnx.to_flat_state(state)}


def _to_host(array: jax.Array) -> np.ndarray:
    """Brings a (possibly sharded, possibly multi-host) array to this host as NumPy."""
    if not array.is_fully_addressable:
        from jax.experimental import multihost_utils

        array = multihost_utils.process_allgather(array, tiled=True)
    return np.asarray(array)


def save_pretrained(
    model: nnx.Module,
    directory: str | os.PathLike,
    *,
    format: str = "flax",
    dtype: Any = None,
    tokenizer_source: str | os.PathLike | None = None,
) -> str:
    """Writes `config.json` and `model.safetensors` (and tokenizer files, when known) to `directory`.

    Args:
        model: Any model of this package.
        directory: Output directory, created if needed. Files are written in a temporary directory and moved in
            one by one, so a failure leaves no half-written file; other files already in `directory` stay.
        format: `"flax"` (native flat parameter paths, loadable without torch) or `"pytorch"` (transformers'
            tensor names, loadable with `transformers.<Architecture>.from_pretrained`).
        dtype: Storage dtype to write (e.g. `"bfloat16"`); defaults to the parameters' own.
        tokenizer_source: Directory or hub id to copy tokenizer files from; defaults to where the model was loaded.

    Returns:
        The directory written.
    """
    if format not in ("flax", "pytorch"):
        raise InputError(f"format={format!r}: use 'flax' or 'pytorch'")
    config: XLMConfig = model.config
    architecture = model.architecture
    arrays = _param_arrays(model)
    out_dtype = _first_dtype(arrays) if dtype is None else np.dtype(dtype)

    if format == "flax":
        specs = [(name, a.shape, out_dtype) for name, a in arrays.items()]

        def produce(name: str) -> np.ndarray:
            return _to_host(arrays[name]).astype(out_dtype, copy=False)

        metadata = NATIVE_METADATA
    else:
        by_torch: dict[str, tuple[Rule, int]] = {}
        for rule in model_rules(architecture, config):
            for i, torch_name in enumerate(rule.torch_names):
                by_torch[torch_name] = (rule, i)
        specs = []
        for torch_name, (rule, _) in by_torch.items():
            a = arrays[rule.flax_path]
            per_layer = a.shape[1:] if rule.n_layers else a.shape
            specs.append((torch_name, rule.layout.torch_shape(tuple(per_layer)), out_dtype))

        def produce(name: str) -> np.ndarray:
            rule, i = by_torch[name]
            a = arrays[rule.flax_path]
            host = _to_host(a[i] if rule.n_layers else a)
            return np.ascontiguousarray(rule.layout.to_torch(host)).astype(out_dtype, copy=False)

        metadata = {"format": "pt"}
    if jax.process_index() != 0:
        for name, _, _ in specs:
            produce(name)  # every process takes part in gathering sharded arrays; only process 0 writes
        return os.fspath(directory)
    source = tokenizer_source if tokenizer_source is not None else getattr(model, "name_or_path", None)
    with atomic_directory(directory, merge=True) as tmp:
        write_safetensors(os.path.join(tmp, WEIGHTS_NAME), specs, produce, metadata)
        copy_tokenizer_files(source, tmp)
        write_config(tmp, config, architecture, out_dtype)
    return os.fspath(directory)


def _first_dtype(arrays: dict[str, jax.Array]) -> np.dtype:
    return np.dtype(next(iter(arrays.values())).dtype)


__all__ = [
    "LoadPlan",
    "SafetensorsSource",
    "TensorSource",
    "TorchFileSource",
    "abstract_model",
    "atomic_directory",
    "check_destination",
    "copy_tokenizer_files",
    "default_placer",
    "load_pretrained",
    "open_weights",
    "save_pretrained",
]
