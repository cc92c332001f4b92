"""The live model set: what is served, and every transition between versions."""
