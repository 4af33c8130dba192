"""Text generation (`xlm_flax.inference.generation`): transformers' scheme token for token against transformers'
`generate()` (greedy and beam, masked and causal models); the causal scheme with its key/value cache against
recomputing the whole causal forward at every step (our model and transformers' PyTorch model); sampling filters;
one compilation per prompt-length bucket; bad input; the command line."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import build_checkpoint, build_test_tokenizer, optional_import, requires_torch

from xlm_flax import XLMWithLMHeadModel
from xlm_flax.cli.main import main
from xlm_flax.errors import InputError
from xlm_flax.inference.generation import Generator, _generate_kernel

torch = optional_import("torch")

N_NEW = 5
WIDTH = 13  # max_position_embeddings of the tiny configs


@pytest.fixture(scope="module")
def masked(tmp_path_factory):
    return build_checkpoint(tmp_path_factory.mktemp("masked"), n_langs=3)


@pytest.fixture(scope="module")
def causal(tmp_path_factory):
    return build_checkpoint(tmp_path_factory.mktemp("causal"), n_langs=3, causal=True)


def _prompts(rows: int = 3, length: int = 4) -> np.ndarray:
    return np.random.default_rng(1).integers(4, 41, size=(rows, length))


# ------------------------------------------------------------------------------- transformers' scheme, exactly


@requires_torch
@pytest.mark.parametrize("which", ["masked", "causal"])
def test_transformers_mode_equals_transformers_generate(which, request):
    path, torch_model = request.getfixturevalue(which)
    model = XLMWithLMHeadModel.from_pretrained(path)
    ids = _prompts()
    plain = torch_model.generate(torch.tensor(ids), max_new_tokens=N_NEW, do_sample=False).numpy()
    # An end-of-sentence id that row 0 produces second: row 0 stops early, and a one-row batch stops the loop.
    eos = int(plain[0, ids.shape[1] + 1])
    for num_beams, prompt in ((1, ids), (3, ids), (1, ids[:1])):
        expected = torch_model.generate(
            torch.tensor(prompt), max_new_tokens=N_NEW, num_beams=num_beams, do_sample=False, eos_token_id=eos
        ).numpy()
        got = model.generate(prompt, max_new_tokens=N_NEW, mode="transformers", num_beams=num_beams, eos_token_id=eos)
        assert got.shape == expected.shape, (num_beams, prompt.shape)
        np.testing.assert_array_equal(got, expected)
    assert got.shape == (1, ids.shape[1] + 2)  # the one row stopped at its end of sentence: a shorter output


@requires_torch
def test_transformers_mode_ignores_given_languages(masked):
    path, torch_model = masked
    model = XLMWithLMHeadModel.from_pretrained(path)
    ids = _prompts(2)
    expected = torch_model.generate(torch.tensor(ids), max_new_tokens=3, do_sample=False).numpy()
    got = model.generate(ids, max_new_tokens=3, mode="transformers", langs=np.full_like(ids, 2))
    np.testing.assert_array_equal(got, expected)  # config.lang_id wins, as in transformers


# --------------------------------------------------------------------------------------- the causal scheme


def _recompute_greedy(forward, rows: list[list[int]], langs: list[int], n: int, eos: int, pad: int) -> np.ndarray:
    """Greedy decoding that runs the full causal forward over the whole sequence at every step, one row at a time.

    `forward(ids, langs)` gets `[1, WIDTH]` arrays, the sequence then padding: a causal model's logits at a position
    depend only on the tokens up to it (its mask is triangular), so one shape serves every step.
    """
    out = []
    for row, lang in zip(rows, langs, strict=True):
        seq, done, new = list(row), False, []
        for _ in range(n):
            ids = np.full((1, WIDTH), pad)
            ids[0, : len(seq)] = seq
            token = pad if done else int(np.argmax(forward(ids, np.full((1, WIDTH), lang))[0, len(seq) - 1]))
            new.append(token)
            seq.append(token)
            done = done or token == eos
        out.append(new)
    return np.array(out)


def _left_padded(rows: list[list[int]], pad: int) -> tuple[np.ndarray, np.ndarray]:
    width = max(map(len, rows))
    ids = np.full((len(rows), width), pad)
    mask = np.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :], mask[i, width - len(row) :] = row, 1
    return ids, mask


ROWS = [[7, 9], [11, 4, 30, 8], [5, 22, 17]]
LANGS = [0, 2, 1]


@pytest.mark.parametrize("layers", ["scan", "per_layer"])
def test_causal_mode_equals_recomputing_everything(causal, layers):
    path, _ = causal
    model = XLMWithLMHeadModel.from_pretrained(path, layers=layers)
    config = model.config
    ids, mask = _left_padded(ROWS, config.pad_index)
    langs = np.array(LANGS)[:, None] * np.ones_like(ids)
    got = model.generate(ids, max_new_tokens=N_NEW, attention_mask=mask, langs=langs)
    assert got.shape[0] == 3 and got.shape[1] <= ids.shape[1] + N_NEW
    np.testing.assert_array_equal(got[:, : ids.shape[1]], ids)

    def forward(seq, lang):
        return np.asarray(model(seq, langs=lang).logits)

    expected = _recompute_greedy(forward, ROWS, LANGS, N_NEW, config.eos_index, config.pad_index)
    np.testing.assert_array_equal(got[:, ids.shape[1] :], expected[:, : got.shape[1] - ids.shape[1]])


@requires_torch
def test_causal_mode_equals_a_pytorch_loop(causal):
    path, torch_model = causal
    model = XLMWithLMHeadModel.from_pretrained(path)
    config = model.config
    ids, mask = _left_padded(ROWS, config.pad_index)
    got = model.generate(ids, max_new_tokens=N_NEW, attention_mask=mask, langs=np.array(LANGS)[:, None] + 0 * ids)

    def forward(seq, lang):
        with torch.no_grad():
            return torch_model(input_ids=torch.tensor(seq), langs=torch.tensor(lang)).logits.numpy()

    expected = _recompute_greedy(forward, ROWS, LANGS, N_NEW, config.eos_index, config.pad_index)
    np.testing.assert_array_equal(got[:, ids.shape[1] :], expected[:, : got.shape[1] - ids.shape[1]])


@pytest.mark.slow
def test_sampling_filters_and_seed(causal):
    import jax

    path, _ = causal
    model = XLMWithLMHeadModel.from_pretrained(path)
    ids = _prompts(2)
    greedy = model.generate(ids, max_new_tokens=N_NEW)
    top1 = model.generate(ids, max_new_tokens=N_NEW, do_sample=True, top_k=1, key=jax.random.key(3))
    np.testing.assert_array_equal(top1, greedy)  # top-k 1 leaves only the greedy token
    nucleus = model.generate(ids, max_new_tokens=N_NEW, do_sample=True, top_p=1e-6, key=jax.random.key(4))
    np.testing.assert_array_equal(nucleus, greedy)  # so does a tiny top-p
    key = jax.random.key(5)
    sampled = model.generate(ids, max_new_tokens=N_NEW, do_sample=True, top_k=3, temperature=2.0, key=key)
    again = model.generate(ids, max_new_tokens=N_NEW, do_sample=True, top_k=3, temperature=2.0, key=key)
    np.testing.assert_array_equal(sampled, again)
    padded = np.full((2, WIDTH), model.config.pad_index)
    padded[:, : sampled.shape[1]] = sampled
    langs = np.full_like(padded, model.config.lang_id)  # generation's default language
    logits = np.asarray(model(padded, langs=langs).logits)  # causal: position t sees the tokens up to t
    for row in range(2):  # every sampled token is among the 3 most likely after its prefix
        for t in range(ids.shape[1], sampled.shape[1]):
            if sampled[row, t] in (model.config.eos_index, model.config.pad_index):
                break
            assert sampled[row, t] in np.argsort(logits[row, t - 1])[-3:]


def test_one_compilation_per_length_bucket(causal):
    path, _ = causal
    model = XLMWithLMHeadModel.from_pretrained(path)
    model.generate(_prompts(2, 3), max_new_tokens=N_NEW)
    before = _generate_kernel._cache_size()
    for length in (2, 4, 5):  # the same bucket (8) as 3
        model.generate(_prompts(2, length), max_new_tokens=N_NEW)
    assert _generate_kernel._cache_size() == before


def test_beam_search_in_causal_mode_returns_a_likely_sequence(causal):
    path, _ = causal
    model = XLMWithLMHeadModel.from_pretrained(path)
    ids = _prompts(1)
    beam = model.generate(ids, max_new_tokens=3, num_beams=4, length_penalty=0.0, early_stopping="never")
    greedy = model.generate(ids, max_new_tokens=3)

    def log_prob(seq):
        padded = np.full((1, WIDTH), model.config.pad_index)
        padded[:, : seq.shape[1]] = seq
        logits = np.asarray(model(padded, langs=np.zeros_like(padded)).logits)[0].astype(np.float64)
        logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        return sum(logp[t - 1, seq[0, t]] for t in range(ids.shape[1], seq.shape[1]))

    assert beam.shape == greedy.shape
    assert log_prob(beam) >= log_prob(greedy) - 1e-5


# ---------------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(mode="beam"), "mode="),
        (dict(max_new_tokens=0), "max_new_tokens"),
        (dict(num_beams=0), "num_beams"),
        (dict(temperature=0.0), "temperature"),
        (dict(top_p=1.5), "top_p"),
        (dict(lang="xx"), "unknown language"),
        (dict(attention_mask=np.array([[1, 1, 0, 0]] * 3)), "padded on the left"),
        (dict(max_new_tokens=10), "max_position_embeddings"),
        (dict(mode="transformers", attention_mask=np.array([[0, 1, 1, 1]] * 3)), "ignores attention_mask"),
    ],
)
def test_bad_input_is_refused(causal, kwargs, message):
    path, _ = causal
    model = XLMWithLMHeadModel.from_pretrained(path)
    kwargs = dict(dict(max_new_tokens=N_NEW), **kwargs)
    with pytest.raises(InputError, match=message):
        model.generate(_prompts(), **kwargs)


# ------------------------------------------------------------------------------------------------ command line


@pytest.fixture(scope="module")
def causal_with_tokenizer(tmp_path_factory):
    path = tmp_path_factory.mktemp("causal-tok")
    vocab = build_test_tokenizer(path, lang2id={"en": 0, "fr": 1, "de": 2}, model_max_length=13)
    build_checkpoint(path, n_langs=3, causal=True, vocab_size=vocab)
    return str(path)


def test_generate_command(causal_with_tokenizer, capsys):
    assert main(["generate", causal_with_tokenizer, "hello world", "--max-new-tokens", "3", "--lang", "en"]) == 0
    printed = capsys.readouterr().out.strip()
    expected = Generator.from_pretrained(causal_with_tokenizer)("hello world", lang="en", max_new_tokens=3)
    assert printed == expected[0]
    assert printed.startswith("hello world")


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--max-new-tokens", "0"], "max_new_tokens"),
        (["--lang", "xx"], "unknown language"),
        (["--sample", "--num-beams", "2"], "--sample with --num-beams"),
        (["--top-p", "0"], "top_p"),
    ],
)
def test_generate_command_bad_input(causal_with_tokenizer, capsys, extra, message):
    assert main(["generate", causal_with_tokenizer, "hello", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err
