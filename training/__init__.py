"""Training for digitsum: the model, the data on the device, the trainer and the exporter."""
