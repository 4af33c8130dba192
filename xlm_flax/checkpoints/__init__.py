"""Checkpoints: everything between files on disk (or the hub) and a model in memory.

* `names`: the rules of the one table between transformers' PyTorch tensor names and our parameter paths.
* `registry`: architecture name -> model class and its rules, in one explicit table.
* `safetensors_io`, `sources`: reading tensors (safetensors, torch `.bin`, arrays in memory) whole or by slices;
  the streaming writer.
* `hub`: finding files in a local directory or the Hugging Face hub cache, the hub's arguments, `push_to_hub`.
* `plan`, `load`: checking a source against a model and loading it (optionally sharded).
* `save`, `export`: writing native and transformers directories (one exporter, `export.torch_tensors`);
  `convert`: transformers -> native on disk; `report`: what a conversion or an export wrote.
* `original`: facebookresearch/XLM `.pth` checkpoints; `verify`: comparison with PyTorch.
* `files`: file names, atomic directory writes, `config.json` and tokenizer files.
"""

from xlm_flax._lazy import lazy_namespace

__getattr__, __dir__ = lazy_namespace(
    __name__,
    {
        "ARCHITECTURES": ".registry",
        "MODEL_CLASSES": ".registry",
        "architecture_of": ".registry",
        "model_class": ".registry",
        "model_rules": ".registry",
        "open_weights": ".sources",
        "HubOptions": ".hub",
        "push_to_hub": ".hub",
        "load_pretrained": ".load",
        "save_pretrained": ".save",
        "convert_checkpoint": ".convert",
        "export_checkpoint": ".export",
        "convert_original": ".original",
        "CheckpointReport": ".report",
        "TensorMismatchError": ".plan",
        "check_against_transformers": ".verify",
    },
)
