"""The gradient checker: compare a hand-written backward with autograd, tensor by tensor.

    ok = check_backward(rmsnorm_forward, rmsnorm_backward, reference.rmsnorm, dict(x=x, g=g))

prints one row per input tensor, in the manner of makemore's cmp():

    tensor        shape        max |diff|    rel error   status
    x             (2, 3, 8)      2.2e-16      1.1e-16   ok
    g             (8,)           1.3e-01      4.0e-01   FAIL

and returns True only if every tensor is within `tol`. The relative error of a tensor is
max|mine - ref| / max|ref| (with max|ref| = 0 it is the absolute difference), so a row of
exact zeros cannot hide a wrong tensor.
"""

import autograd
import autograd.numpy as anp
import numpy as np


def _widen(mine, ref):
    # float64, or complex128 when either side is complex (a cast to float would drop the
    # imaginary part without a word)
    dtype = np.complex128 if np.iscomplexobj(mine) or np.iscomplexobj(ref) else np.float64
    return np.asarray(mine, dtype=dtype), np.asarray(ref, dtype=dtype)


def relative_error(mine, ref):
    """max|mine - ref| / max|ref| (max|mine - ref| when ref is all zeros)."""
    mine, ref = _widen(mine, ref)
    diff = float(np.max(np.abs(mine - ref))) if ref.size else 0.0
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    return diff / scale if scale > 0 else diff


def cmp(name, mine, ref, tol=1e-8, verbose=True):
    """Compare one tensor with its reference; print a row; return True if within tol."""
    mine, ref = np.asarray(mine), np.asarray(ref)
    if mine.shape != ref.shape:
        if verbose:
            print(f"{name:<28} FAIL: shape {mine.shape}, expected {ref.shape}")
        return False
    diff = float(np.max(np.abs(np.subtract(*_widen(mine, ref))))) if ref.size else 0.0
    rel = relative_error(mine, ref)
    ok = bool(np.isfinite(rel) and rel <= tol)
    if verbose:
        print(f"{name:<28} {str(mine.shape):<16} {diff:12.3e} {rel:12.3e}   {'ok' if ok else 'FAIL'}")
    return ok


def check_gradients(mine, ref, tol=1e-8, verbose=True):
    """Compare two dicts name -> gradient; print the table; True if every tensor passes.

    A name present in only one of the two dicts is a failure.
    """
    if verbose:
        print(f"{'tensor':<28} {'shape':<16} {'max |diff|':>12} {'rel error':>12}   status")
    ok = True
    for name in ref:
        if name not in mine:
            if verbose:
                print(f"{name:<28} FAIL: missing from the hand-written gradients")
            ok = False
            continue
        ok &= cmp(name, mine[name], ref[name], tol, verbose)
    for name in mine:
        if name not in ref:
            if verbose:
                print(f"{name:<28} FAIL: no reference gradient")
            ok = False
    if verbose:
        print("all ok" if ok else "some gradients FAIL")
    return ok


def autograd_gradients(reference, inputs, dout):
    """Gradients of sum(reference(**inputs) * dout) with respect to every float input."""
    names = differentiable_names(inputs)

    def scalar(values):
        return anp.sum(reference(**{**inputs, **values}) * dout)

    return autograd.grad(scalar)({n: inputs[n] for n in names})


def differentiable_names(inputs):
    return [n for n, v in inputs.items()
            if isinstance(v, np.ndarray) and np.issubdtype(v.dtype, np.floating)]


def check_backward(forward, backward, reference, inputs, tol=1e-8, seed=0, verbose=True):
    """Check a forward/backward pair against autograd on the same inputs.

    forward(**inputs) -> (out, cache);  backward(dout, cache) -> the gradients of the float
    inputs, in the order `inputs` lists them;  reference(**inputs) -> out, written with
    autograd.numpy. A random upstream gradient dout (fixed by seed) is pulled back through
    both; prints the table and returns True if every gradient is within tol.
    """
    out, cache = forward(**inputs)
    dout = np.random.default_rng(seed).standard_normal(np.shape(out))
    if np.ndim(out) == 0:
        dout = float(dout)
    names = differentiable_names(inputs)
    mine = dict(zip(names, backward(dout, cache)))
    ref = autograd_gradients(reference, inputs, dout)
    return check_gradients(mine, ref, tol, verbose)


def numerical_gradient(f, x, index, eps=1e-6):
    """Central difference (f(x + eps e_i) - f(x - eps e_i)) / (2 eps) at x[index]; x is restored."""
    saved = x[index]
    x[index] = saved + eps
    plus = f()
    x[index] = saved - eps
    minus = f()
    x[index] = saved
    return (plus - minus) / (2 * eps)


def check_model(config, batch_size=2, seq_len=9, pos_offset=3, seed=0, tol=1e-8, verbose=True):
    """Check every parameter gradient of GPT(config) against autograd of reference.gpt_loss.

    Uses a random batch (fixed by seed) whose first target is ignored (-1). Returns
    (ok, largest relative error over all tensors). config.dtype should be 'float64'.
    """
    from . import reference
    from .model import GPT

    model = GPT(config)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, config.vocab_size, (batch_size, seq_len))
    targets = rng.integers(0, config.vocab_size, (batch_size, seq_len))
    targets[0, 0] = -1
    model.forward(idx, targets, pos_offset)
    model.backward()
    ref = autograd.grad(reference.gpt_loss)(model.params, model.buffers, config, idx, targets,
                                            pos_offset)
    ok = check_gradients(model.grads, ref, tol, verbose)
    worst = max(relative_error(model.grads[n], ref[n]) for n in ref)
    return ok, worst
