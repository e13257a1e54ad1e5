"""The trainer on ComfyUI: the node (`node`), the host side of a run (`host`: models, latents, progress,
Cancel), the loss on the host's models (`objective`), where runs read and write (`folders`), the temporary
patches that let gradients reach the prompt (`patches`) and the VAE memory check (`vae_memory`). The run
itself is `mrti.training.run`."""
