"""Release: promoting trained weights (ship), the TorchScript export, model-card figures and the demo."""
