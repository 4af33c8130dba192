"""The losses of `xlm_flax.model.losses` against `torch.nn.functional` on random inputs (float32, 1e-5): values,
ignored labels (PyTorch's `ignore_index`), gradients, and the errors bad labels raise."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import TORCH_REASON

from xlm_flax.errors import InputError
from xlm_flax.model.losses import binary_cross_entropy_with_logits, cross_entropy, mean_squared_error
from xlm_flax.tokens import IGNORE_INDEX

torch = pytest.importorskip("torch", reason=TORCH_REASON)  # the reference of every test here
F = torch.nn.functional

TOL = 1e-5


def _logits_and_labels(seed: int, shape: tuple[int, ...], classes: int, ignored: float, ignore_index: int = -100):
    """Random logits `[*shape, classes]` (scale 4) and labels `[*shape]`, a fraction `ignored` of them ignored."""
    rng = np.random.default_rng(seed)
    logits = (4 * rng.normal(size=(*shape, classes))).astype(np.float32)
    labels = rng.integers(0, classes, size=shape)
    labels[rng.random(shape) < ignored] = ignore_index
    return logits, labels


def _torch_cross_entropy(logits: np.ndarray, labels: np.ndarray, **kwargs) -> torch.Tensor:
    classes = logits.shape[-1]
    return F.cross_entropy(
        torch.from_numpy(logits).reshape(-1, classes), torch.from_numpy(labels).reshape(-1), **kwargs
    )


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(
    "shape,classes",
    [((16,), 5), ((3, 9), 41), ((2, 7), 1000)],
    ids=["classes", "mlm", "mlm_big_vocab"],
)
@pytest.mark.parametrize("ignored", [0.0, 0.3, 0.9])
def test_cross_entropy_matches_torch(seed, shape, classes, ignored):
    logits, labels = _logits_and_labels(seed, shape, classes, ignored)
    labels.reshape(-1)[0] = 0  # at least one label counts
    expected = _torch_cross_entropy(logits, labels)
    got = cross_entropy(jnp.asarray(logits), jnp.asarray(labels))
    assert got.dtype == jnp.float32 and got.shape == ()
    assert abs(float(got) - float(expected)) <= TOL


def test_cross_entropy_another_ignore_index():
    """The QA-simple head's loss: positions clamped to `[0, length]` over `length + 1` classes, `length` ignored."""
    length = 9
    logits, labels = _logits_and_labels(7, (12,), length, 0.4, ignore_index=length)
    logits = np.concatenate([logits, np.zeros((12, 1), np.float32)], axis=1)  # length + 1 classes, as positions
    expected = _torch_cross_entropy(logits, labels, ignore_index=length)
    got = cross_entropy(jnp.asarray(logits), jnp.asarray(labels), length)
    assert np.sum(labels == length) > 0
    assert abs(float(got) - float(expected)) <= TOL


def test_cross_entropy_with_every_label_ignored_is_nan_as_in_torch():
    logits, _ = _logits_and_labels(1, (6,), 4, 0.0)
    labels = np.full((6,), IGNORE_INDEX)
    assert torch.isnan(_torch_cross_entropy(logits, labels))
    assert np.isnan(float(cross_entropy(jnp.asarray(logits), jnp.asarray(labels))))


@pytest.mark.parametrize("seed", range(3))
def test_cross_entropy_gradient_matches_torch(seed):
    """Ignored labels get no gradient; the others the softmax's, divided by the number of labels that count."""
    logits, labels = _logits_and_labels(seed, (4, 6), 11, 0.5)
    labels[0, 0] = 3
    reference = torch.from_numpy(logits).requires_grad_()
    F.cross_entropy(reference.reshape(-1, 11), torch.from_numpy(labels).reshape(-1)).backward()
    grad = jax.grad(lambda x: cross_entropy(x, jnp.asarray(labels)))(jnp.asarray(logits))
    assert np.max(np.abs(np.asarray(grad) - reference.grad.numpy())) <= TOL
    assert np.all(np.asarray(grad)[labels == IGNORE_INDEX] == 0)


def test_cross_entropy_of_bfloat16_logits_is_float32():
    logits, labels = _logits_and_labels(2, (8,), 6, 0.2)
    labels[0] = 1
    low = jnp.asarray(logits, jnp.bfloat16)
    got = cross_entropy(low, jnp.asarray(labels))
    expected = _torch_cross_entropy(np.array(low.astype(jnp.float32)), labels)
    assert got.dtype == jnp.float32
    assert abs(float(got) - float(expected)) <= TOL


def test_cross_entropy_refuses_bad_labels():
    logits = jnp.zeros((4, 3))
    with pytest.raises(InputError, match="integer"):
        cross_entropy(logits, jnp.zeros((4,), jnp.float32))
    with pytest.raises(InputError, match=r"\(4,\)"):
        cross_entropy(logits, jnp.zeros((4, 1), jnp.int32))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("shape", [(7,), (5, 4)])
def test_binary_cross_entropy_matches_torch(seed, shape):
    rng = np.random.default_rng(seed)
    logits = (6 * rng.normal(size=shape)).astype(np.float32)
    logits.reshape(-1)[:2] = [60.0, -60.0]  # far in the tails, where a naive log(sigmoid) overflows
    targets = rng.random(shape).astype(np.float32)  # soft targets, as well as 0/1:
    targets.reshape(-1)[2:4] = [0.0, 1.0]
    expected = F.binary_cross_entropy_with_logits(torch.from_numpy(logits), torch.from_numpy(targets))
    got = binary_cross_entropy_with_logits(jnp.asarray(logits), jnp.asarray(targets))
    assert got.dtype == jnp.float32
    assert abs(float(got) - float(expected)) <= TOL


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("shape", [(7,), (5, 4)])
def test_mean_squared_error_matches_torch(seed, shape):
    rng = np.random.default_rng(seed)
    predictions, targets = (rng.normal(size=(2, *shape))).astype(np.float32)
    expected = F.mse_loss(torch.from_numpy(predictions), torch.from_numpy(targets))
    got = mean_squared_error(jnp.asarray(predictions), jnp.asarray(targets))
    assert got.dtype == jnp.float32
    assert abs(float(got) - float(expected)) <= TOL


@pytest.mark.parametrize("loss", [binary_cross_entropy_with_logits, mean_squared_error], ids=lambda f: f.__name__)
def test_losses_refuse_labels_of_another_shape(loss):
    with pytest.raises(InputError, match=r"\(3, 2\)"):
        loss(jnp.zeros((3, 2)), jnp.zeros((3,)))


def test_losses_work_under_jit():
    logits, labels = _logits_and_labels(5, (3, 4), 7, 0.3)
    labels[0, 0] = 2
    jitted = jax.jit(cross_entropy, static_argnums=2)
    assert abs(float(jitted(logits, labels, IGNORE_INDEX)) - float(_torch_cross_entropy(logits, labels))) <= TOL
