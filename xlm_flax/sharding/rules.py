"""Logical-axis rules: the short table that maps parameter and batch axis names to mesh axes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

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

    Only the names given change: `{"vocab": None}` keeps the vocabulary whole and leaves every other default.

    Args:
        rules: A mapping or a sequence of `(logical_name, mesh_axis)` pairs; a mesh axis of None replicates.

    Returns:
        The complete table.

    Raises:
        InputError: when an entry is not a (name, axis) pair or names an axis other than `data`, `model` or None.
    """
    table = dict(DEFAULT_RULES)
    if rules is None:
        return table
    pairs = rules.items() if isinstance(rules, Mapping) else rules
    for pair in pairs:
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and isinstance(pair[0], str)):
            raise InputError(f"rules: {pair!r} is not a (logical_name, mesh_axis) pair, e.g. ('vocab', None)")
        name, axis = pair
        if axis not in (DATA, MODEL, None):
            raise InputError(f"rules: {name!r} -> {axis!r}; the mesh axes are {DATA!r} and {MODEL!r} (or None)")
        table[name] = axis
    return table


def logical_to_spec(axes: Sequence[str | None], rules: Rules | None = None, mesh: Mesh | None = None) -> PartitionSpec:
    """The `PartitionSpec` of an array whose dimensions have the logical names `axes`.

    A mesh axis is used at most once per array (the first dimension that asks for it gets it), and, when `mesh` is
    given, mesh axes of size 1 are dropped so that the spec stays valid on any mesh.

    Args:
        axes: One logical name (or None) per dimension.
        rules: Overrides of `DEFAULT_RULES` (see `resolve_rules`).
        mesh: The mesh the spec is for.

    Returns:
        One mesh axis (or None) per dimension.
    """
    table = resolve_rules(rules)
    used: set[str] = set()
    spec = []
    for name in axes:
        target = table.get(name) if name is not None else None
        if target is not None and (target in used or (mesh is not None and mesh.shape.get(target, 1) == 1)):
            target = None
        if target is not None:
            used.add(target)
        spec.append(target)
    return PartitionSpec(*spec)


def _divisible_spec(spec: PartitionSpec, shape: Sequence[int], mesh: Mesh) -> PartitionSpec:
    """Replicates the dimensions that the mesh axis does not divide (e.g. a vocabulary of 30145 over 2 shards)."""
    return PartitionSpec(
        *(axis if axis is None or size % mesh.shape[axis] == 0 else None for axis, size in zip(spec, shape))
    )


__all__ = ["DATA", "DEFAULT_RULES", "MODEL", "Rules", "logical_to_spec", "resolve_rules"]
