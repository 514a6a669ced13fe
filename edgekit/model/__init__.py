"""What a converted model is, shared by both halves: manifest, preprocessing, .tflite reading, Edge TPU rules."""
