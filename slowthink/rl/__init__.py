"""Reinforcement learning: pure loss/advantage math in ``losses`` and one trainer module per algorithm."""
