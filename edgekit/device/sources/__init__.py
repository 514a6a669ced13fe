"""Frame sources: Pi camera, V4L2, streams, video files, image folders."""
