"""Metric maths, kept apart from sampling and feature extraction so each can be checked alone."""
