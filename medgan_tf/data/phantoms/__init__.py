"""Procedural anatomical phantoms and the imaging physics that turns them into PET, CT and MR
volumes: `tissues` (labels and per-tissue values), `geometry` (grids, poses, warps), `head`,
`body` (trunk) and `physics` (PET projection/Poisson/FBP, MR k-space motion and bias field);
`ct_physics` (transmission CT: attenuation, photon counts, scatter, truncation, FBP to HU) and
`simulations` (the pairs of mr_ct, cbct_ct and ct_denoise)."""
