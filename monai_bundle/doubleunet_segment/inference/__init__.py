"""Inference: the predictor, the slice inferer, precision/backend choice, batching, the batch runner, the
persistent worker and the event protocol it speaks."""
