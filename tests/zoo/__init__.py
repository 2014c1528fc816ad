"""A zoo of tiny, random-init, real-architecture models and their training loops.

Reusable outside the tests (benchmarks): ``models`` builds the networks and their
synthetic data, ``loops`` trains them the way their authors' scripts do (nanoGPT-style
loop, Lightning, Hugging Face ``Trainer``), optionally with one realistic bug injected.
Nothing is downloaded; every run takes a few seconds on one CPU thread.

Example (with ``tests/`` on ``sys.path``)::

    from zoo import loops, models

    data = models.markov_tokens(512, 33, vocab=64)
    run = loops.train_nanogpt(models.GPT(models.GPTConfig()), data, steps=42, pad=4)
    print(run.monitor.findings)  # nonfinite at step 0: the fully masked attention row
"""
