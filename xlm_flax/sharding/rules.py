"""Logical-axis rules: the short table that maps parameter and batch axis names to mesh axes.

Parameters carry their logical names as Flax's own partitioning metadata (`nnx.get_partition_spec` reads them), and
the names are resolved with Flax's rule machinery: `logical_to_spec` uses `flax.linen.logical_to_mesh_axes`, and
`flax_rules` gives the table as the pairs that `nnx.logical_axis_rules` takes, for code written MaxText-style::

    with nnx.logical_axis_rules(flax_rules()):
        shardings = nnx.get_named_sharding(nnx.state(model), mesh)

On top of Flax's resolution, `logical_to_spec` drops mesh axes of size 1 and `_divisible_spec` leaves unsharded the
dimensions that their mesh axis does not divide, so the same rules fit any mesh and any model size.
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


def resolve_rules(rules: Rules | None = None) -> dict[str, str | None]:
    """`DEFAULT_RULES` with `rules` laid over them.

    Only the names given change: `{"vocab": None}` keeps the vocabulary whole and leaves every other default. The
    names given come first in the table: where two dimensions of one array ask for the same mesh axis, the earlier
    rule gets it (Flax's precedence), so e.g. `{"embed": "model"}` shards the embedding dimension of the attention
    kernels instead of their heads.

    Args:
        rules: A mapping or a sequence of `(logical_name, mesh_axis)` pairs; a mesh axis of None replicates.

    Returns:
        The complete table, in order of precedence.

    Raises:
        InputError: when an entry is not a (name, axis) pair or names an axis other than `data`, `model` or None.
    """
    if rules is None:
        return dict(DEFAULT_RULES)
    if not isinstance(rules, (Mapping, list, tuple)):
        raise InputError(f"rules: {rules!r}; give a mapping {{name: mesh_axis}} or (name, mesh_axis) pairs")
    given: dict[str, str | None] = {}
    pairs = rules.items() if isinstance(rules, Mapping) else rules
    for pair in pairs:
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and isinstance(pair[0], str)):
            raise InputError(f"rules: {pair!r} is not a (logical_name, mesh_axis) pair, e.g. ('vocab', None)")
        name, axis = pair
        if axis not in (DATA, MODEL, None):
            raise InputError(f"rules: {name!r} -> {axis!r}; the mesh axes are {DATA!r} and {MODEL!r} (or None)")
        given[name] = axis
    return {**given, **{name: axis for name, axis in DEFAULT_RULES.items() if name not in given}}


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
    table = flax_rules(rules)
    if mesh is not None:
        table = tuple((name, None if axis is None or mesh.shape.get(axis, 1) == 1 else axis) for name, axis in table)
    return logical_to_mesh_axes(tuple(axes), table)


def _divisible_spec(spec: PartitionSpec, shape: Sequence[int], mesh: Mesh) -> PartitionSpec:
    """Replicates the dimensions that the mesh axis does not divide (e.g. a vocabulary of 30145 over 2 shards)."""
    return PartitionSpec(
        *(axis if axis is None or size % mesh.shape[axis] == 0 else None for axis, size in zip(spec, shape))
    )


__all__ = ["DATA", "DEFAULT_RULES", "MODEL", "Rules", "flax_rules", "logical_to_spec", "resolve_rules"]
