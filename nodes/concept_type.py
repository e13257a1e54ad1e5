"""The socket type that carries a `mrti.concept.ConceptSet` between nodes."""
from comfy_api.latest import io

MultiResConcepts = io.Custom("MULTIRES_CONCEPTS")
