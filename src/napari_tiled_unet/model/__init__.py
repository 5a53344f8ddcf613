"""The U-Net, its geometry and model files."""
