"""Host side: MobileNet to full-int8 TFLite. The only package that imports TensorFlow."""
