"""The command line's conventions, run in-process through `main` (no new Python per case): options among the
positionals, help with descriptions and defaults everywhere, `--json` on info / convert / export, `embed --output -`,
the exit codes (2 bad input, 70 internal failure) with one line on stderr, and `--debug`."""

from __future__ import annotations

import argparse
import json
import shutil

import numpy as np
import pytest
from helpers import build_checkpoint, build_test_tokenizer, requires

from xlm_flax import Embedder, FillMask
from xlm_flax.checkpoints.convert import convert_checkpoint
from xlm_flax.cli.common import HelpFormatter
from xlm_flax.cli.main import COMMANDS, _subcommands, build_parser, main, parse_arguments

MASK = "<special1>"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A native checkpoint with its tokenizer files, as `xlm-flax convert` writes."""
    source = tmp_path_factory.mktemp("src")
    vocab_size = build_test_tokenizer(source, model_max_length=24)
    build_checkpoint(source, vocab_size=vocab_size, max_position_embeddings=24)
    destination = tmp_path_factory.mktemp("native") / "model"
    convert_checkpoint(source, destination)
    return str(destination)


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_options_between_positionals(model_dir, capsys):
    assert main(["fill-mask", model_dir, "--top-k", "2", f"the {MASK} sat"]) == 0
    out = capsys.readouterr().out.splitlines()
    expected = FillMask.from_pretrained(model_dir)([f"the {MASK} sat"], top_k=2)[0]
    assert out[0] == f"the {MASK} sat" and len(out) == 3
    assert [line.split()[1] for line in out[1:]] == [c["token_str"] for c in expected]
    # options before, between and after several texts, and a top-level flag before the command
    texts = [f"a {MASK} .", f"the {MASK} sat"]
    assert (
        main(["--debug", "fill-mask", "--json", model_dir, texts[0], "--top-k", "1", texts[1], "--batch-size=4"]) == 0
    )
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["input"] for r in rows] == texts and all(len(r["predictions"]) == 1 for r in rows)
    args = parse_arguments(build_parser(), ["train", "M", "--steps", "3", "T", "--no-progress", "O"])
    assert (args.model, args.train_file, args.output_dir, args.steps, args.no_progress) == ("M", "T", "O", 3, True)


def test_every_command_and_flag_has_help_and_defaults(capsys):
    parser = build_parser()
    commands = _subcommands(parser)
    assert set(commands) == set(COMMANDS)
    for name, command in commands.items():
        assert command.description, name
        for action in command._actions:
            assert action.help, (name, action.dest)
            shown = HelpFormatter(name)._get_help_string(action)
            if action.option_strings and action.default not in (None, False, argparse.SUPPRESS):
                assert "default" in shown, (name, action.dest)
    with pytest.raises(SystemExit) as exit_:
        main(["info", "--help"])
    assert exit_.value.code == 0
    help_text = capsys.readouterr().out
    assert "Describe a checkpoint" in help_text and "--json" in help_text
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "(default: 1000)" in capsys.readouterr().out


def test_json_on_info_convert_and_export(model_dir, tmp_path, capsys):
    assert main(["info", model_dir, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["architecture"] == "XLMWithLMHeadModel" and info["weights"] == "native"
    assert info["config"]["n_layers"] == 3 and info["config"]["emb_dim"] == 30
    assert info["tokenizer"]["mask_token"] == MASK and info["devices"]["platform"] == "cpu"
    assert main(["export", "--json", model_dir, str(tmp_path / "pt")]) == 0
    exported = json.loads(capsys.readouterr().out)
    assert exported["format"] == "pytorch" and exported["architecture"] == "XLMWithLMHeadModel"
    assert exported["destination"] == str(tmp_path / "pt") and "vocab.json" in exported["tokenizer_files"]
    assert main(["convert", str(tmp_path / "pt"), str(tmp_path / "native"), "--json"]) == 0
    converted = json.loads(capsys.readouterr().out)
    assert converted["format"] == "flax" and converted["n_parameters"] == exported["n_parameters"]


def test_info_takes_the_architecture_as_the_loaders_do(model_dir, tmp_path, capsys):
    """No `architectures` entry: the tensor names decide (the LM head's); an entry this package lacks: exit 2."""
    for architectures, expected in ((None, "XLMWithLMHeadModel"), (["XLMForMultipleChoiceX"], None)):
        copy = tmp_path / str(expected)
        shutil.copytree(model_dir, copy)
        config = json.loads((copy / "config.json").read_text())
        config.pop("architectures", None)
        if architectures:
            config["architectures"] = architectures
        (copy / "config.json").write_text(json.dumps(config))
        if expected:
            assert main(["info", str(copy), "--json"]) == 0
            assert json.loads(capsys.readouterr().out)["architecture"] == expected
        else:
            assert main(["info", str(copy)]) == 2
            assert "['XLMForMultipleChoiceX'] are not supported" in _one_line(capsys.readouterr().err)


def test_embed_to_stdout(model_dir, tmp_path, capsys):
    sentences = ["the cat sat .", "", "a dog"]
    (tmp_path / "in.txt").write_text("\n".join(sentences) + "\n")
    assert main(["embed", model_dir, "--input", str(tmp_path / "in.txt"), "--output", "-", "--normalize"]) == 0
    captured = capsys.readouterr()
    rows = np.array([json.loads(line) for line in captured.out.splitlines()], dtype=np.float32)
    expected = Embedder.from_pretrained(model_dir).encode(sentences, normalize_embeddings=True)
    np.testing.assert_array_equal(rows, expected)  # the float32 values exactly
    assert "3 x 30 float32" in _one_line(captured.err) and "stdout" in captured.err


def test_exit_codes(model_dir, tmp_path, capsys, monkeypatch):
    # bad usage and bad input: 2
    assert main(["fill-mask", model_dir, "--top-k"]) == 2
    assert "--top-k" in _one_line(capsys.readouterr().err)
    assert main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in _one_line(capsys.readouterr().err)
    assert main(["info", str(tmp_path / "missing")]) == 2
    assert "missing" in _one_line(capsys.readouterr().err)
    assert main(["embed", model_dir, "--input", "-", "--output", "x.txt"]) == 2
    assert ".npy, or - for JSON lines" in _one_line(capsys.readouterr().err)

    # an internal failure: 70, one line that says so; --debug shows the traceback
    def broken(args):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setitem(COMMANDS, "info", (COMMANDS["info"][0], broken))
    assert main(["info", model_dir]) == 70
    line = _one_line(capsys.readouterr().err)
    assert "internal error: ZeroDivisionError: division by zero" in line and "--debug" in line
    assert main(["info", model_dir, "--debug"]) == 70
    err = capsys.readouterr().err
    assert "Traceback" in err and "ZeroDivisionError" in err


@requires("sentence_transformers", "torch", reason="the round trip needs pip install sentence-transformers")
def test_export_sentence_transformers(model_dir, tmp_path, capsys):
    from sentence_transformers import SentenceTransformer

    destination = str(tmp_path / "st")
    assert main(["export", model_dir, destination, "--format", "sentence-transformers", "--pooling", "max"]) == 0
    assert "sentence-transformers model" in capsys.readouterr().out
    sentences = ["the cat sat .", "a dog"]
    (tmp_path / "in.txt").write_text("\n".join(sentences) + "\n")
    assert main(["embed", model_dir, "--pooling", "max", "--input", str(tmp_path / "in.txt"), "--output", "-"]) == 0
    ours = np.array([json.loads(line) for line in capsys.readouterr().out.splitlines()])
    theirs = SentenceTransformer(destination, device="cpu").encode(sentences)
    np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0)
    assert main(["export", model_dir, str(tmp_path / "pt"), "--normalize"]) == 2
    assert "sentence-transformers" in _one_line(capsys.readouterr().err)


def test_warnings_go_to_the_current_stderr(monkeypatch):
    """`main()` run again in one process (tests, notebooks) under another stderr still logs its warnings there, not
    into the stream of the first run (which may be closed: "--- Logging error ---")."""
    import io
    import logging
    import sys

    from xlm_flax.cli.common import configure_logging

    first = io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    configure_logging()
    first.close()
    second = io.StringIO()
    monkeypatch.setattr(sys, "stderr", second)
    configure_logging()
    logging.getLogger("xlm_flax.test").warning("a warning")
    assert second.getvalue() == "xlm-flax: WARNING: a warning\n"
