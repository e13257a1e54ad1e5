"""A small procedural world and an SD1-family model trained on it: the demo and test model of this pack.

`world` draws the pictures and captions, `reader` reads attributes back out of any picture, `model` makes
the host recognise the checkpoint, `concepts` learns and reads its held-out objects through the pack's nodes.
The one command that trains the model is `dev.toybuild.build`.
"""
