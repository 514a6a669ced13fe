"""Device side: frames -> interpreter -> results. Never imports TensorFlow."""
