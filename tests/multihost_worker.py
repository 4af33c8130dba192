"""One process of the multi-process test (tests/test_distributed.py): joins the run, loads the checkpoint sharded,
feeds its own rows of the batch, runs the sharded forward pass on several meshes and writes what it gathered.

Usage: python tests/multihost_worker.py PORT NUM_PROCESSES PROCESS_ID CHECKPOINT INPUTS.npz OUT_DIR MESH...
where each MESH is `DATAxMODEL`, e.g. 4x1 2x2 1x4.
"""

from __future__ import annotations

import os
import sys

os.environ["JAX_PLATFORMS"] = "cpu"

import numpy as np  # noqa: E402


def main(argv: list[str]) -> None:
    port, n_processes, process_id, checkpoint, inputs_path, out_dir, *meshes = argv
    from xlm_flax import XLMWithLMHeadModel, distributed, make_mesh
    from xlm_flax.sharding.forward import sharded_forward

    info = distributed.initialize(
        f"127.0.0.1:{port}", int(n_processes), int(process_id), initialization_timeout=60, shutdown_timeout_seconds=30
    )
    assert info.process_count == int(n_processes), info
    inputs = dict(np.load(inputs_path))
    batch = len(inputs["input_ids"])
    for spec in meshes:
        data, model = (int(x) for x in spec.split("x"))
        mesh = make_mesh(data, model)
        lm = XLMWithLMHeadModel.from_pretrained(checkpoint, mesh=mesh)
        rows = distributed.process_rows(batch, mesh)
        local = {name: value[rows] for name, value in inputs.items()}
        global_inputs = distributed.global_batch(local, mesh, batch)
        out = sharded_forward(lm, mesh)(**global_inputs, batch_size=batch, output_hidden_states=True)
        logits, hidden = distributed.gather((out.logits, out.hidden_states), batch)
        kernel = lm.transformer.ffns.lin1.kernel[...]
        shard_shapes = np.array([s.data.shape for s in kernel.addressable_shards])
        np.savez(
            os.path.join(out_dir, f"{spec}-{info.process_index}.npz"),
            logits=logits,
            hidden=np.stack(hidden),
            rows=np.array([rows.start, rows.stop]),
            shard_shapes=shard_shapes,
        )
    distributed.sync("done")


if __name__ == "__main__":
    main(sys.argv[1:])
