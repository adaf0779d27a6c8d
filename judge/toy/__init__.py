"""The toy world and its tiny trained models (VLM, CLIP, OWLv2) for tests and demos."""
