"""``jnn train --model FILE.py:FUNCTION`` (or ``package.module:FUNCTION``): a user's model.

``FUNCTION(input_shape, num_classes)`` returns a Flax linen / NNX / Equinox model or a
``jnn.nn`` model (``input_shape`` is one example's shape, channels last: ``(40, 1)`` for
MNIST-1D, ``(8, 8, 1)`` for digits, ``(features,)`` for a flat ``.npz``). The options that
shape the built-in models only are refused with it.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys

__all__ = [
    "BUILTIN_ONLY",
    "absolute_spec",
    "build_user_model",
    "check_user_options",
    "is_user_model",
    "resolve",
    "stored_options",
]

BUILTIN_ONLY = ("widths", "activation", "norm", "dropout", "init", "kernel_size")


def is_user_model(spec) -> bool:
    """Whether ``--model`` names a user's function (``FILE.py:FUNCTION``, ``pkg.mod:FUNCTION``)."""
    return isinstance(spec, str) and ":" in spec


def _parts(spec: str) -> tuple[str, str]:
    where, _, name = spec.rpartition(":")
    if not where or not name.isidentifier():
        raise ValueError(f"--model {spec}: expected FILE.py:FUNCTION or package.module:FUNCTION")
    return where, name


def absolute_spec(spec: str) -> str:
    """A ``FILE.py:FUNCTION`` spec with the file's absolute path (so ``--resume`` imports the
    same file from any folder); a ``package.module:FUNCTION`` spec unchanged."""
    where, name = _parts(spec)
    return f"{os.path.abspath(where)}:{name}" if where.endswith(".py") else spec


def check_user_options(options: dict) -> None:
    """Refuses built-in-only options given with a user model, with the reason."""
    given = [k for k in BUILTIN_ONLY if k in options]
    if given:
        flags = ", ".join("--" + k.replace("_", "-") for k in given)
        raise ValueError(
            f"{flags} shape the built-in mlp/cnn models only; with --model {options['model']} "
            "the architecture (and its dropout) is your function's: set them there"
        )


def stored_options(options: dict) -> dict:
    """A config's stored options without the built-in-only ones when its model is a user's
    (their filled-in defaults are unused, and giving them is refused)."""
    if not is_user_model(options.get("model")):
        return options
    return {k: v for k, v in options.items() if k not in BUILTIN_ONLY}


def _module(where: str, spec: str):
    if where.endswith(".py"):
        if not os.path.isfile(where):
            raise ValueError(f"--model {spec}: no file {where}")
        name = "jnn_user_model_" + os.path.splitext(os.path.basename(where))[0]
        found = importlib.util.spec_from_file_location(name, where)
        module = importlib.util.module_from_spec(found)
        sys.modules[name] = module
        found.loader.exec_module(module)
        return module
    return importlib.import_module(where)


def resolve(spec: str):
    """The function a spec names (its module imported).

    Raises:
      ValueError: one line: no such file / module / function, or the import failed.
    """
    where, name = _parts(spec)
    try:
        module = _module(where, spec)
    except ValueError:
        raise
    except Exception as err:  # noqa: BLE001 - any import failure is the user's file's
        raise ValueError(
            f"--model {spec}: importing {where} failed: {type(err).__name__}: {err}"
        ) from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise ValueError(f"--model {spec}: {where} has no function {name}")
    return fn


def build_user_model(spec: str, input_shape, num_classes: int):
    """``FUNCTION(input_shape, num_classes)`` as a jnn model (``jnn.interop`` wraps a
    foreign one), checked to give ``num_classes`` outputs per example.

    Raises:
      ValueError: one line: the function raised, returned something else, or its outputs
      do not have the shape ``(batch, num_classes)``.
    """
    import jax

    from jnn._foreign import as_model

    fn = resolve(spec)
    shape = tuple(int(d) for d in input_shape)
    try:
        made = fn(shape, int(num_classes))
    except Exception as err:  # noqa: BLE001 - the user's function failed
        raise ValueError(
            f"--model {spec}: {fn.__name__}{shape, num_classes} raised {type(err).__name__}: {err}"
        ) from None
    try:
        model = as_model(made)
    except TypeError:
        raise ValueError(
            f"--model {spec}: {fn.__name__} returned {type(made).__name__}, not a model (a Flax "
            "linen/NNX module, an Equinox module, a constructor of one, or a jnn.nn model)"
        ) from None
    try:
        out = jax.eval_shape(
            lambda k: model.apply(*model.init(k, (2, *shape)), jax.numpy.zeros((2, *shape)))[0],
            jax.random.key(0),
        )
    except Exception as err:  # noqa: BLE001 - the model cannot take the data
        raise ValueError(
            f"--model {spec}: the model fails on inputs of shape (batch, *{shape}): "
            f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        ) from None
    if tuple(out.shape) != (2, int(num_classes)):
        raise ValueError(
            f"--model {spec}: outputs of shape {tuple(out.shape)} for a batch of 2; expected "
            f"(2, {num_classes}), one score per class"
        )
    return model
