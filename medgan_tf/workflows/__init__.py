"""Workflows: whole trips through the library, each a function the command line calls.

    builtin     — the built-in synthetic dataset of each task (synthesized, converted, cached)
    demo        — synth → convert → train → export → translate → evaluate → a report folder
    reproduce   — the paper's comparisons: every variant under one budget, scored alike
    comparison  — the comparison's tables and figures (paper Tables I/II, Figs. 4–6)
    bench       — the performance figures, measured in one run (timing: the helpers)
"""
