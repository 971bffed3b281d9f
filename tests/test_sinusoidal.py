"""The sinusoidal absolute position embedding (minifope/sinusoidal.py): the table, the hook's
backward, the model and the command line. Its whole-model gradients, torch parity and
checkpoints are tested with the other embeddings' (test_model, test_torch_parity, test_train,
test_checkpoint_safety, test_cli_gradcheck)."""

import math

import autograd
import autograd.numpy as anp
import numpy as np
import pytest

from helpers import TEXT, TINY_FLAGS, assert_user_error, batch, cli, tiny_config
from minifope import GPT
from minifope.sinusoidal import Sinusoidal, sinusoidal_table


def test_table_by_hand():
    pe = sinusoidal_table([0, 1, 7], 4)  # w_0 = 1, w_1 = 10000^(-1/2) = 0.01
    np.testing.assert_array_equal(pe[0], [0.0, 1.0, 0.0, 1.0])
    np.testing.assert_allclose(pe[1], [math.sin(1), math.cos(1), math.sin(0.01), math.cos(0.01)], rtol=1e-15)
    np.testing.assert_allclose(pe[2], [math.sin(7), math.cos(7), math.sin(0.07), math.cos(0.07)], rtol=1e-15)


def test_every_row_has_norm_sqrt_c_over_2_and_dot_products_depend_on_the_distance_only():
    C = 32
    pe = sinusoidal_table(np.arange(300), C)
    np.testing.assert_allclose(np.linalg.norm(pe, axis=1), math.sqrt(C / 2), rtol=1e-13)
    gram = pe @ pe.T  # PE[m] . PE[n] = sum_i cos(w_i (m - n))
    np.testing.assert_allclose(gram[10, 3], gram[250, 243], rtol=1e-12)
    np.testing.assert_allclose(gram[10, 3], gram[3, 10], rtol=1e-12)
    assert not np.isclose(gram[10, 3], gram[10, 4])


@pytest.mark.parametrize("d_model", [0, -2, 7])
def test_an_odd_or_empty_width_is_refused(d_model):
    with pytest.raises(ValueError, match="positive even"):
        sinusoidal_table([0, 1], d_model)


def test_embed_backward_matches_autograd():
    config = tiny_config(pe="sinusoidal")
    pe = Sinusoidal(config)
    rng = np.random.default_rng(0)
    x, dout = rng.standard_normal((2, 5, 32)), rng.standard_normal((2, 5, 32))
    positions = 11 + np.arange(5)
    np.testing.assert_allclose(pe.embed(x, positions), math.sqrt(32) * x + sinusoidal_table(positions, 32))
    reference = autograd.grad(lambda x: anp.sum(pe.embed(x, positions) * dout))(x)
    np.testing.assert_allclose(pe.embed_backward(dout), reference, rtol=1e-14)


def test_the_model_reads_position_from_the_stream_not_from_attention():
    model = GPT(tiny_config(pe="sinusoidal"))
    idx, _ = batch(model.config, T=6)
    inputs = model.attention_inputs(idx, 0)
    assert inputs["cos"] is None and model.slopes is None
    np.testing.assert_array_equal(inputs["q_rot"], inputs["q"])  # no rotation
    # but the same tokens later in the sequence are different inputs
    assert not np.allclose(model.forward(idx)[0], model.forward(idx, pos_offset=40)[0])


def test_train_and_sample_with_sinusoidal_through_the_command_line(tmp_path):
    data = tmp_path / "play.txt"
    data.write_text(TEXT)
    run = tmp_path / "run"
    result = cli("train", "--data", data, "--out", run, "--steps", "10", "--pe", "sinusoidal", *TINY_FLAGS)
    assert result.returncode == 0, result.stderr
    result = cli("sample", "--ckpt", run, "--prompt", "KING:", "--chars", "20", "--seed", "1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("KING:") and len(result.stdout.strip()) > len("KING:")


@pytest.mark.parametrize("flag", [["--rope-clip"], ["--rope-scaling", "yarn", "--rope-scale", "4"],
                                  ["--fope-learnable"]])
def test_options_of_other_embeddings_are_refused_with_sinusoidal(tmp_path, flag):
    data = tmp_path / "play.txt"
    data.write_text(TEXT)
    result = cli("train", "--data", data, "--out", tmp_path / "run", "--steps", "5", "--pe", "sinusoidal",
                 *flag, *TINY_FLAGS)
    assert_user_error(result, "not 'sinusoidal'")
    assert not (tmp_path / "run").exists()
