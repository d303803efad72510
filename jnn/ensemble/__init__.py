"""Model ensembles as ``jax.vmap``: K members trained by one compiled program.

An ensemble state is a :class:`jnn.train.TrainState` whose every leaf has a leading member
axis ``K``. Members differ by their keys (init, dropout, optionally data order) and by
per-member hyperparameters, which are arrays in the compiled program (a learning-rate sweep
costs the same as K seeds and a new sweep does not recompile)::

    keys = jax.random.split(jax.random.key(0), 8)          # or jax.random.PRNGKey: raw keys
    result = jnn.ensemble.fit(model, loss, jnn.optim.adam, (x, y), epochs=20, batch_size=64,
                              keys=keys, val_data=(xv, yv),
                              hyperparams={"learning_rate": [1e-3] * 4 + [3e-3] * 4})
    probs = jnn.ensemble.predict(model, result.state, x_test, members=result.alive)
    print(jnn.ensemble.evaluate(model, result.state, x_test, y_test, members=result.alive))

``fit`` is ``jnn.train.fit``'s epoch program and loop with the step vmapped over members
(checkpoints, bitwise resume, early stopping, interrupts are the same code); a member that
diverges is frozen and excluded while the others train on.
"""

from jnn.ensemble._evaluate import evaluate, predict
from jnn.ensemble._fit import EnsembleFitResult, fit
from jnn.ensemble._hparams import with_dropout, with_input_noise
from jnn.ensemble._resident import EnsembleCarry
from jnn.ensemble._state import init, member
from jnn.ensemble._step import make_step, member_keys

__all__ = [
    "EnsembleCarry",
    "EnsembleFitResult",
    "evaluate",
    "fit",
    "init",
    "make_step",
    "member",
    "member_keys",
    "predict",
    "with_dropout",
    "with_input_noise",
]
