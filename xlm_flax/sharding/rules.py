"""Logical-axis rules: the short table that maps parameter and batch axis names to mesh axes.

Parameters carry their logical names as Flax's own partitioning metadata (`nnx.get_partition_spec` reads them), and
the names are resolved with Flax's rule machinery: `logical_to_spec` uses `flax.linen.logical_to_mesh_axes`, and
`flax_rules` gives the table as the pairs that `nnx.logical_axis_rules` takes, for code written MaxText-style::

    with nnx.logical_axis_rules(flax_rules()):
        shardings = nnx.get_named_sharding(nnx.state(model), mesh)

Rules may name any mesh axis (`axis_rules(data="dp", model="tp")` for a mesh of the user's own), and a mesh the rules
cannot use is an error. On top of Flax's resolution, `logical_to_spec` drops mesh axes of size 1 and `_divisible_spec`
leaves unsharded the dimensions that their mesh axis does not divide, so the same rules fit any mesh and model size.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from flax.linen import logical_to_mesh_axes
from jax.sharding import Mesh, PartitionSpec

from xlm_flax.errors import InputError

DATA = "data"


MODEL = "model"


# A rules table: a mapping, or a sequence of (logical name, mesh axis or None) pairs as MaxText and Flax write them.
Rules = Mapping[str, str | None] | Sequence[tuple[str, str | None]]


# Logical axis name -> mesh axis (None: replicated). Batch goes over `data`; the wide dimensions of the weights
# (attention heads, the FFN's hidden units, the vocabulary) over `model`; the embedding dimension stays whole so that
# LayerNorm and the residual stream need no collectives.
DEFAULT_RULES: Mapping[str, str | None] = {
    "batch": DATA,
    "heads": MODEL,
    "mlp": MODEL,
    "vocab": MODEL,
    "embed": None,
    "head_dim": None,
    "layers": None,
    "position": None,
    "lang": None,
    "length": None,
}


def axis_rules(data: str | None = DATA, model: str | None = MODEL) -> dict[str, str | None]:
    """The rules for a mesh whose two axes have other names than `data` and `model`.

    `axis_rules(data="dp", model="tp")` is `{"batch": "dp", "heads": "tp", "mlp": "tp", "vocab": "tp"}`: the batch
    over `data`, the wide weight dimensions over `model`, as `DEFAULT_RULES` does for a mesh from `make_mesh`.

    Args:
        data: The mesh axis the batch is split over (None: the batch is replicated).
        model: The mesh axis the attention heads, FFN units and vocabulary are split over (None: weights replicated).

    Returns:
        A rules table to pass as `rules=` wherever it is taken.
    """
    return {"batch": data, "heads": model, "mlp": model, "vocab": model}


def resolve_rules(rules: Rules | None = None, mesh: Mesh | None = None) -> dict[str, str | None]:
    """`DEFAULT_RULES` with `rules` laid over them, checked against `mesh` when one is given.

    Only the names given change: `{"vocab": None}` keeps the vocabulary whole and leaves every other default. The
    names given come first in the table: where two dimensions of one array ask for the same mesh axis, the earlier
    rule gets it (Flax's precedence), so e.g. `{"embed": "model"}` shards the embedding dimension of the attention
    kernels instead of their heads.

    Rules may name any mesh axis. With `mesh`, rules naming an axis the mesh does not have are dropped (a 1-D
    `("data",)` mesh just replicates the weights) unless that leaves a mesh axis of more than one device unused, which
    means that the rules were written for other axis names (`("dp", "tp")` with the default `data`/`model` rules):
    that is an error saying which rules to pass, never a silently replicated model.

    Args:
        rules: A mapping or a sequence of `(logical_name, mesh_axis)` pairs; a mesh axis of None replicates.
        mesh: The mesh the rules are for.

    Returns:
        The complete table, in order of precedence.

    Raises:
        InputError: when an entry is not a (name, axis) pair, or the rules do not fit the mesh's axes.
    """
    if rules is None:
        table = dict(DEFAULT_RULES)
    else:
        if not isinstance(rules, (Mapping, list, tuple)):
            raise InputError(f"rules: {rules!r}; give a mapping {{name: mesh_axis}} or (name, mesh_axis) pairs")
        given: dict[str, str | None] = {}
        pairs = rules.items() if isinstance(rules, Mapping) else rules
        for pair in pairs:
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and isinstance(pair[0], str)):
                raise InputError(f"rules: {pair!r} is not a (logical_name, mesh_axis) pair, e.g. ('vocab', None)")
            name, axis = pair
            if axis is not None and not isinstance(axis, str):
                raise InputError(f"rules: {name!r} -> {axis!r}; a mesh axis is an axis name (a string) or None")
            given[name] = axis
        table = {**given, **{name: axis for name, axis in DEFAULT_RULES.items() if name not in given}}
    if mesh is not None:
        _check_fits(table, mesh)
    return table


def _check_fits(table: Mapping[str, str | None], mesh: Mesh) -> None:
    """Raises when the rules name axes the mesh lacks while leaving some of its axes (of size > 1) unused."""
    names = tuple(mesh.axis_names)
    absent = {name: axis for name, axis in table.items() if axis is not None and axis not in names}
    used = {axis for axis in table.values() if axis in names}
    unused = [axis for axis in names if axis not in used and mesh.shape[axis] > 1]
    if absent and unused:
        wanted = sorted(set(absent.values()))
        if len(names) == 2:
            hint = f"rules=axis_rules(data={names[0]!r}, model={names[1]!r}), i.e. {axis_rules(*names)}"
        else:
            hint = "rules={logical name: mesh axis} naming the mesh's axes"
        raise InputError(
            f"the rules shard over mesh axes {wanted}, but the mesh has axes {dict(mesh.shape)}; pass {hint} "
            "(axis_rules is in xlm_flax.sharding), or build the mesh with xlm_flax.make_mesh"
        )


def batch_axis(mesh: Mesh, rules: Rules | None = None) -> str | None:
    """The mesh axis the batch is split over (the `batch` rule), or None when the batch is replicated.

    Args:
        mesh: The mesh.
        rules: Overrides of `DEFAULT_RULES`.

    Raises:
        InputError: when the rules do not fit the mesh (see `resolve_rules`).
    """
    axis = resolve_rules(rules, mesh)["batch"]
    return axis if axis in mesh.axis_names else None


def batch_multiple(mesh: Mesh | None, rules: Rules | None = None) -> int:
    """Number of devices the batch is split over: batches are padded to a multiple of it (1 without a mesh)."""
    if mesh is None:
        return 1
    axis = batch_axis(mesh, rules)
    return 1 if axis is None else int(mesh.shape[axis])


def flax_rules(rules: Rules | None = None) -> tuple[tuple[str, str | None], ...]:
    """The complete table (`resolve_rules`) as `(logical_name, mesh_axis)` pairs, in the form Flax's rule machinery
    takes (`nnx.logical_axis_rules`, `flax.linen.logical_to_mesh_axes`).

    Args:
        rules: Overrides of `DEFAULT_RULES`.
    """
    return tuple(resolve_rules(rules).items())


def logical_to_spec(axes: Sequence[str | None], rules: Rules | None = None, mesh: Mesh | None = None) -> PartitionSpec:
    """The `PartitionSpec` of an array whose dimensions have the logical names `axes`.

    Resolved by `flax.linen.logical_to_mesh_axes`: a mesh axis is used at most once per array (rules earlier in the
    table take precedence) and names without a rule stay unsharded. When `mesh` is given, rules to mesh axes of size 1
    are dropped first, so that the spec stays valid on any mesh.

    Args:
        axes: One logical name (or None) per dimension.
        rules: Overrides of `DEFAULT_RULES` (see `resolve_rules`).
        mesh: The mesh the spec is for.

    Returns:
        One mesh axis (or None) per dimension.
    """
    table = tuple(resolve_rules(rules, mesh).items())
    if mesh is not None:
        # Rules to axes the mesh lacks (resolve_rules has checked that this leaves no mesh axis idle) or of size 1.
        table = tuple(
            (name, axis if axis in mesh.axis_names and mesh.shape[axis] > 1 else None) for name, axis in table
        )
    return logical_to_mesh_axes(tuple(axes), table)


def _divisible_spec(spec: PartitionSpec, shape: Sequence[int], mesh: Mesh) -> PartitionSpec:
    """Replicates the dimensions that the mesh axis does not divide (e.g. a vocabulary of 30145 over 2 shards)."""
    return PartitionSpec(
        *(axis if axis is None or size % mesh.shape[axis] == 0 else None for axis, size in zip(spec, shape))
    )


__all__ = [
    "DATA",
    "DEFAULT_RULES",
    "MODEL",
    "Rules",
    "axis_rules",
    "batch_axis",
    "batch_multiple",
    "flax_rules",
    "logical_to_spec",
    "resolve_rules",
]
