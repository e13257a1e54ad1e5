"""ComfyUI glue: V3 node classes and the folders they read. The method itself lives in `mrti/`."""
