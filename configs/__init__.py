"""Named model sizes and training presets."""
