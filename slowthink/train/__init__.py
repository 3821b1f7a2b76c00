"""Training: the run folder and the loop every trainer shares, optimizers, and supervised fine-tuning. The RL
algorithms are in ``slowthink.rl``."""
