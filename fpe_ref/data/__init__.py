"""Datasets: the Boolean DNF generator (Alg. A2), FashionMNIST IDX files, and CLIP embedding files."""
