"""Apache Beam pipelines of medgan-tf, each runnable on its own: `python -m pipelines.convert`."""
