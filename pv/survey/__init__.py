"""The Perception Visualization user study: build the material, check it, serve it, export and analyze the answers.

`pv survey build|check|serve|export|analyze` (see survey/README.md). Uses pv's public API only.
"""
