"""Plots, the interactive comparison widget, the TensorBoard projector export."""
