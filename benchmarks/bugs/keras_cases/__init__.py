"""Keras 3 (TensorFlow backend) cases. Modules import keras only inside ``run``, so the
registry loads without keras installed."""
