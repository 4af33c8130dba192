"""The `xlm-flax` command line: `main` (the parser and dispatch), one module per command group (`checkpoints`:
convert and export; `inference`: fill-mask and embed; `info`; `demo`; `train`), and what they share (`common`)."""

from xlm_flax._lazy import lazy_namespace

__getattr__, __dir__ = lazy_namespace(__name__, {"main": ".main"})
