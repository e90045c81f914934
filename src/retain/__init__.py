"""retain: measure what a fine-tune makes a model forget, and keep it.

The Python API that the ``retain`` command line wraps:

    retain.evaluate(model, tokenizer, probes)   score a model on probes
    retain.run(config)                          one fine-tuning run, measured before/after
"""

from __future__ import annotations

from retain.version import __version__


def __getattr__(name: str):
    # Lazy: `import retain` stays cheap (no torch import) until the API is used.
    if name == "evaluate":
        from retain.probes import evaluate

        return evaluate
    if name == "run":
        from retain.run import run

        # Importing the submodule bound `retain.run` to the module; bind the function instead.
        globals()["run"] = run
        return run
    raise AttributeError(name)
