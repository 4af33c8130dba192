"""Exceptions raised for bad input. Each message names the problem and how to fix it."""

from __future__ import annotations


class XLMFlaxError(Exception):
    """Base class of the errors this package raises on bad input; the command line turns them into exit code 2."""


class ConfigError(XLMFlaxError, ValueError):
    """A config that cannot be read, or that describes a model this port cannot run."""


class CheckpointError(XLMFlaxError, ValueError):
    """A checkpoint with missing, unexpected or mis-shaped tensors, or one that cannot be read."""


class MissingFileError(XLMFlaxError, FileNotFoundError):
    """A model directory or hub repository lacks a file that is needed."""


class InputError(XLMFlaxError, ValueError):
    """Input data (texts, token ids, languages) that the model cannot take."""


class DependencyError(XLMFlaxError, ImportError):
    """An optional package (e.g. torch) that the requested operation needs is not installed."""


__all__ = ["CheckpointError", "ConfigError", "DependencyError", "InputError", "MissingFileError", "XLMFlaxError"]
