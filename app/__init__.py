"""digitsum's HTTP service: POST an image and a number, get the digit and the network's sum."""
