"""What the pack's developers run and its users never do, kept out of the registry archive: the test
harness and dev server (`harness`), the benchmarks (`bench`), the toy world (`toyworld`: its pictures,
reader, model config, committed model and demo concepts) and the toy world's builder (`toybuild`).

The parts import each other in one direction only: `toyworld` imports nothing here, `harness` imports
`toyworld`, and `bench` and `toybuild` import both.
"""
