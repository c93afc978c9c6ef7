"""The Perception Visualization user study: build the material, serve it, export and analyze the answers.

`pv survey build|serve|export|analyze` (see survey/README.md).
"""
