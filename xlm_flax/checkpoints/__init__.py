"""Checkpoints: everything between files on disk (or the hub) and a model in memory.

* `names`: the one table between transformers' PyTorch tensor names and our parameter paths.
* `registry`: architecture name -> model class.
* `safetensors_io`, `sources`: reading tensors (safetensors, torch `.bin`) one at a time; the streaming writer.
* `hub`: finding files in a local directory or the Hugging Face hub cache.
* `plan`, `load`: checking a source against a model and loading it (optionally sharded).
* `save`, `export`: writing native and transformers directories; `convert`: transformers -> native on disk.
* `original`: facebookresearch/XLM `.pth` checkpoints; `verify`: comparison with PyTorch.
* `files`: file names, atomic directory writes, `config.json` and tokenizer files.
"""

from xlm_flax._lazy import lazy_namespace

__getattr__, __dir__ = lazy_namespace(
    __name__,
    {
        "MODEL_CLASSES": ".registry",
        "model_class": ".registry",
        "model_rules": ".names",
        "open_weights": ".sources",
        "load_pretrained": ".load",
        "save_pretrained": ".save",
        "convert_checkpoint": ".convert",
        "export_checkpoint": ".export",
        "convert_original": ".original",
        "check_against_transformers": ".verify",
    },
)
