"""Runs cells: resolve a composed config into one cell, sequence it, evaluate, track, plan whole tables."""
