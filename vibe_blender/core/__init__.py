"""Pure-Python + numpy core of the add-on: file formats, SMPL maths, the HTTP client.

Nothing in this package imports ``bpy`` (or torch): it ships inside the Blender extension and is
also imported by the inference server, so that each format is written once.
"""
