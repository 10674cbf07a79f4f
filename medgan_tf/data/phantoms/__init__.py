"""Procedural anatomical phantoms and the imaging physics that turns them into PET, CT and MR
volumes: `tissues` (labels and per-tissue values), `geometry` (grids, poses, warps), `head`,
`body` (trunk) and `physics` (PET projection/Poisson/FBP, MR k-space motion and bias field)."""
