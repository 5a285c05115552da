"""Training: LightningModule, losses and metrics (installed as ``equimol.train``)."""
