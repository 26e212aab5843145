"""Training: ignite handlers (checkpoints, resume, epoch log), losses, distributed training, evaluation."""
