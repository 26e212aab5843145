"""DoubleU-Net and its parts: the network, its VGG19 encoder, weight files, the Keras weight mapping."""
