"""The suite: one Pyro program per file (installed as ``ppl_vae.models``).

``ppl_vae.registry`` finds a model by its file name (``tanh_ae.py`` is ``tanh-ae``), so
adding a model is adding a file here: a class with ``model(x)`` and ``guide(x)`` (or
``(x, y)``), the math in the module docstring, the optimum explained, a closed-form or
library oracle beside it where one exists, a doctest, and under about 120 lines; an
optional ``train_defaults = {...}`` on the class recommends training settings the user's
flags override, and ``label_predictor = "method"`` declares the method that predicts a
label from x (``test_accuracy``; never guessed from a name). The building blocks they
share live in ``blocks/``.
"""
