import pytest


@pytest.fixture(scope="session")
def host_package(comfy_base, tiny_checkpoints):
    """This package loaded into the in-process host the way ComfyUI loads it from custom_nodes."""
    from harness import host

    return host.load_package(comfy_base, tiny_checkpoints)


@pytest.fixture(scope="session")
def concept_folder(comfy_base, host_package):
    import folder_paths

    return folder_paths.get_folder_paths("multires_embeddings")[0]
