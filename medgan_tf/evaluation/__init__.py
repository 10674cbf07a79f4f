"""Evaluation: scoring with the metric table, reports, figures, and datasets to score on.

    scoring   — `evaluate_slices`, `EvaluationResult` (per slice, per patient, summary)
    datasets  — `evaluate_dataset`: a model on a converted dataset split
    reports   — Markdown tables (paper Tables I/II), `write_report` (metrics.json/.md, figure)
    figures   — slice figures and multi-method comparisons (paper Figs. 4/5)
    protocols — the field's volume protocols (SynthRAD2023/2025, low-dose PET) and a body mask
"""
