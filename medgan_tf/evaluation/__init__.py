"""Evaluation: scoring with the metric table, reports, figures, and datasets to score on.

    scoring   — `evaluate_slices`, `EvaluationResult` (per slice, per patient, summary)
    datasets  — `evaluate_dataset`: a model on a converted dataset split
    reports   — `write_report` (metrics.json/.md like the paper's Table II, figure)
    tables    — every Markdown summary table (records, volumes, slice consistency), one cell formatter
    figures   — slice figures and multi-method comparisons (paper Figs. 4/5)
    protocols — the protocol registry: the field's volume protocols (SynthRAD2023/2025, low-dose
                PET), the paper's (records, and volumes slice by slice), and a body mask
    cases     — the evaluation CSV and one patient's volumes on the target's grid
    volumes   — `evaluate_volumes`: model / prediction, input and baselines scored by a protocol
    baselines — `fit_baselines`: input, Gaussian, non-local means, intensity map
    volume_reports — metrics.json, per_patient.csv, metrics.md and the volume figures
"""
