"""Result sinks: stdout, files, MQTT."""
