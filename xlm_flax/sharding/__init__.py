"""Sharding: how parameters and batches are laid out over a device mesh, and multi-host runs.

* `rules`: the logical-axis rules table (`DEFAULT_RULES`, `axis_rules` for other axis names) and its resolution.
* `mesh`: `make_mesh`, and `auto_mesh` (the Auto view of any mesh, on which the model runs).
* `placement`: parameter shardings, `shard_model`, sharded loading and initialisation.
* `batch`: batches padded to the data axis and split over it.
* `forward`: `sharded_forward` and `pmap_forward`.
* `multihost`: `jax.distributed` set-up, per-process rows, gathering (`xlm_flax.distributed`).
"""

from xlm_flax._lazy import lazy_namespace

__getattr__, __dir__ = lazy_namespace(
    __name__,
    {
        "DEFAULT_RULES": ".rules",
        "resolve_rules": ".rules",
        "axis_rules": ".rules",
        "make_mesh": ".mesh",
        "auto_mesh": ".mesh",
        "parameter_shardings": ".placement",
        "shard_model": ".placement",
        "init_sharded": ".placement",
        "shard_batch": ".batch",
        "sharded_forward": ".forward",
        "pmap_forward": ".forward",
    },
)
