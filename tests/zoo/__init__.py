"""A zoo of tiny, random-init, real-architecture models and their training loops.

Reusable outside the tests (benchmarks): ``models`` builds the networks and their
synthetic data, ``loops`` trains them the way their authors' scripts do (nanoGPT-style
loop, Lightning, Hugging Face ``Trainer``), optionally with one realistic bug injected.
Nothing is downloaded; everything fits in a few seconds on one CPU thread.
"""
